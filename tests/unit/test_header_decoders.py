"""The fast header decoders of bus.protocol (``split`` and one decoder per kind).

They are what the broker, the actor and the clients read headers with, so they must accept and
refuse exactly what ``protocol.decode`` does, with the same error class, message and details.
The golden invalid vectors go through them here too; the broker's own handling of those vectors
is tested in test_broker_inproc.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest

from bus import protocol
from bus.errors import BadRequest, BusError, UnsupportedVersion
from bus.protocol import Kind

ID = "3f2a9c1b7d4e-1"
VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors"
INVALID_COMMAND = [
    v
    for v in (json.loads(p.read_text()) for p in sorted(VECTOR_DIR.glob("invalid_*.json")))
    if v["channel"] == "command"
]


def pack(value: Any) -> bytes:
    return msgpack.packb(value)


GOOD: dict[Kind, list[Any]] = {
    Kind.REQUEST: [1, 1, ID, "echo1", "add", 2.5, pack({"a": 1})],
    Kind.PROGRESS: [1, 2, ID, pack({"done": 1})],
    Kind.REPLY: [1, 3, ID, pack(3)],
    Kind.ERROR: [1, 4, ID, "busy", "queue full", {"queued": 5}],
    Kind.CANCEL: [1, 5, ID],
    Kind.READY: [1, 6, "echo1", {"kind": "echo"}],
    Kind.HEARTBEAT: [1, 7],
    Kind.DISCONNECT: [1, 8, "bye"],
    Kind.HELLO: [1, 10, [1], {}],
}


def fast(frame: bytes) -> tuple[Any, ...]:
    """Decode one header frame the way a receiver does: ``split``, then its kind's decoder."""
    kind, header = protocol.split(frame)
    if kind == Kind.REQUEST:
        return (kind, *protocol.request_header(header, frame))
    if kind in (Kind.REPLY, Kind.PROGRESS):
        return (kind, *protocol.reply_header(header))
    if kind == Kind.ERROR:
        return (kind, *protocol.error_header(header))
    if kind == Kind.CANCEL:
        return (kind, protocol.cancel_header(header))
    if kind == Kind.READY:
        return (kind, *protocol.ready_header(header, frame))
    if kind == Kind.DISCONNECT:
        return (kind, protocol.disconnect_header(header))
    if kind == Kind.HELLO:
        return (kind, *protocol.hello_header(header, frame))
    return (kind,)


def slow(frame: bytes) -> tuple[Any, ...]:
    """The same fields from ``protocol.decode``."""
    m = protocol.decode([frame])
    kind = m.kind
    if kind is Kind.REQUEST:
        return (kind, m.msg_id, m.service, m.command, m.ttl_s, m.payload)
    if kind in (Kind.REPLY, Kind.PROGRESS):
        return (kind, m.msg_id, m.payload)
    if kind is Kind.ERROR:
        return (kind, m.msg_id, m.code, m.text, m.details)
    if kind is Kind.CANCEL:
        return (kind, m.msg_id)
    if kind is Kind.READY:
        return (kind, m.service, m.info)
    if kind is Kind.DISCONNECT:
        return (kind, m.text)
    if kind is Kind.HELLO:
        return (kind, m.versions, m.info)
    return (kind,)


def outcome(decoder: Any, frame: bytes) -> tuple[Any, ...]:
    """What ``decoder`` made of ``frame``: its fields, or the error's class, message, details."""
    try:
        return ("ok", *decoder(frame))
    except BusError as exc:
        return ("error", type(exc), exc.message, exc.details)


