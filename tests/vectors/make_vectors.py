"""Regenerate the golden wire vectors of protocol v1 (``tests/vectors/*.json``).

    .venv/bin/python tests/vectors/make_vectors.py

The frames are built here straight from the layouts in docs/PROTOCOL.md with plain ``msgpack``,
not with ``bus.protocol``, so the stored bytes are an independent statement of the contract;
tests/unit/test_vectors.py then checks the codec against the stored files (it never regenerates
them). As a guard, this script also refuses to write a valid vector that ``bus.protocol`` would
encode differently: if they disagree, fix whichever one disagrees with the document.

Each file is one case::

    {"name": ..., "description": ..., "channel": "command" | "event",
     "frames_hex": ["<frame 0 hex>", ...],          # command: header frame then bulk frames
     "decoded": {...} | null,                       # null for invalid vectors
     "decode_only": false,                          # true: valid input an encoder never produces
     "error": null | {"code": "bad_request", "stage": "decode" | "value"}}

In ``decoded``, bytes are written ``{"hex": "..."}``; ``header`` (``body`` for events) is the
msgpack array exactly as it is on the wire, and the other keys are its named fields, with
``args``/``data``/``result`` already unpacked from their ``bin`` and bulk references resolved.
Floats in the vectors are float64 and never integral (``2.5``, not ``2.0``), so they survive a
JSON parser that does not tell ints from floats; ``epoch`` is a random 53-bit integer (exact in a
JavaScript number, packed as uint64).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

VERSION = 1
KINDS = {
    "request": 1,
    "progress": 2,
    "reply": 3,
    "error": 4,
    "cancel": 5,
    "ready": 6,
    "heartbeat": 7,
    "disconnect": 8,
    "event": 9,
    "hello": 10,
}
BULK_EXT = 1

MSG_ID = "3f2a9c1b7d4e-1"
EPOCH = 0x1A_2B3C_4D5E_6F70  # 53-bit, as protocol.new_epoch() draws them (exact in a JS double)
TS = 1767225600.25  # 2026-01-01T00:00:00.25Z
TS_NO_ZERO = 1767225600.1  # float64 41da556e40066666: no 00 byte (invalid_event_no_nul)


def pack(value: Any) -> bytes:
    """Canonical msgpack as linebus writes it: smallest ints, float64, str8+, bin types."""
    return msgpack.packb(value, use_bin_type=True)


def ref(index: int) -> msgpack.ExtType:
    """A bulk-frame reference: ext type 1, 4-byte big-endian 1-based frame index."""
    return msgpack.ExtType(BULK_EXT, index.to_bytes(4, "big"))


def jsonable(value: Any) -> Any:
    """Bytes as {"hex": ...}; tuples as lists; everything else as JSON has it."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "hex": value.data.hex()}
    return value


VECTORS: list[dict[str, Any]] = []


def command(
    name: str,
    description: str,
    kind: str,
    header: list[Any],
    bulk: list[bytes] = (),
    *,
    value_key: str | None = None,
    value: Any = None,
    decode_only: bool = False,
    **fields: Any,
) -> None:
    """Add a valid command-channel vector."""
    frames = [pack(header), *bulk]
    decoded: dict[str, Any] = {
        "kind": kind,
        "header": jsonable(header),
        **{k: jsonable(v) for k, v in fields.items()},
    }
    if value_key is not None:
        decoded[value_key] = jsonable(value)
    VECTORS.append(
        {
            "name": name,
            "description": description,
            "channel": "command",
            "frames_hex": [f.hex() for f in frames],
            "decoded": decoded,
            "decode_only": decode_only,
            "error": None,
        }
    )


def event(
    name: str,
    description: str,
    topic: str,
    body: list[Any],
    *,
    decode_only: bool = False,
) -> None:
    """Add a valid event-channel vector (one frame: topic NUL msgpack body)."""
    frame = topic.encode() + b"\0" + pack(body)
    _, _, src, epoch, seq, ts, data = body[:7]
    VECTORS.append(
        {
            "name": name,
            "description": description,
            "channel": "event",
            "frames_hex": [frame.hex()],
            "decoded": {
                "kind": "event",
                "body": jsonable(body),
                "topic": topic,
                "src": src,
                "epoch": epoch,
                "seq": seq,
                "ts": ts,
                "data": jsonable(data),
            },
            "decode_only": decode_only,
            "error": None,
        }
    )


