"""Property tests of the wire codec, bus/protocol.py (hypothesis).

Two kinds of property:

* decoding anything, whether random bytes, random frame lists, msgpack arrays of random
  values shaped like headers, or the golden vectors of tests/vectors/ with bytes flipped, cut
  or inserted, raises only the codec's documented errors (``BadRequest``,
  ``UnsupportedVersion``), never an IndexError or a TypeError; ``error_msg_id`` raises nothing;
* every message kind and the event frame round-trip: what ``encode_*`` builds, ``decode`` gives
  back field for field (payloads through ``Message.value``, bulk frames included), and the
  receivers' fast decoders (``split`` and the decoder of the kind) agree with ``decode``.

Profiles (bounded and derandomized in CI, ``long`` for hunting): tests/fuzz/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import example, given
from hypothesis import strategies as st

from bus import protocol
from bus.errors import BadRequest, UnsupportedVersion
from bus.protocol import BULK_THRESHOLD, Kind

ERRORS = (BadRequest, UnsupportedVersion)
VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _vector_frames() -> list[tuple[str, list[bytes]]]:
    out = []
    for path in sorted(VECTORS.glob("*.json")):
        vector = json.loads(path.read_text())
        out.append((vector["channel"], [bytes.fromhex(f) for f in vector["frames_hex"]]))
    return out


VECTOR_FRAMES = _vector_frames()
COMMAND_VECTORS = [frames for channel, frames in VECTOR_FRAMES if channel == "command"]
EVENT_VECTORS = [frames[0] for channel, frames in VECTOR_FRAMES if channel == "event" and frames]


def with_vectors(examples: list[Any]) -> Any:
    """Decorate a one-argument test with every golden vector as an explicit example."""

    def decorate(test: Any) -> Any:
        for value in examples:
            test = example(value)(test)
        return test

    return decorate


# --- strategies ----------------------------------------------------------------------------

# What msgpack carries: nil, bool, int (int64 to uint64), float (not NaN: it is not equal to
# itself), str, bin; arrays and maps with str keys.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
# Bytes large enough to travel as bulk frames, cheap to make.
bulk = st.tuples(st.integers(0, 255), st.integers(0, 16)).map(
    lambda t: bytes([t[0]]) * (BULK_THRESHOLD + t[1])
)
payloads = values | st.dictionaries(st.text(max_size=8), values | bulk, max_size=3) | bulk
names = st.text(min_size=1, max_size=20)
ttls = st.none() | st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
str_maps = st.dictionaries(st.text(max_size=8), values, max_size=4)


def mutated(frame: bytes) -> st.SearchStrategy[bytes]:
    """``frame`` with a byte changed, a cut, or bytes inserted: near-valid input."""
    size = len(frame)
    change = st.tuples(st.integers(0, max(size - 1, 0)), st.integers(0, 255)).map(
        lambda t: frame[: t[0]] + bytes([t[1]]) + frame[t[0] + 1 :]
    )
    cut = st.integers(0, size).map(lambda n: frame[:n])
    insert = st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=4)).map(
        lambda t: frame[: t[0]] + t[1] + frame[t[0] :]
    )
    return change | cut | insert


mutated_messages = (
    st.sampled_from(COMMAND_VECTORS)
    .filter(bool)
    .flatmap(lambda frames: mutated(frames[0]).map(lambda head: [head, *frames[1:]]))
)
# msgpack arrays that start like a header, so decoding gets past the first checks.
header_like = st.tuples(
    st.sampled_from([1, 1, 1, 2, 0, -1, 1.0, True, "1"]),
    st.sampled_from([*range(12), 1.0, "1", None]),
    st.lists(scalars, max_size=7),
).map(lambda t: msgpack.packb([t[0], t[1], *t[2]]))


def decode_only_documented_errors(frames: list[bytes]) -> None:
    try:
        message = protocol.decode(frames)
    except ERRORS:
        return
    with contextlib.suppress(ERRORS):
        message.value()


# --- decoding never fails but as documented -------------------------------------------------


@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_raises_only_protocol_errors(frame: bytes) -> None:
    decode_only_documented_errors([frame])
    protocol.error_msg_id(frame)


@given(st.lists(st.binary(max_size=60), max_size=4))
@with_vectors(COMMAND_VECTORS)
def test_decode_of_arbitrary_frame_lists_raises_only_protocol_errors(frames: list[bytes]) -> None:
    decode_only_documented_errors(frames)


@given(mutated_messages)
def test_decode_of_mutated_vectors_raises_only_protocol_errors(frames: list[bytes]) -> None:
    decode_only_documented_errors(frames)
    protocol.error_msg_id(frames[0])


@given(header_like, st.lists(st.binary(max_size=8), max_size=2))
def test_decode_of_header_shaped_arrays_raises_only_protocol_errors(
    header: bytes, bulk_frames: list[bytes]
) -> None:
    decode_only_documented_errors([header, *bulk_frames])


@given(st.binary(max_size=200) | st.sampled_from(EVENT_VECTORS).flatmap(mutated))
@with_vectors(EVENT_VECTORS)
def test_decode_event_of_arbitrary_bytes_raises_only_protocol_errors(frame: bytes) -> None:
    with contextlib.suppress(ERRORS):
        protocol.decode_event(frame)


@given(st.binary(max_size=200))
def test_unpack_of_arbitrary_payloads_raises_only_protocol_errors(data: bytes) -> None:
    for unpack in (protocol.unpack_small, protocol.unpack_value):
        with contextlib.suppress(ERRORS):
            unpack(data)


# --- round trips ------------------------------------------------------------------------------


def fast_path_agrees(frames: list[Any], message: protocol.Message) -> None:
    """``split`` and the decoder of the kind give what ``decode`` gave."""
    number, header = protocol.split(frames[0])
    assert number == message.kind
    if number == Kind.REQUEST:
        request = protocol.request_header(header, frames[0])
        assert (request.msg_id, request.service, request.command) == (
            message.msg_id,
            message.service,
            message.command,
        )
        assert request.payload == message.payload
    elif number in (Kind.REPLY, Kind.PROGRESS):
        assert protocol.reply_header(header).payload == message.payload


@given(names, names, names, ttls, st.dictionaries(st.text(max_size=8), values | bulk, max_size=3))
def test_request_round_trips(
    msg_id: str, service: str, command: str, ttl: float | None, args: dict[str, Any]
) -> None:
    frames = protocol.encode_request(msg_id, service, command, ttl, args)
    message = protocol.decode(frames)
    assert (message.kind, message.msg_id, message.service, message.command) == (
        Kind.REQUEST,
        msg_id,
        service,
        command,
    )
    assert message.ttl_s == (None if ttl is None else float(ttl))
    assert message.value() == args
    fast_path_agrees(frames, message)


@given(st.sampled_from([Kind.REPLY, Kind.PROGRESS]), names, payloads)
def test_reply_and_progress_round_trip(kind: Kind, msg_id: str, data: Any) -> None:
    encode = protocol.encode_reply if kind is Kind.REPLY else protocol.encode_progress
    frames = encode(msg_id, data)
    message = protocol.decode(frames)
    assert (message.kind, message.msg_id) == (kind, msg_id)
    assert message.value() == data
    # Large bytes travel as bulk frames, not inside the header.
    assert all(len(frame) < BULK_THRESHOLD for frame in frames[:1])
    fast_path_agrees(frames, message)


@given(names, st.text(max_size=20), st.text(max_size=60), st.none() | str_maps)
def test_error_round_trips(
    msg_id: str, code: str, text: str, details: dict[str, Any] | None
) -> None:
    message = protocol.decode(protocol.encode_error(msg_id, code, text, details))
    assert (message.kind, message.msg_id, message.code, message.text) == (
        Kind.ERROR,
        msg_id,
        code,
        text,
    )
    assert message.details == (details or {})


@given(names, names, str_maps, st.lists(st.integers(0, 2**32), max_size=4))
def test_control_messages_round_trip(
    msg_id: str, text: str, info: dict[str, Any], versions: list[int]
) -> None:
    cancel = protocol.decode(protocol.encode_cancel(msg_id))
    assert (cancel.kind, cancel.msg_id) == (Kind.CANCEL, msg_id)
    ready = protocol.decode(protocol.encode_ready(text, info))
    assert (ready.kind, ready.service, ready.info) == (Kind.READY, text, info)
    disconnect = protocol.decode(protocol.encode_disconnect(text))
    assert (disconnect.kind, disconnect.text) == (Kind.DISCONNECT, text)
    hello = protocol.decode(protocol.encode_hello(versions, info))
    assert (hello.kind, hello.versions, hello.info) == (Kind.HELLO, versions, info)
    assert protocol.decode(protocol.encode_heartbeat()).kind is Kind.HEARTBEAT


@given(
    st.text(max_size=30).filter(lambda t: "\0" not in t),
    names,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**53) | st.floats(allow_nan=False),
    values,
)
def test_event_round_trips(
    topic: str, src: str, epoch: int, seq: int, ts: float, data: Any
) -> None:
    event = protocol.decode_event(protocol.encode_event(topic, src, epoch, seq, ts, data))
    assert event == (topic, src, epoch, seq, ts, data)


@given(payloads)
def test_values_round_trip_through_pack_value(value: Any) -> None:
    data, frames = protocol.pack_value(value)
    assert protocol.unpack_value(data, frames) == value
