"""Logging set-up (bus.logs): secrets never reach a log line, in JSON or console output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from bus.logs import REDACTED, configure_logging


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """Each test configures structlog globally; put the defaults back afterwards."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def json_log() -> Callable[..., dict[str, Any]]:
    """Log one info line through linebus's JSON configuration and return it parsed."""

    def emit(event: str = "something_happened", **fields: Any) -> dict[str, Any]:
        out = io.StringIO()
        configure_logging(json=True, level="debug", stream=out)
        structlog.get_logger().info(event, **fields)
        (line,) = out.getvalue().splitlines()
        return json.loads(line)  # type: ignore[no-any-return]

    return emit


class TestRedaction:
    @pytest.mark.parametrize(
        "key",
        [
            "password",
            "token",
            "api_token",
            "provisioning_token",
            "device_token",
            "db_password",
            "client_secret",
            "secret",
            "private_key",
            "authorization",
            "Password",
            "ACCESS_TOKEN",
        ],
    )
    def test_secret_field_is_redacted(
        self, json_log: Callable[..., dict[str, Any]], key: str
    ) -> None:
        """A field named like a secret (exact names, *_token, *_password, *_secret, any case) is ***."""
        line = json_log(**{key: "hunter2"})
        assert line[key] == REDACTED
        assert "hunter2" not in json.dumps(line)

    def test_other_fields_are_kept(self, json_log: Callable[..., dict[str, Any]]) -> None:
        """Fields that are not secrets, and the event name, pass unchanged."""
        line = json_log("actor_up", service="fr1", tokens_used=3, user="op", password="p")
        assert (
            line["event"],
            line["service"],
            line["tokens_used"],
            line["user"],
            line["level"],
        ) == ("actor_up", "fr1", 3, "op", "info")

    def test_secret_inside_a_dict_field(self, json_log: Callable[..., dict[str, Any]]) -> None:
        """A secret-named key inside a dict-valued field is redacted; its siblings are kept."""
        line = json_log(request={"user": "op", "password": "hunter2", "api_token": "t0k"})
        assert line["request"] == {"user": "op", "password": REDACTED, "api_token": REDACTED}

    def test_callers_dict_is_not_modified(self, json_log: Callable[..., dict[str, Any]]) -> None:
        """Redaction works on a copy: the dict the caller logged still holds its values."""
        request = {"user": "op", "token": "t0k"}
        json_log(request=request)
        assert request == {"user": "op", "token": "t0k"}

    def test_bound_secret_is_redacted(self) -> None:
        """A secret bound to a logger earlier is redacted in every line it logs."""
        out = io.StringIO()
        configure_logging(json=True, stream=out)
        structlog.get_logger().bind(registration_token="r3g").info("registered")
        assert json.loads(out.getvalue())["registration_token"] == REDACTED

    def test_console_output_is_redacted_too(self) -> None:
        """The console renderer (terminals) gets the redacted values as well."""
        out = io.StringIO()
        configure_logging(json=False, stream=out)
        structlog.get_logger().info("login", user="op", password="hunter2")
        text = out.getvalue()
        assert "login" in text and "op" in text
        assert "hunter2" not in text

    @pytest.mark.parametrize(
        "fields",
        [
            {"request": {"headers": {"authorization": "Bearer hunter2"}}},
            {"accounts": [{"user": "op", "password": "hunter2"}]},
        ],
        ids=["two levels deep", "in a list"],
    )
    def test_secret_nested_deeper(
        self, json_log: Callable[..., dict[str, Any]], fields: dict[str, Any]
    ) -> None:
        """A secret nested deeper than one dict level is redacted as well."""
        assert "hunter2" not in json.dumps(json_log(**fields))


class TestConfiguration:
    def test_json_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """LINEBUS_LOG_JSON=1 selects JSON lines when no choice is passed."""
        monkeypatch.setenv("LINEBUS_LOG_JSON", "1")
        out = io.StringIO()
        configure_logging(stream=out)
        structlog.get_logger().info("hello", n=1)
        line = json.loads(out.getvalue())
        assert (line["event"], line["n"], line["level"]) == ("hello", 1, "info")
        assert "timestamp" in line

    def test_level_filters(self) -> None:
        """Lines below the configured level are not written."""
        out = io.StringIO()
        configure_logging(json=True, level="warning", stream=out)
        log = structlog.get_logger()
        log.info("quiet")
        log.warning("loud")
        assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


class TestLibraryLogging:
    """Records of the standard ``logging`` module (paramiko, paho-mqtt, urllib3...)."""

    def test_rendered_as_linebus_lines_with_the_logger_name(self) -> None:
        """A library's warning is a JSON line like linebus's own, naming its logger: not a
        bare line in the middle of a JSON log."""
        out = io.StringIO()
        configure_logging(json=True, stream=out)
        logging.getLogger("paramiko.transport").warning("Socket exception: %s", "timed out")
        line = json.loads(out.getvalue())
        assert line["event"] == "Socket exception: timed out"
        assert (line["logger"], line["level"]) == ("paramiko.transport", "warning")
        assert "timestamp" in line

    def test_their_info_only_at_debug(self) -> None:
        """Below WARNING a library's records are chatter: written only when the level is debug."""
        out = io.StringIO()
        configure_logging(json=True, level="info", stream=out)
        logging.getLogger("somelib").info("connected")
        assert out.getvalue() == ""
        configure_logging(json=True, level="debug", stream=out)
        logging.getLogger("somelib").info("connected")
        assert json.loads(out.getvalue())["event"] == "connected"

    def test_configured_again_one_handler(self) -> None:
        """Configuring again replaces linebus's handler: each record is written once, to the
        latest stream, at the latest level."""
        first, second = io.StringIO(), io.StringIO()
        configure_logging(json=True, stream=first)
        configure_logging(json=True, level="error", stream=second)
        logging.getLogger("somelib").warning("not at error level")
        logging.getLogger("somelib").error("once")
        assert first.getvalue() == ""
        assert [json.loads(x)["event"] for x in second.getvalue().splitlines()] == ["once"]

    def test_extra_fields_kept_and_secrets_redacted(self) -> None:
        """A record's ``extra`` fields are fields of its line, redacted as linebus's own."""
        out = io.StringIO()
        configure_logging(json=True, stream=out)
        logging.getLogger("somelib").warning("login", extra={"user": "ops", "password": "x1"})
        line = json.loads(out.getvalue())
        assert (line["user"], line["password"]) == ("ops", REDACTED)


def test_default_stream_is_stderr_at_each_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines go to ``sys.stderr`` as it is when they are written: a stream that replaced it
    later gets them, and the one it replaced (closed since, as a test runner closes its
    captures) is never written to."""
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging(json=True)
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    structlog.get_logger().info("after_the_swap")
    assert json.loads(second.getvalue())["event"] == "after_the_swap"
