"""Regression tests for the defects fuzzing found: each is named after the input that showed it.

``crash_<sha1 prefix>`` tests are inputs atheris wrote out (the file is in the target's corpus
as ``regression-crash-<prefix>``, so every fuzzing run starts from it too); the others are the
same kinds of defect found while writing the harnesses (a parser recursing on input depth, a
length field taken on trust), checked here with the smallest input that showed them. Each
asserts the parser's documented, typed error, and that the error names the problem.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from actors.flashrunner.protocol import RequestParser
from actors.flux.commands import parse_json_object
from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import DatagramError, parse_touch_response
from actors.fluxfamily.manage_protocol import parse_answer, uuid_from_certificate
from actors.remotelab.protocol import (
    ApiError,
    HttpRequest,
    HttpResponse,
    InstanceConnection,
    parse_deployments,
    parse_instances,
    parse_list,
    parse_wtypes,
)
from actors.telemetry.codec import decode_upload
from actors.telemetry.ingest_server import HttpProblem, body_length, json_object, upload_document
from bus.config import load, loads
from bus.errors import ConfigError
from tests.fuzz.targets._split import keys

CORPUS = Path(__file__).resolve().parent / "corpus"
#: Deeper than the json and tomllib parsers recurse (the interpreter's limit is 1000 frames).
DEEP = 1100
REQUEST = HttpRequest("GET", "/x", operation="op")


def crash(target: str, prefix: str) -> bytes:
    return (CORPUS / target / f"regression-crash-{prefix}").read_bytes()


# --- inputs atheris wrote out ------------------------------------------------------------------


def test_crash_66ca37c1_touch_response_with_a_key_of_unknown_type() -> None:
    """A touch response whose slave key DER names an algorithm cryptography does not know:
    ``UnsupportedAlgorithm`` escaped ``crypto.load_public_key``."""
    data = crash("discovery_datagram", "66ca37c1")
    with pytest.raises(DatagramError, match="bad key in touch: not an RSA public key"):
        parse_touch_response(data, crypto.public_der(keys()[2]))


def test_crash_bfad7a8d_certificate_of_an_invalid_x509_version() -> None:
    """cryptography's ``InvalidVersion`` is not a ValueError: it escaped
    ``uuid_from_certificate``."""
    data = crash("manage_protocol", "bfad7a8d")[1:]  # the target's first byte picks the parser
    with pytest.raises(ValueError, match=r"not an X\.509 certificate"):
        uuid_from_certificate(data)


def test_crash_46399c03_instances_that_are_not_a_list() -> None:
    """``{"workspace_instances": 1}``: a TypeError iterating an int."""
    data = crash("remotelab", "46399c03")
    response = HttpResponse(int.from_bytes(data[:2], "big"), data[2:])
    with pytest.raises(ApiError, match="'workspace_instances' is not a list"):
        parse_instances(REQUEST, response)


def test_crash_56c579d2_upload_whose_messages_are_a_string() -> None:
    """``"messages": "g"``: an AttributeError (a str has no ``get``) answered as a 500."""
    data = crash("telemetry_codec", "56c579d2")[1:]
    with pytest.raises(ValueError, match="'messages' must be a list"):
        decode_upload(data)


# --- the same kinds of defect, found alongside -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"workspace_types": 3}', "'workspace_types' is not a list"),
        (b'{"workspace_deployments": 3}', "'workspace_deployments' is not a list"),
        (b'{"workspace_deployments": [[1]], "info": {}}', "no info for deployment [1]"),
        (
            b'{"workspace_deployments": ["a"], "info": {"a": {"queuelen": "many"}}}',
            "has queuelen 'many', not a number",
        ),
        (
            b'{"workspace_deployments": ["a"], "info": {"a": {"queuelen": 1e999}}}',
            "has queuelen 'inf', not a number",
        ),
    ],
)
def test_remotelab_answer_fields_of_the_wrong_type(body: bytes, words: str) -> None:
    response = HttpResponse(200, body)
    with pytest.raises(ApiError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse = parse_wtypes if b"types" in body else parse_deployments
        parse(REQUEST, response)


def test_remotelab_answer_nested_too_deep_is_not_json() -> None:
    response = HttpResponse(200, b"[" * DEEP)
    with pytest.raises(ApiError, match="not a JSON object"):
        parse_list("rules")(REQUEST, response)


def test_remotelab_port_of_non_ascii_digits_is_no_connection() -> None:
    """``"²".isdigit()`` is true but ``int("²")`` fails: the port is not published yet."""
    info = {"fwd": {"ipv4": "127.0.0.1", "port": "²"}, "hostkeys": ["ssh-ed25519 AAAA"]}
    assert InstanceConnection.from_info(info) is None


def test_flux_reply_nested_too_deep() -> None:
    with pytest.raises(ValueError, match="nested too deep"):
        parse_json_object("[" * DEEP)


def test_manage_data_answer_nested_too_deep_is_kept_raw() -> None:
    answer = parse_answer("data " + "[" * DEEP)
    assert (answer.kind, answer.data) == ("data", {"raw": "[" * DEEP})


def test_flashrunner_thousands_of_blank_lines_then_a_command() -> None:
    """Each line without ``#`` recursed once: 3000 blank lines overflowed the stack."""
    assert [r.name for r in RequestParser().feed(b"\n" * 3000 + b"#CMD\n")] == ["CMD"]


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ("[" * DEEP, "nested too deep"),
        ("[1]", "a JSON list, not an object"),
        ('{"messages": [], "stream": "s"}', "no 'stream_group'"),
        ('{"messages": [1], "stream_group": "g", "stream": "s"}', "message 0 is not an object"),
        ('{"messages": [{"seq": 1e999}], "stream_group": "g", "stream": "s"}', "'seq' must be"),
        ('{"messages": [{"seq": 1, "payload": 5}], "stream_group": "g", "stream": "s"}', "base64"),
        (
            '{"messages": [{"seq": 1, "payload": "é"}], "stream_group": "g", "stream": "s"}',
            "payload",
        ),
    ],
)
def test_upload_document_malformed(document: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        decode_upload(document.encode())


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("-1", 400),
        ("ten", 400),
        ("\u0661\u0660", 400),
        ("1e3", 400),
        (str(64 * 1024 * 1024 + 1), 413),
    ],
)
def test_ingest_content_length_not_a_byte_count(value: str, status: int) -> None:
    """A negative length made the server read until the client closed; text was a 500."""
    with pytest.raises(HttpProblem) as caught:
        body_length(value)
    assert caught.value.status == status