def invalid(
    name: str,
    description: str,
    frames: list[bytes],
    code: str,
    *,
    channel: str = "command",
    stage: str = "decode",
) -> None:
    """Add an invalid vector: decoding (stage "decode") or unpacking the value (stage "value")
    must raise the error ``code``."""
    VECTORS.append(
        {
            "name": name,
            "description": description,
            "channel": channel,
            "frames_hex": [f.hex() for f in frames],
            "decoded": None,
            "decode_only": False,
            "error": {"code": code, "stage": stage},
        }
    )


def build() -> None:
    """Every case, in the order of docs/PROTOCOL.md."""
    # --- request ---------------------------------------------------------------------------
    args = {"a": 1, "b": 2}
    command(
        "request_small_args",
        "REQUEST with small inline arguments: ttl_s is relative seconds (float64); args is a bin "
        "holding a msgpack map.",
        "request",
        [VERSION, KINDS["request"], MSG_ID, "echo1", "add", 2.5, pack(args)],
        msg_id=MSG_ID,
        service="echo1",
        command="add",
        ttl_s=2.5,
        value_key="args",
        value=args,
    )
    command(
        "request_nil_ttl_no_args",
        "REQUEST with ttl_s nil (the broker applies its default_timeout_s) and no arguments (an "
        "empty map, 0x80).",
        "request",
        [VERSION, KINDS["request"], "3f2a9c1b7d4e-2", "broker", "ping", None, pack({})],
        msg_id="3f2a9c1b7d4e-2",
        service="broker",
        command="ping",
        ttl_s=None,
        value_key="args",
        value={},
    )
    small_blob = bytes(range(16))
    args = {"name": "serial.bin", "data": small_blob}
    command(
        "request_inline_bin",
        "REQUEST whose arguments hold a small bytes value: under 64 KiB it stays inline as msgpack bin.",
        "request",
        [VERSION, KINDS["request"], "3f2a9c1b7d4e-3", "fr1", "length", 2.5, pack(args)],
        msg_id="3f2a9c1b7d4e-3",
        service="fr1",
        command="length",
        ttl_s=2.5,
        value_key="args",
        value=args,
    )
    image = bytes(range(256)) * 256  # exactly 64 KiB: the smallest value that is lifted
    lifted = {"path": "fw.frb", "data": ref(1)}
    command(
        "request_bulk_frame",
        "REQUEST with a 65536-byte bytes argument: it is lifted into bulk frame 1 and the args map holds "
        "ext type 1 with the 4-byte big-endian index 00000001 (d6 01 00 00 00 01) in its place.",
        "request",
        [
            VERSION,
            KINDS["request"],
            "3f2a9c1b7d4e-4",
            "fr1",
            "FR_SendFile",
            120.5,
            pack(lifted),
        ],
        [image],
        msg_id="3f2a9c1b7d4e-4",
        service="fr1",
        command="FR_SendFile",
        ttl_s=120.5,
        value_key="args",
        value={"path": "fw.frb", "data": image},
    )
    command(
        "request_small_bulk_references",
        "Decode-only: references may point at bulk frames of any size and in any order (here index 2 "
        "before index 1); a receiver must resolve them even though this encoder only lifts values >= 64 KiB.",
        "request",
        [
            VERSION,
            KINDS["request"],
            "3f2a9c1b7d4e-5",
            "cam1",
            "store",
            2.5,
            pack({"first": ref(2), "second": ref(1)}),
        ],
        [b"one", b"two"],
        decode_only=True,
        msg_id="3f2a9c1b7d4e-5",
        service="cam1",
        command="store",
        ttl_s=2.5,
        value_key="args",
        value={"first": b"two", "second": b"one"},
    )
    command(
        "request_extra_trailing_elements",
        "Decode-only: a header with more elements than its kind needs (from a newer minor revision) "
        "decodes as if they were absent (forward compatibility).",
        "request",
        [
            VERSION,
            KINDS["request"],
            "3f2a9c1b7d4e-6",
            "echo1",
            "add",
            2.5,
            pack({"a": 1}),
            "future",
            {"x": 1},
        ],
        decode_only=True,
        msg_id="3f2a9c1b7d4e-6",
        service="echo1",
        command="add",
        ttl_s=2.5,
        value_key="args",
        value={"a": 1},
    )
    deep = bytes(reversed(image))  # another 64 KiB value, told apart from the lifted one
    command(
        "request_bulk_lifting_depth",
        "REQUEST showing how far the encoder looks for bytes to lift (§4): the args map is level "
        "0; a value inside it level 1, and so on. The 64 KiB bytes at level 4 (args.l1.l2.l3.l4) "
        "is lifted into bulk frame 1; the one at level 5 (args.l1.l2.l3.deeper.l5) stays inline "
        "as bin 16 (c5 00 01 00 00 ...) in the args.",
        "request",
        [
            VERSION,
            KINDS["request"],
            "3f2a9c1b7d4e-10",
            "cam1",
            "store",
            2.5,
            pack({"l1": {"l2": {"l3": {"l4": ref(1), "deeper": {"l5": deep}}}}}),
        ],
        [image],
        msg_id="3f2a9c1b7d4e-10",
        service="cam1",
        command="store",
        ttl_s=2.5,
        value_key="args",
        value={"l1": {"l2": {"l3": {"l4": image, "deeper": {"l5": deep}}}}},
    )
    # --- progress / reply / error ----------------------------------------------------------
    data = {"done": 3, "total": 10}
    command(
        "progress",
        "PROGRESS from an actor for request 3f2a9c1b7d4e-1: data is a bin holding any msgpack value.",
        "progress",
        [VERSION, KINDS["progress"], MSG_ID, pack(data)],
        msg_id=MSG_ID,
        value_key="data",
        value=data,
    )
    command(
        "reply",
        "REPLY ending request 3f2a9c1b7d4e-1 with the result 3.",
        "reply",
        [VERSION, KINDS["reply"], MSG_ID, pack(3)],
        msg_id=MSG_ID,
        value_key="result",
        value=3,
    )
    result = {
        "version": "2.0.1",
        "ok": True,
        "ratio": 0.75,
        "none": None,
        "list": [1, -1, 300],
    }
    command(
        "reply_map",
        "REPLY with a map result mixing str, bool, float64, nil, negative and 16-bit ints.",
        "reply",
        [VERSION, KINDS["reply"], "3f2a9c1b7d4e-7", pack(result)],
        msg_id="3f2a9c1b7d4e-7",
        value_key="result",
        value=result,
    )
    command(
        "reply_bulk_frame",
        "REPLY whose result is itself a 65536-byte bytes value: the result bin is just the "
        "reference d6 01 00000001.",
        "reply",
        [VERSION, KINDS["reply"], "3f2a9c1b7d4e-8", pack(ref(1))],
        [image],
        msg_id="3f2a9c1b7d4e-8",
        value_key="result",
        value=image,
    )
    command(
        "reply_nil",
        "REPLY with the result nil (0xc0 inside the bin).",
        "reply",
        [VERSION, KINDS["reply"], "3f2a9c1b7d4e-9", pack(None)],
        msg_id="3f2a9c1b7d4e-9",
        value_key="result",
        value=None,
    )
    details = {"device_code": "NOT_EXIST", "channel": 2}
    command(
        "error_with_details",
        "ERROR ending a request: code, human message, and a details map (here a device fault with "
        "the device's own code).",
        "error",
        [
            VERSION,
            KINDS["error"],
            MSG_ID,
            "device_fault",
            "FR_SendFile: programmer reported NOT_EXIST",
            details,
        ],
        msg_id=MSG_ID,
        code="device_fault",
        message="FR_SendFile: programmer reported NOT_EXIST",
        details=details,
    )
    command(
        "error_deadline_from_broker",
        "ERROR as the broker sends it when a request's deadline passes: details is an empty map.",
        "error",
        [
            VERSION,
            KINDS["error"],
            MSG_ID,
            "deadline_exceeded",
            "no answer from 'echo1' before the deadline",
            {},
        ],
        msg_id=MSG_ID,
        code="deadline_exceeded",
        message="no answer from 'echo1' before the deadline",
        details={},
    )
    forbidden = (
        "identity 'bob' may not call fr1.FR_Run: it is a privileged command and the identity "
        "is not an operator"
    )
    forbidden_details = {
        "identity": "bob",
        "service": "fr1",
        "command": "FR_Run",
        "rule": "privileged",
    }
    command(
        "error_forbidden",
        "ERROR as a secured broker sends it when its access list refuses a call (§18): the "
        "message names the identity and the command; details identity, service, command, rule.",
        "error",
        [VERSION, KINDS["error"], MSG_ID, "forbidden", forbidden, forbidden_details],
        msg_id=MSG_ID,
        code="forbidden",
        message=forbidden,
        details=forbidden_details,
    )
    hijack = "service 'fr1' is up under identity 'fr1'; identity 'bob' may not take it over"
    hijack_details = {"identity": "bob", "service": "fr1", "rule": "register"}
    command(
        "error_forbidden_ready",
        "ERROR answering a READY a secured broker refuses (§18; here a name live under another "
        "identity): msg_id is the empty string, as for any answer to READY.",
        "error",
        [VERSION, KINDS["error"], "", "forbidden", hijack, hijack_details],
        msg_id="",
        code="forbidden",
        message=hijack,
        details=hijack_details,
    )
    too_old = "echo1.tick: events from seq 3 are no longer kept (oldest kept: 41)"
    too_old_details = {"topic": "echo1.tick", "oldest": 41}
    command(
        "error_too_old",
        "ERROR answering the built-in replay command (§9, repairing a gap) when the first event "
        "asked for fell out of the publisher's ring: details topic and oldest, the oldest seq "
        "still kept (nil when none is), from which the rest can be asked for.",
        "error",
        [VERSION, KINDS["error"], MSG_ID, "too_old", too_old, too_old_details],
        msg_id=MSG_ID,
        code="too_old",
        message=too_old,
        details=too_old_details,
    )
    # --- cancel / ready / heartbeat / disconnect / hello -----------------------------------
    command(
        "cancel",
        "CANCEL of request 3f2a9c1b7d4e-1 (client to broker, and broker to actor).",
        "cancel",
        [VERSION, KINDS["cancel"], MSG_ID],
        msg_id=MSG_ID,
    )
    info = {
        "kind": "echo",
        "pid": 4242,
        "host": "line-ctl-1",
        "heartbeat_s": 1.5,
        "service": "echo1",
        "doc": "A device-less actor.",
        "commands": {
            "add": {
                "doc": "Return a + b.",
                "args": [
                    {"name": "a", "type": "int", "required": True},
                    {"name": "b", "type": "int", "required": False, "default": 0},
                ],
                "returns": "int",
                "concurrent": False,
                "progress": False,
            }
        },
    }
    command(
        "ready",
        "READY: an actor registers service echo1 with its info map (kind, pid, host, heartbeat_s, "
        "doc, commands).",
        "ready",
        [VERSION, KINDS["ready"], "echo1", info],
        service="echo1",
        info=info,
    )
    command(
        "heartbeat",
        "HEARTBEAT: two elements, always the three bytes 92 01 07.",
        "heartbeat",
        [VERSION, KINDS["heartbeat"]],
    )
    command(
        "disconnect",
        "DISCONNECT from the broker to a peer it does not know; an actor answers it with READY.",
        "disconnect",
        [VERSION, KINDS["disconnect"], "not registered; send READY"],
        reason="not registered; send READY",
    )
    command(
        "hello",
        "HELLO from a client offering protocol versions [1, 2] (a future peer) with an info map.",
        "hello",
        [
            VERSION,
            KINDS["hello"],
            [1, 2],
            {"client": "linebus-node", "version": "0.1.0"},
        ],
        versions=[1, 2],
        info={"client": "linebus-node", "version": "0.1.0"},
    )
    broker_info = {
        "broker": "linebus",
        "pid": 101,
        "host": "line-ctl-1",
        "command": "tcp://127.0.0.1:7750",
        "publish": "tcp://127.0.0.1:7751",
        "subscribe": "tcp://127.0.0.1:7752",
    }
    command(
        "hello_answer",
        "HELLO as the broker answers: versions holds exactly the one version chosen.",
        "hello",
        [VERSION, KINDS["hello"], [1], broker_info],
        versions=[1],
        info=broker_info,
    )
    # --- events ----------------------------------------------------------------------------
    event(
        "event",
        "EVENT frame: topic, NUL, msgpack [1, 9, src, epoch, seq, ts, data]; epoch is a random "
        "53-bit integer (uint64 on the wire).",
        "echo1.tick",
        [VERSION, KINDS["event"], "echo1", EPOCH, 7, TS, {"x": 1}],
    )
    presence = {
        "service": "echo1",
        "kind": "echo",
        "state": "down",
        "reason": "actor disconnected",
        "since": TS,
    }
    event(
        "event_presence",
        "Presence EVENT published by the broker (src 'broker') when echo1 goes down.",
        "presence.echo1",
        [VERSION, KINDS["event"], "broker", EPOCH + 1, 2, TS, presence],
    )
    event(
        "event_extra_trailing_elements",
        "Decode-only: an event body with elements after data is accepted; they are ignored.",
        "echo1.tick",
        [VERSION, KINDS["event"], "echo1", EPOCH, 8, TS, None, "future"],
        decode_only=True,
    )
    event(
        "event_integer_ts",
        "Decode-only: ts may be an integer (whole seconds); the Python publisher always sends "
        "float64.",
        "echo1.tick",
        [VERSION, KINDS["event"], "echo1", EPOCH, 9, 1767225600, {"x": 2}],
        decode_only=True,
    )

    # --- invalid -------------------------------------------------------------------------------
    invalid(
        "invalid_not_msgpack",
        "Header frame 0xc1 is not msgpack (0xc1 is never used).",
        [b"\xc1"],
        "bad_request",
    )
    invalid("invalid_empty_header", "An empty header frame.", [b""], "bad_request")
    invalid("invalid_no_frames", "A message with no frames at all.", [], "bad_request")
    invalid(
        "invalid_truncated_header",
        "A REQUEST header cut short in the middle of its msg_id.",
        [pack([VERSION, 1, MSG_ID, "echo1", "add", 2.5, pack({})])[:8]],
        "bad_request",
    )
    invalid(
        "invalid_header_not_array",
        "The header is a map, not an array.",
        [pack({"v": 1, "kind": 7})],
        "bad_request",
    )
    invalid(
        "invalid_header_one_element",
        "The header has only the version.",
        [pack([VERSION])],
        "bad_request",
    )
    invalid(
        "invalid_version_2",
        "Header version 2: the codec speaks only version 1.",
        [pack([2, KINDS["heartbeat"]])],
        "unsupported_version",
    )
    invalid(
        "invalid_version_2_request",
        "A version-2 REQUEST is refused as a whole, whatever follows.",
        [pack([2, KINDS["request"], MSG_ID, "echo1", "add", 2.5, pack({})])],
        "unsupported_version",
    )
    invalid(
        "invalid_version_string",
        "Header version given as the string '1'.",
        [pack(["1", KINDS["heartbeat"]])],
        "bad_request",
    )
    invalid(
        "invalid_version_2_short",
        "The header [2]: the version is checked before the length, so a one-element header of "
        "another integer version is unsupported_version, not bad_request.",
        [pack([2])],
        "unsupported_version",
    )
    invalid(
        "invalid_header_trailing_bytes",
        "A HEARTBEAT header followed by one more byte (c0) in the same frame: a header frame is "
        "exactly one msgpack value.",
        [pack([VERSION, KINDS["heartbeat"]]) + b"\xc0"],
        "bad_request",
    )
    invalid(
        "invalid_header_not_utf8",
        "A REQUEST whose service str holds the byte ff (not UTF-8): the header is not valid "
        'msgpack, so the broker\'s ERROR has msg_id "".',
        [
            pack([VERSION, KINDS["request"], MSG_ID, "echo1", "add", 2.5, pack({})]).replace(
                b"\xa5echo1", b"\xa5ech\xff1"
            )
        ],
        "bad_request",
    )
    invalid(
        "invalid_header_map_key_int",
        "A READY whose info map has the integer key 1: every map key must be a str.",
        [pack([VERSION, KINDS["ready"], "echo1", {"kind": "echo", 1: "one"}])],
        "bad_request",
    )
    invalid(
        "invalid_header_timestamp",
        "A READY whose info holds a msgpack timestamp (ext type -1, d6 ff ...): no ext value "
        "may appear in a header.",
        [
            pack([VERSION, KINDS["ready"], "echo1", {"kind": "echo", "since": 0}]).replace(
                b"\xa5since\x00", b"\xa5since\xd6\xff\x69\x55\xb9\x00"
            )
        ],
        "bad_request",
    )
    invalid(
        "invalid_cancel_with_bulk_frame",
        "A CANCEL followed by a bulk frame: only REQUEST, PROGRESS and REPLY carry bulk frames; "
        "after any other kind they make the message bad_request (the header is checked first).",
        [pack([VERSION, KINDS["cancel"], MSG_ID]), b"xx"],
        "bad_request",
    )
    invalid(
        "invalid_unknown_kind",
        "Kind 42 does not exist.",
        [pack([VERSION, 42, MSG_ID])],
        "bad_request",
    )
    invalid(
        "invalid_event_on_command_channel",
        "Kind 9 (event) is not valid on the command channel.",
        [pack([VERSION, KINDS["event"], "echo1", EPOCH, 1, TS, None])],
        "bad_request",
    )
    invalid(
        "invalid_request_missing_args",
        "A REQUEST header with 6 elements (args missing).",
        [pack([VERSION, KINDS["request"], MSG_ID, "echo1", "add", 2.5])],
        "bad_request",
    )
    invalid(
        "invalid_request_msg_id_int",
        "A REQUEST whose msg_id is an integer.",
        [pack([VERSION, KINDS["request"], 17, "echo1", "add", 2.5, pack({})])],
        "bad_request",
    )
    invalid(
        "invalid_request_ttl_string",
        "A REQUEST whose ttl_s is a string.",
        [pack([VERSION, KINDS["request"], MSG_ID, "echo1", "add", "2.5", pack({})])],
        "bad_request",
    )
    invalid(
        "invalid_request_ttl_bool",
        "A REQUEST whose ttl_s is true (a bool is not a number here).",
        [pack([VERSION, KINDS["request"], MSG_ID, "echo1", "add", True, pack({})])],
        "bad_request",
    )
    invalid(
        "invalid_request_args_not_bin",
        "A REQUEST whose args are an inline map instead of a bin.",
        [pack([VERSION, KINDS["request"], MSG_ID, "echo1", "add", 2.5, {"a": 1}])],
        "bad_request",
    )
    invalid(
        "invalid_reply_data_str",
        "A REPLY whose result is a str instead of a bin.",
        [pack([VERSION, KINDS["reply"], MSG_ID, "3"])],
        "bad_request",
    )
    invalid(
        "invalid_error_details_not_map",
        "An ERROR whose details is nil instead of a map.",
        [pack([VERSION, KINDS["error"], MSG_ID, "busy", "queue full", None])],
        "bad_request",
    )
    invalid(
        "invalid_ready_info_not_map",
        "A READY whose info is an array.",
        [pack([VERSION, KINDS["ready"], "echo1", []])],
        "bad_request",
    )
    invalid(
        "invalid_hello_versions_not_array",
        "A HELLO whose versions is a single integer.",
        [pack([VERSION, KINDS["hello"], 1, {}])],
        "bad_request",
    )
    invalid(
        "invalid_bulk_reference_out_of_range",
        "Args reference bulk frame 2 but only one bulk frame follows.",
        [
            pack(
                [
                    VERSION,
                    KINDS["request"],
                    MSG_ID,
                    "fr1",
                    "FR_SendFile",
                    2.5,
                    pack({"data": ref(2)}),
                ]
            ),
            b"xx",
        ],
        "bad_request",
        stage="value",
    )
    invalid(
        "invalid_bulk_reference_zero",
        "Bulk indexes are 1-based: index 0 is invalid.",
        [
            pack(
                [
                    VERSION,
                    KINDS["request"],
                    MSG_ID,
                    "fr1",
                    "FR_SendFile",
                    2.5,
                    pack({"data": ref(0)}),
                ]
            ),
            b"xx",
        ],
        "bad_request",
        stage="value",
    )
    invalid(
        "invalid_unknown_ext_type",
        "Ext type 2 inside a value is not defined by the protocol.",
        [pack([VERSION, KINDS["reply"], MSG_ID, pack(msgpack.ExtType(2, b"\0\0\0\1"))])],
        "bad_request",
        stage="value",
    )
    invalid(
        "invalid_payload_not_msgpack",
        "A REPLY whose result bin holds bytes that are not msgpack.",
        [pack([VERSION, KINDS["reply"], MSG_ID, b"\xc1"])],
        "bad_request",
        stage="value",
    )
    invalid(
        "invalid_bulk_reference_size_2",
        "A bulk reference must hold 4 bytes: ext type 1 with 2 bytes (fixext 2, d5 01 00 01) is "
        "bad_request even though a frame 1 follows.",
        [
            pack(
                [
                    VERSION,
                    KINDS["request"],
                    MSG_ID,
                    "fr1",
                    "FR_SendFile",
                    2.5,
                    pack({"data": msgpack.ExtType(BULK_EXT, b"\x00\x01")}),
                ]
            ),
            b"xx",
        ],
        "bad_request",
        stage="value",
    )
    invalid(
        "invalid_payload_not_utf8",
        "A REPLY whose result is a str holding the byte ff (a1 ff): not UTF-8.",
        [pack([VERSION, KINDS["reply"], MSG_ID, b"\xa1\xff"])],
        "bad_request",
        stage="value",
    )
    invalid(
        "invalid_payload_map_key_int",
        "A REQUEST whose args map has the integer key 1 (81 01 a1 78): every map key must be "
        "a str; bad_request, not invalid_arguments.",
        [pack([VERSION, KINDS["request"], MSG_ID, "fr1", "FR_SendFile", 2.5, pack({1: "x"})])],
        "bad_request",
        stage="value",
    )
    invalid(
        "invalid_payload_timestamp",
        "A REQUEST whose args are a msgpack timestamp (ext type -1, d6 ff 00 00 00 01) instead "
        "of a map: only ext type 1 is defined, so bad_request, not invalid_arguments.",
        [
            pack(
                [
                    VERSION,
                    KINDS["request"],
                    MSG_ID,
                    "fr1",
                    "FR_SendFile",
                    2.5,
                    b"\xd6\xff\x00\x00\x00\x01",
                ]
            )
        ],
        "bad_request",
        stage="value",
    )
    no_nul = b"echo1.tick" + pack(
        [VERSION, KINDS["event"], "echo1", 0x1A2B3C4D, 1, TS_NO_ZERO, None]
    )
    assert b"\0" not in no_nul
    invalid(
        "invalid_event_no_nul",
        "An event frame with no NUL byte anywhere (topic and body run together; the epoch, seq "
        "and ts are chosen to hold no 00 byte).",
        [no_nul],
        "bad_request",
        channel="event",
    )
    invalid(
        "invalid_event_topic_not_utf8",
        "An event frame whose first NUL is inside the body (the 00 of the uint64 epoch), so the "
        "'topic' before it holds the byte 97, not UTF-8. (Named invalid_event_no_nul before.)",
        [b"echo1.tick" + pack([VERSION, KINDS["event"], "echo1", EPOCH, 1, TS, None])],
        "bad_request",
        channel="event",
    )
    invalid(
        "invalid_event_trailing_bytes",
        "An event whose body is followed by one more byte (c0): the body is exactly one msgpack "
        "value.",
        [b"echo1.tick\0" + pack([VERSION, KINDS["event"], "echo1", EPOCH, 1, TS, None]) + b"\xc0"],
        "bad_request",
        channel="event",
    )
    invalid(
        "invalid_event_seq_str",
        "An event whose seq is the str '1': src must be a str, epoch and seq unsigned integers, "
        "ts an integer or a float.",
        [b"echo1.tick\0" + pack([VERSION, KINDS["event"], "echo1", EPOCH, "1", TS, None])],
        "bad_request",
        channel="event",
    )
    invalid(
        "invalid_event_short_body",
        "An event body with 6 elements (data missing).",
        [b"echo1.tick\0" + pack([VERSION, KINDS["event"], "echo1", EPOCH, 1, TS])],
        "bad_request",
        channel="event",
    )
    invalid(
        "invalid_event_wrong_kind",
        "An event body whose kind is 3 (reply).",
        [b"echo1.tick\0" + pack([VERSION, KINDS["reply"], "echo1", EPOCH, 1, TS, None])],
        "bad_request",
        channel="event",
    )
    invalid(
        "invalid_event_version_2",
        "An event body of version 2 (the event decoder answers bad_request, not unsupported_version).",
        [b"echo1.tick\0" + pack([2, KINDS["event"], "echo1", EPOCH, 1, TS, None])],
        "bad_request",
        channel="event",
    )