def _odd(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [None, True, 0, 1, -5, 2**40, 1.5, float("inf"), "x", b"\x80", [], {}]
    if depth < 2:
        choices += [[_odd(rng, depth + 1)], {rng.choice([1, "k"]): _odd(rng, depth + 1)}]
    return rng.choice(choices)


def _mutated_headers(seed: int, count: int) -> list[bytes]:
    """Headers of every kind with elements swapped for odd values, cut short or extended."""
    rng = random.Random(seed)
    frames = []
    for _ in range(count):
        kind = rng.choice([*GOOD, 9, 0, 11, True, "1"])
        header = list(GOOD[kind]) if isinstance(kind, Kind) else [1, kind]
        header = [_odd(rng) if i > 1 and rng.random() < 0.3 else v for i, v in enumerate(header)]
        if rng.random() < 0.2:
            header[0] = rng.choice([2, 0, True, 1.0, "1"])
        if rng.random() < 0.3:
            header = header[: rng.randint(0, len(header))]
        if rng.random() < 0.2:
            header.append(_odd(rng))
        frames.append(pack(header))
    return frames


class TestSplit:
    @pytest.mark.parametrize("kind", list(GOOD))
    def test_returns_the_kind_as_an_int_and_the_array(self, kind: Kind) -> None:
        """``split`` gives the kind (a plain int equal to its Kind) and the header array."""
        number, header = protocol.split(pack(GOOD[kind]))
        assert number == kind and type(number) is int
        assert header == GOOD[kind]

    @pytest.mark.parametrize(
        ("frame", "error", "reason"),
        [
            (b"", BadRequest, "header is not msgpack: it ends in the middle of a value"),
            (
                b"\xc1",
                BadRequest,
                "header is not msgpack: a byte that begins no msgpack value (0xc1)",
            ),
            (
                pack([1, 7]) + b"\x00",
                BadRequest,
                "header is not msgpack: bytes left over after the value",
            ),
            (pack({"v": 1}), BadRequest, "header must be a msgpack array [version, kind, ...]"),
            (pack([1]), BadRequest, "header must be a msgpack array [version, kind, ...]"),
            (pack(["1", 7]), BadRequest, "header[0] must be the protocol version (an integer)"),
            (pack([True, 7]), BadRequest, "header[0] must be the protocol version (an integer)"),
            (pack([1, 42]), BadRequest, "unknown message kind 42"),
            (pack([1, True]), BadRequest, "unknown message kind True"),
            (
                pack([1, 9, "x"]),
                BadRequest,
                "events go to the publish endpoint, not the command endpoint",
            ),
        ],
    )
    def test_refuses_what_every_kind_shares(
        self, frame: bytes, error: type[BusError], reason: str
    ) -> None:
        """Not msgpack, not an array, bad version or kind: bad_request naming the problem."""
        with pytest.raises(error) as info:
            protocol.split(frame)
        assert type(info.value) is error
        assert info.value.details == {"reason": reason}

    @pytest.mark.parametrize("header", [[2, "no kind"], [2], [0, 1, 2], [-1]])
    def test_other_integer_version_is_unsupported_whatever_follows(self, header: list[Any]) -> None:
        """Another integer version is unsupported_version with the supported list, even with a
        bad kind or none at all: the version is checked before the array's length."""
        with pytest.raises(UnsupportedVersion) as info:
            protocol.split(pack(header))
        assert info.value.details == {"supported": [1]}

    def test_size_is_checked_only_when_the_header_is_refused_anyway(self) -> None:
        """A big well-formed header passes ``split`` (PROGRESS and REPLY are routed unchecked);
        a big malformed one is refused as header_too_large, as ``decode`` would."""
        big = b"x" * protocol.MAX_HEADER_BYTES
        kind, _ = protocol.split(pack([1, 3, ID, big]))
        assert kind == Kind.REPLY
        for frame in (pack([2, 3, ID, big]), b"\xc1" + big):
            with pytest.raises(BadRequest) as info:
                protocol.split(frame)
            assert info.value.details["reason"] == "header_too_large"


class TestDecoders:
    def test_request_fields_by_name(self) -> None:
        """A REQUEST's elements come back named; ttl_s keeps the type it was sent with."""
        frame = pack([1, 1, ID, "echo1", "add", 5, pack({"a": 1}), "future"])
        _, header = protocol.split(frame)
        request = protocol.request_header(header, frame)
        assert request == protocol.RequestHeader(ID, "echo1", "add", 5, pack({"a": 1}))
        assert (request.msg_id, request.service, request.command) == (ID, "echo1", "add")
        assert repr(request.ttl_s) == "5"  # not 5.0
        assert protocol.request_route(header, frame) == (ID, "echo1")
        assert protocol.request_ttl(header, frame) == 5

    def test_other_kinds_by_name(self) -> None:
        """Each kind's decoder names its elements."""
        assert protocol.reply_header(GOOD[Kind.REPLY]) == protocol.ReplyHeader(ID, pack(3))
        assert protocol.reply_header(GOOD[Kind.PROGRESS]).payload == pack({"done": 1})
        error = protocol.error_header(GOOD[Kind.ERROR])
        assert (error.code, error.message, error.details) == ("busy", "queue full", {"queued": 5})
        assert protocol.cancel_header(GOOD[Kind.CANCEL]) == ID
        assert protocol.disconnect_header(GOOD[Kind.DISCONNECT]) == "bye"
        ready = protocol.ready_header(GOOD[Kind.READY], pack(GOOD[Kind.READY]))
        assert (ready.service, ready.info) == ("echo1", {"kind": "echo"})
        hello = protocol.hello_header(GOOD[Kind.HELLO], pack(GOOD[Kind.HELLO]))
        assert (hello.versions, hello.info) == ([1], {})

    @pytest.mark.parametrize("kind", [Kind.REQUEST, Kind.READY, Kind.HELLO])
    def test_header_size_limit(self, kind: Kind) -> None:
        """REQUEST, READY and HELLO headers over MAX_HEADER_BYTES are header_too_large."""
        header = [*GOOD[kind], "x" * protocol.MAX_HEADER_BYTES]
        frame = pack(header)
        decoder = {
            Kind.REQUEST: protocol.request_header,
            Kind.READY: protocol.ready_header,
            Kind.HELLO: protocol.hello_header,
        }[kind]
        with pytest.raises(BadRequest) as info:
            decoder(header, frame)
        assert info.value.details == {"reason": "header_too_large", "size": len(frame)}

    def test_peek_msg_id(self) -> None:
        """Element 2 when it is a string, else None (routing drops what it cannot place)."""
        assert protocol.peek_msg_id([1, 3, ID]) == ID
        assert protocol.peek_msg_id([1, 3, 7]) is None
        assert protocol.peek_msg_id([1, 3]) is None

    @pytest.mark.parametrize(
        ("frame", "msg_id"),
        [
            (pack([1, 1, ID, 7]), ID),
            (pack([9, 5, ID]), ID),
            (pack([1, 6, "echo1", {}]), ""),
            (pack([1, 1, 7]), ""),
            (pack([1, 1]), ""),
            (pack({"a": 1}), ""),
            (b"\xc1", ""),
        ],
    )
    def test_error_msg_id(self, frame: bytes, msg_id: str) -> None:
        """An ERROR about a malformed REQUEST or CANCEL names its string element 2, else ""."""
        assert protocol.error_msg_id(frame) == msg_id


class TestSameAsDecode:
    @pytest.mark.parametrize("seed", range(4))
    def test_fast_decoders_agree_with_decode(self, seed: int) -> None:
        """On 1500 mutated headers of every kind, ``split`` and the kind's decoder accept the
        same headers as ``decode`` with the same fields, and refuse the others with the same
        error class, message and details."""
        for frame in _mutated_headers(seed, 1500):
            assert outcome(fast, frame) == outcome(slow, frame), msgpack.unpackb(frame)

    @pytest.mark.parametrize("seed", range(2))
    def test_broker_request_checks_agree_with_request_header(self, seed: int) -> None:
        """``request_route`` then ``request_ttl`` (the broker's order) accept exactly the
        REQUEST headers ``request_header`` accepts, and refuse the others the same way."""
        rng = random.Random(seed)
        for _ in range(1500):
            header = [
                _odd(rng) if i > 1 and rng.random() < 0.3 else v
                for i, v in enumerate(GOOD[Kind.REQUEST])
            ]
            header = header[: rng.randint(2, 8)]
            frame = pack(header)

            def in_two_steps(frame: bytes, header: list[Any] = header) -> tuple[Any, ...]:
                msg_id, service = protocol.request_route(header, frame)
                ttl = protocol.request_ttl(header, frame)
                return (msg_id, service, header[4], ttl, header[6])

            def in_one(frame: bytes, header: list[Any] = header) -> tuple[Any, ...]:
                return tuple(protocol.request_header(header, frame))

            assert outcome(in_two_steps, frame) == outcome(in_one, frame), header


def _payload_value(kind: int, payload: bytes, bulk: list[bytes]) -> Any:
    """Unpack a payload as the receivers do: the bulk-aware decoder only when bulk frames came."""
    return protocol.unpack_value(payload, bulk) if bulk else protocol.unpack_small(payload)


class TestInvalidVectorsOnTheFastPaths:
    """Every invalid command-channel vector is refused by the decoders the actor and the
    clients use, with the vector's code; stage "decode" vectors with the very error ``decode``
    raises (message and details, so the reason too)."""

    @pytest.mark.parametrize(
        "vector",
        [v for v in INVALID_COMMAND if v["frames_hex"]],
        ids=[v["name"] for v in INVALID_COMMAND if v["frames_hex"]],
    )
    def test_refused_with_the_documented_error(self, vector: dict[str, Any]) -> None:
        frames = [bytes.fromhex(h) for h in vector["frames_hex"]]
        expected = vector["error"]
        with pytest.raises(BusError) as info:
            fields = fast(frames[0])
            if len(frames) > 1 and fields[0] not in protocol.BULK_KINDS:
                # What a receiver checks once the header is read (the broker, the clients).
                raise protocol.bulk_not_allowed(fields[0], len(frames) - 1)
            assert expected["stage"] == "value", f"header accepted: {fields}"
            _payload_value(fields[0], fields[-1], frames[1:])
        assert info.value.code == expected["code"]
        if expected["stage"] == "decode":
            with pytest.raises(BusError) as reference:
                protocol.decode(frames)
            assert (type(info.value), info.value.message, info.value.details) == (
                type(reference.value),
                reference.value.message,
                reference.value.details,
            )

    def test_only_the_frameless_vector_is_left_to_decode(self) -> None:
        """A ZeroMQ message has at least one frame, so the fast paths always get a header
        frame; the one vector without any (``invalid_no_frames``) is ``decode``'s alone."""
        frameless = [v["name"] for v in INVALID_COMMAND if not v["frames_hex"]]
        assert frameless == ["invalid_no_frames"]
        with pytest.raises(BadRequest):
            protocol.decode([])
