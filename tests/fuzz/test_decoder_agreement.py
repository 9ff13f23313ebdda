"""The C hot path of the subscriber's decoding (bus/_speedups.c) and the Python one agree
(hypothesis): any stream of event frames (in sequence, with gaps, repeats, another publisher on
the same topic, a restarted one, extra trailing elements, longer encodings of the same values,
timestamps in the data, garbage) gives the same events, the same counters and the same state
from both ``GapTracker`` implementations.

Profiles: tests/fuzz/conftest.py.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus import _calls, protocol
from bus._calls import GapTracker

pytestmark = pytest.mark.skipif(
    _calls._SPEEDUPS is None and not os.environ.get("CI"),
    reason="bus._speedups was not built (no C compiler when linebus was installed?)",
)

_TOPICS = ["a.t", "b.t", "_probe.x"]
_PUBLISHERS = [("s1", 7), ("s1", 8), ("s2", 2**40), ("s3", 0)]
_DATA = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.dictionaries(st.text(max_size=3), st.integers(0, 300), max_size=3),
    st.just(msgpack.Timestamp(1)),
    st.just({"when": msgpack.Timestamp(5, 7)}),
)


def _long_uint(value: int) -> bytes:
    return b"\xcf" + value.to_bytes(8, "big")


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One event frame, well formed or not."""
    topic = draw(st.sampled_from(_TOPICS))
    src, epoch = draw(st.sampled_from(_PUBLISHERS))
    seq = draw(st.one_of(st.integers(0, 8), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, -1])))
    ts = draw(st.sampled_from([1.5, 3, True, "x"]))
    data = draw(_DATA)
    shape = draw(st.sampled_from(["plain", "plain", "plain", "extra", "long", "garbage", "cut"]))
    prefix = topic.encode() + b"\0"
    if shape == "extra":
        return prefix + msgpack.packb([1, 9, src, epoch, seq, ts, data, "newer"])
    if shape == "long" and seq >= 0:
        head = b"\x97\x01\x09" + msgpack.packb(src) + _long_uint(epoch)
        return prefix + head + _long_uint(seq) + msgpack.packb(ts) + msgpack.packb(data)
    body = msgpack.packb([1, 9, src, epoch, seq, ts, data])
    if shape == "garbage":
        return prefix + draw(st.binary(max_size=12)) + body[draw(st.integers(0, len(body))) :]
    if shape == "cut":
        return prefix + body[: draw(st.integers(0, len(body)))]
    return prefix + body


def _outcome(tracker: GapTracker, stream: list[bytes]) -> tuple[Any, ...]:
    decoded = [tracker.decode(frame) for frame in stream]
    return decoded, tracker.missed_total, tracker.malformed, tracker._last


@given(st.lists(frames(), max_size=40))
def test_the_c_and_python_paths_agree(stream: list[bytes]) -> None:
    """Same events, counters and per-topic state from both implementations."""
    assert _calls._SPEEDUPS is not None, "bus._speedups was not built (CI installs gcc)"
    in_c = _outcome(GapTracker(), stream)
    in_python = _outcome(GapTracker(pure_python=True), stream)
    assert in_c == in_python


def test_a_run_in_sequence_takes_the_c_path() -> None:
    """The agreement above is not vacuous: consecutive events of a tracked topic are decoded
    without calling the Python fallback at all."""
    assert _calls._SPEEDUPS is not None, "bus._speedups was not built (CI installs gcc)"
    calls = []
    tracker = GapTracker()
    first = protocol.encode_event("a.t", "s1", 7, 1, 1.5, {"v": 1})
    tracker.decode(first)
    decoder = _calls._SPEEDUPS.Decoder(tracker._last, lambda frame: calls.append(frame))
    for seq in range(2, 6):
        event = decoder.decode(protocol.encode_event("a.t", "s1", 7, seq, 1.5, {"v": seq}))
        assert event is not None and (event.seq, event.data, event.missed) == (seq, {"v": seq}, 0)
    assert calls == []
    decoder.decode(protocol.encode_event("a.t", "s1", 7, 9, 1.5, None))  # a gap: the full path
    assert len(calls) == 1