def check_against_codec() -> None:
    """Refuse to write vectors that bus.protocol encodes differently (see the module docstring)."""
    sys.path.insert(0, str(ROOT))
    from bus import protocol

    for vector in VECTORS:
        decoded = vector["decoded"]
        if decoded is None or vector["decode_only"]:
            continue
        frames = [bytes.fromhex(h) for h in vector["frames_hex"]]
        got = _encode_with_codec(protocol, decoded)
        if [bytes(f) for f in got] != frames:
            raise SystemExit(
                f"{vector['name']}: bus.protocol encodes different bytes than the document says"
            )


def from_json(value: Any) -> Any:
    """The vectors' JSON form back to Python values: {"hex": ...} becomes bytes."""
    if isinstance(value, dict):
        if set(value) == {"hex"}:
            return bytes.fromhex(value["hex"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def _encode_with_codec(protocol: Any, d: dict[str, Any]) -> list[Any]:
    kind = d["kind"]
    if kind == "request":
        return protocol.encode_request(
            d["msg_id"], d["service"], d["command"], d["ttl_s"], from_json(d["args"])
        )
    if kind == "progress":
        return protocol.encode_progress(d["msg_id"], from_json(d["data"]))
    if kind == "reply":
        return protocol.encode_reply(d["msg_id"], from_json(d["result"]))
    if kind == "error":
        return protocol.encode_error(d["msg_id"], d["code"], d["message"], from_json(d["details"]))
    if kind == "cancel":
        return protocol.encode_cancel(d["msg_id"])
    if kind == "ready":
        return protocol.encode_ready(d["service"], from_json(d["info"]))
    if kind == "heartbeat":
        return protocol.encode_heartbeat()
    if kind == "disconnect":
        return protocol.encode_disconnect(d["reason"])
    if kind == "hello":
        return protocol.encode_hello(d["versions"], from_json(d["info"]))
    if kind == "event":
        return [
            protocol.encode_event(
                d["topic"], d["src"], d["epoch"], d["seq"], d["ts"], from_json(d["data"])
            )
        ]
    raise ValueError(kind)


def main() -> None:
    """Write one JSON file per vector, removing stale ones."""
    build()
    names = [v["name"] for v in VECTORS]
    if len(names) != len(set(names)):
        raise SystemExit("duplicate vector names")
    check_against_codec()
    for old in HERE.glob("*.json"):
        old.unlink()
    for vector in VECTORS:
        path = HERE / f"{vector['name']}.json"
        path.write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(VECTORS)} vectors to {HERE}")


if __name__ == "__main__":
    main()
