"""The Python codec against the stored golden vectors of protocol v1 (tests/vectors/*.json).

The vectors are read, never regenerated here: tests/vectors/make_vectors.py writes them from
docs/PROTOCOL.md, and every other-language client checks itself against the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from bus import protocol
from bus._calls import GapTracker
from bus.errors import BusError
from tests.vectors.make_vectors import from_json, jsonable

VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors"
VECTORS = [json.loads(p.read_text()) for p in sorted(VECTOR_DIR.glob("*.json"))]
VALID = [v for v in VECTORS if v["error"] is None]
ENCODABLE = [v for v in VALID if not v["decode_only"]]
INVALID = [v for v in VECTORS if v["error"] is not None]

KIND_NAMES = {
    "request",
    "progress",
    "reply",
    "error",
    "cancel",
    "ready",
    "heartbeat",
    "disconnect",
    "hello",
    "event",
}


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def frames_of(vector: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(h) for h in vector["frames_hex"]]


def encode(d: dict[str, Any]) -> list[bytes]:
    """Encode a vector's decoded value with bus.protocol."""
    kind = d["kind"]
    if kind == "request":
        frames = protocol.encode_request(
            d["msg_id"], d["service"], d["command"], d["ttl_s"], from_json(d["args"])
        )
    elif kind == "progress":
        frames = protocol.encode_progress(d["msg_id"], from_json(d["data"]))
    elif kind == "reply":
        frames = protocol.encode_reply(d["msg_id"], from_json(d["result"]))
    elif kind == "error":
        frames = protocol.encode_error(
            d["msg_id"], d["code"], d["message"], from_json(d["details"])
        )
    elif kind == "cancel":
        frames = protocol.encode_cancel(d["msg_id"])
    elif kind == "ready":
        frames = protocol.encode_ready(d["service"], from_json(d["info"]))
    elif kind == "heartbeat":
        frames = protocol.encode_heartbeat()
    elif kind == "disconnect":
        frames = protocol.encode_disconnect(d["reason"])
    elif kind == "hello":
        frames = protocol.encode_hello(d["versions"], from_json(d["info"]))
    elif kind == "event":
        frames = [
            protocol.encode_event(
                d["topic"], d["src"], d["epoch"], d["seq"], d["ts"], from_json(d["data"])
            )
        ]
    else:
        raise AssertionError(f"unknown kind {kind!r} in a vector")
    return [bytes(f) for f in frames]


def decode(vector: dict[str, Any]) -> dict[str, Any]:
    """Decode a vector's frames with bus.protocol into the vectors' JSON form."""
    frames = frames_of(vector)
    if vector["channel"] == "event":
        event = protocol.decode_event(frames[0])
        sep = frames[0].index(b"\0")
        return {
            "kind": "event",
            "body": jsonable(msgpack.unpackb(frames[0][sep + 1 :])),
            "topic": event.topic,
            "src": event.src,
            "epoch": event.epoch,
            "seq": event.seq,
            "ts": event.ts,
            "data": jsonable(event.data),
        }
    msg = protocol.decode(frames)
    out: dict[str, Any] = {
        "kind": msg.kind.name.lower(),
        "header": jsonable(msgpack.unpackb(frames[0])),
    }
    kind = msg.kind
    if kind is protocol.Kind.REQUEST:
        out.update(
            msg_id=msg.msg_id,
            service=msg.service,
            command=msg.command,
            ttl_s=msg.ttl_s,
            args=jsonable(msg.value()),
        )
    elif kind is protocol.Kind.PROGRESS:
        out.update(msg_id=msg.msg_id, data=jsonable(msg.value()))
    elif kind is protocol.Kind.REPLY:
        out.update(msg_id=msg.msg_id, result=jsonable(msg.value()))
    elif kind is protocol.Kind.ERROR:
        out.update(
            msg_id=msg.msg_id,
            code=msg.code,
            message=msg.text,
            details=jsonable(msg.details),
        )
    elif kind is protocol.Kind.CANCEL:
        out.update(msg_id=msg.msg_id)
    elif kind is protocol.Kind.READY:
        out.update(service=msg.service, info=jsonable(msg.info))
    elif kind is protocol.Kind.DISCONNECT:
        out.update(reason=msg.text)
    elif kind is protocol.Kind.HELLO:
        out.update(versions=msg.versions, info=jsonable(msg.info))
    return out