def test_ingest_content_length_accepted() -> None:
    assert [body_length(v) for v in (None, "", " 12 ", "0")] == [0, 0, 12, 0]


def test_ingest_bodies_nested_too_deep_are_400() -> None:
    for parse in (json_object, lambda body: upload_document(zlib.compress(body), "deflate")):
        with pytest.raises(HttpProblem) as caught:
            parse(b"[" * DEEP)
        assert caught.value.status == 400


def test_config_nested_too_deep() -> None:
    with pytest.raises(ConfigError, match="nested too deep"):
        loads("a = " + "[" * DEEP)


def test_config_file_not_utf8(tmp_path: Path) -> None:
    """``read_text`` raised UnicodeDecodeError, not ConfigError, for a file of another encoding."""
    path = tmp_path / "line.toml"
    path.write_bytes(b"[broker]\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"line.toml: not UTF-8 text \(invalid"):
        load(path)


def test_upload_document_still_reads_what_the_forwarder_sends() -> None:
    """The stricter checks accept the documented shape (docs/INGEST_PROTOCOL.md)."""
    body = json.dumps(
        {"stream_group": "g", "stream": "s", "messages": [{"seq": 3, "payload": "aGk="}]}
    ).encode()
    assert decode_upload(body)["messages"][0]["payload"] == b"hi"