class TestVectorFiles:
    def test_every_kind_has_a_valid_vector(self) -> None:
        """Each of the ten message kinds has at least one encodable vector."""
        assert {v["decoded"]["kind"] for v in ENCODABLE} == KIND_NAMES

    def test_both_error_codes_are_covered(self) -> None:
        """Invalid vectors cover bad_request and unsupported_version."""
        assert {v["error"]["code"] for v in INVALID} == {
            "bad_request",
            "unsupported_version",
        }

    @pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
    def test_file_shape(self, vector: dict[str, Any]) -> None:
        """Every file has the documented keys and is named after its case."""
        assert set(vector) == {
            "name",
            "description",
            "channel",
            "frames_hex",
            "decoded",
            "decode_only",
            "error",
        }
        assert (VECTOR_DIR / f"{vector['name']}.json").exists()
        assert vector["channel"] in ("command", "event")
        assert (vector["decoded"] is None) == (vector["error"] is not None)


class TestValidVectors:
    @pytest.mark.parametrize("vector", ENCODABLE, ids=_ids(ENCODABLE))
    def test_encoding_gives_the_stored_bytes(self, vector: dict[str, Any]) -> None:
        """Encoding the decoded value with bus.protocol gives exactly the stored frames."""
        assert [f.hex() for f in encode(vector["decoded"])] == vector["frames_hex"]

    @pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
    def test_decoding_gives_the_decoded_value(self, vector: dict[str, Any]) -> None:
        """Decoding the stored frames with bus.protocol gives the stored decoded value."""
        assert decode(vector) == vector["decoded"]


class TestInvalidVectors:
    @pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
    def test_raises_the_named_error_code(self, vector: dict[str, Any]) -> None:
        """Decoding the frames (or, for stage "value", unpacking the payload) raises the named code."""
        frames = frames_of(vector)
        expected = vector["error"]
        with pytest.raises(BusError) as info:
            if vector["channel"] == "event":
                protocol.decode_event(frames[0])
            elif expected["stage"] == "value":
                protocol.decode(frames).value()
            else:
                protocol.decode(frames)
        assert info.value.code == expected["code"]

    @pytest.mark.parametrize(
        "vector",
        [v for v in INVALID if v["error"]["stage"] == "value"],
        ids=_ids([v for v in INVALID if v["error"]["stage"] == "value"]),
    )
    def test_value_errors_have_a_well_formed_header(self, vector: dict[str, Any]) -> None:
        """Vectors of stage "value" fail only when the payload is unpacked, not on the header."""
        protocol.decode(frames_of(vector))


EVENTS = [v for v in VECTORS if v["channel"] == "event"]


class TestEventVectorsOnTheSubscriberPath:
    """The Python subscriber's own fast decoder (``GapTracker.decode``, which does not call
    ``protocol.decode_event`` for a well-formed frame) agrees with the vectors too."""

    @pytest.mark.parametrize("vector", EVENTS, ids=_ids(EVENTS))
    def test_decoded_or_skipped_as_the_vector_says(self, vector: dict[str, Any]) -> None:
        tracker = GapTracker()
        event = tracker.decode(frames_of(vector)[0])
        if vector["error"] is not None:
            assert (event, tracker.malformed) == (None, 1)
            return
        expected = vector["decoded"]
        assert event is not None and tracker.malformed == 0
        assert (event.topic, event.src, event.epoch, event.seq, event.ts) == (
            expected["topic"],
            expected["src"],
            expected["epoch"],
            expected["seq"],
            expected["ts"],
        )
        assert jsonable(event.data) == expected["data"]
        assert type(event.ts) is type(expected["ts"])  # an integer ts stays an integer
