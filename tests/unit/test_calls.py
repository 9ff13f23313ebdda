"""The I/O-free client core (bus._calls): requests and the answers matched to them, and gap
detection on event streams."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from bus import _calls, protocol
from bus._calls import DEADLINE_GRACE_S, CallCore, CallState, GapTracker
from bus.errors import (
    BadRequest,
    BrokerUnreachable,
    Cancelled,
    DeadlineExceeded,
    DeviceFault,
    RemoteError,
    Unavailable,
)


@pytest.fixture
def core() -> CallCore:
    return CallCore(default_timeout_s=5.0)


def started(core: CallCore, **kwargs: Any) -> CallState:
    state, _ = core.request("fr1", "flash", {"path": "fw.frb"}, None, **kwargs)
    return state


class TestRequest:
    def test_frames_and_state(self, core: CallCore) -> None:
        """A request gets a unique id, the default ttl, and a local deadline past it."""
        state, frames = core.request("fr1", "flash", {"path": "fw.frb"}, None)
        other, _ = core.request("fr1", "flash", {}, 1.5)
        message = protocol.decode(frames)
        assert (message.msg_id, message.service, message.command) == (state.msg_id, "fr1", "flash")
        assert message.ttl_s == 5.0
        assert message.value() == {"path": "fw.frb"}
        assert state.msg_id != other.msg_id
        assert state.msg_id.split("-")[0] == other.msg_id.split("-")[0]
        assert other.deadline - state.deadline == pytest.approx(1.5 - 5.0, abs=0.05)
        assert set(core.pending) == {state.msg_id, other.msg_id}
        assert DEADLINE_GRACE_S > 0

    def test_timeout_must_be_positive(self, core: CallCore) -> None:
        """A zero or negative timeout fails at once, naming the call."""
        with pytest.raises(DeadlineExceeded, match=r"fr1\.flash: timeout must be positive"):
            core.request("fr1", "flash", {}, 0)


class TestDispatch:
    def test_reply(self, core: CallCore) -> None:
        """A REPLY ends its call with the result."""
        state = started(core)
        assert core.dispatch(protocol.encode_reply(state.msg_id, {"ok": True})) is state
        assert state.done and state.outcome() == {"ok": True}
        assert state.msg_id not in core.pending
        assert core.heard_from_broker

    def test_reply_with_bulk(self, core: CallCore) -> None:
        """A result that travelled as a bulk frame is put back together."""
        state = started(core)
        image = b"\x01" * protocol.BULK_THRESHOLD
        core.dispatch(protocol.encode_reply(state.msg_id, {"image": image}))
        assert state.outcome() == {"image": image}

    def test_reply_that_cannot_be_decoded(self, core: CallCore) -> None:
        """A REPLY whose result is not msgpack ends the call with bad_request."""
        state = started(core)
        core.dispatch([msgpack.packb([1, 3, state.msg_id, b"\xc1"])])
        assert state.done
        with pytest.raises(BadRequest):
            state.outcome()

    def test_error(self, core: CallCore) -> None:
        """An ERROR ends its call with the typed error, its message naming the call."""
        state = started(core)
        frames = protocol.encode_error(
            state.msg_id, "device_fault", "jammed", {"device_code": "E7"}
        )
        core.dispatch(frames)
        with pytest.raises(DeviceFault) as caught:
            state.outcome()
        assert caught.value.message == "fr1.flash: jammed"
        assert caught.value.details["device_code"] == "E7"

    def test_error_of_an_unknown_code(self, core: CallCore) -> None:
        """An error code this side does not know becomes a RemoteError."""
        state = started(core)
        core.dispatch(protocol.encode_error(state.msg_id, "printer_on_fire", "hot"))
        with pytest.raises(RemoteError):
            state.outcome()

    def test_malformed_error(self, core: CallCore) -> None:
        """An ERROR whose details are not a map ends the call with bad_request."""
        state = started(core)
        core.dispatch([msgpack.packb([1, 4, state.msg_id, "device_fault", "jammed", 7])])
        assert state.done
        with pytest.raises(BadRequest, match="details must be a map"):
            state.outcome()

    def test_error_with_bulk_frames_is_bad_request(self, core: CallCore) -> None:
        """An ERROR followed by bulk frames (which the broker routes unchecked) ends the call
        with bad_request, not with the code it names (§3: ERROR carries no bulk frames)."""
        state = started(core)
        core.dispatch([*protocol.encode_error(state.msg_id, "busy", "full"), b"xx"])
        with pytest.raises(BadRequest, match="ERROR carries no bulk frames, got 1"):
            state.outcome()

    def test_progress_is_kept_or_handed_over(self, core: CallCore) -> None:
        """PROGRESS is queued on the call, or given to its callback; the call goes on."""
        kept = started(core)
        seen: list[Any] = []
        handed = started(core, on_progress=seen.append)
        core.dispatch(protocol.encode_progress(kept.msg_id, {"done": 1}))
        core.dispatch(protocol.encode_progress(handed.msg_id, {"done": 2}))
        assert kept.progress == [{"done": 1}]
        assert seen == [{"done": 2}]
        assert not kept.done and not handed.done

    def test_malformed_progress_is_skipped(self, core: CallCore) -> None:
        """A PROGRESS that cannot be decoded is dropped; the call goes on."""
        state = started(core)
        assert core.dispatch([msgpack.packb([1, 2, state.msg_id, 5])]) is state
        assert core.dispatch([msgpack.packb([1, 2, state.msg_id, b"\xc1"])]) is state
        assert state.progress == [] and not state.done

    @pytest.mark.parametrize(
        "frames",
        [
            [b"\xc1"],
            protocol.encode_heartbeat(),
            protocol.encode_disconnect("broker stopping"),
            protocol.encode_reply("someone-else-1", 1),
        ],
        ids=["not-msgpack", "heartbeat", "disconnect", "unknown-id"],
    )
    def test_not_ours(self, core: CallCore, frames: list[Any]) -> None:
        """Frames that belong to no pending call are ignored."""
        state = started(core)
        assert core.dispatch(frames) is None
        assert not state.done and state.msg_id in core.pending


class TestExpiry:
    def test_no_broker_heard(self, core: CallCore) -> None:
        """A call that expires before anything came from the broker blames the connection."""
        state = started(core)
        core.expire(state, "tcp://127.0.0.1:7750")
        with pytest.raises(BrokerUnreachable, match="is it running"):
            state.outcome()
        assert state.msg_id not in core.pending

    def test_deadline(self, core: CallCore) -> None:
        """Once the broker has been heard, an expired call is deadline_exceeded."""
        state = started(core)
        core.dispatch(protocol.encode_heartbeat())
        core.expire(state, "tcp://127.0.0.1:7750")
        with pytest.raises(DeadlineExceeded):
            state.outcome()

    def test_unsent(self, core: CallCore) -> None:
        """A call that could not be sent is broker_unreachable, whatever was heard before."""
        state = started(core)
        core.dispatch(protocol.encode_heartbeat())
        core.expire(state, "tcp://127.0.0.1:7750", unsent=True)
        assert isinstance(state.error, BrokerUnreachable)

    def test_finished_calls_do_not_expire(self, core: CallCore) -> None:
        """Expiring a call that already ended changes nothing."""
        state = started(core)
        core.dispatch(protocol.encode_reply(state.msg_id, 1))
        core.expire(state, "tcp://127.0.0.1:7750")
        assert state.outcome() == 1

    def test_fail_all(self, core: CallCore) -> None:
        """Closing fails every pending call with the given error."""
        states = [started(core), started(core)]
        core.fail_all(lambda s: Cancelled(f"{s.msg_id} closed"))
        assert core.pending == {}
        for state in states:
            with pytest.raises(Cancelled, match=state.msg_id):
                state.outcome()


class TestConnectionLost:
    """Calls in flight when the connection to the broker closes fail with ``unavailable``
    (retryable) once a new handshake succeeds, or at their deadline; answered ones are kept."""

    def test_lost_calls_fail_on_reconnection(self, core: CallCore) -> None:
        answered, lost = started(core), started(core)
        answered.sent = lost.sent = True  # as the client marks what went out
        unsent = started(core)  # still waiting for a connection: not lost
        core.dispatch(protocol.encode_reply(answered.msg_id, 1))  # queued before the close
        core.connection_lost()
        assert not lost.done
        later = started(core)  # sent on the new connection: not lost
        core.reconnected("tcp://127.0.0.1:7750")
        with pytest.raises(Unavailable, match=r"fr1\.flash: the connection to the broker") as info:
            lost.outcome()
        assert info.value.retryable and info.value.details == {"endpoint": "tcp://127.0.0.1:7750"}
        assert answered.outcome() == 1
        assert (later.done, unsent.done, core.lost) == (False, False, set())

    def test_an_answer_before_the_reconnection_wins(self, core: CallCore) -> None:
        state = started(core)
        state.sent = True
        core.connection_lost()
        core.dispatch(protocol.encode_reply(state.msg_id, 2))
        core.reconnected("tcp://127.0.0.1:7750")
        assert state.outcome() == 2

    def test_a_lost_call_expires_as_unavailable(self, core: CallCore) -> None:
        """No reconnection before the deadline: unavailable, not deadline_exceeded."""
        state = started(core)
        state.sent = True
        core.dispatch(protocol.encode_heartbeat())
        core.connection_lost()
        core.expire(state, "tcp://127.0.0.1:7750")
        assert isinstance(state.error, Unavailable) and not core.lost


NewTracker = Callable[[], GapTracker]


@pytest.fixture(params=["speedups", "pure_python"])
def new_tracker(request: pytest.FixtureRequest) -> NewTracker:
    """A ``GapTracker`` maker: one with the C hot path (bus/_speedups.c), one in Python."""
    if request.param == "speedups" and _calls._SPEEDUPS is None:
        reason = "bus._speedups was not built (no C compiler when linebus was installed?)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # .ci/run installs gcc: the C path must be tested there
        pytest.skip(reason)
    return functools.partial(GapTracker, pure_python=request.param == "pure_python")


def event(topic: str, seq: int, *, epoch: int = 7, data: Any = None) -> bytes:
    return protocol.encode_event(topic, "src1", epoch, seq, 1.5, data)


class TestGapTracker:
    def test_consecutive_events(self, new_tracker: NewTracker) -> None:
        """Events in sequence are decoded with nothing missed."""
        tracker = new_tracker()
        decoded = [tracker.decode(event("a.t", seq, data=seq)) for seq in (1, 2, 3)]
        assert [(e.topic, e.src, e.seq, e.data, e.missed, e.epoch) for e in decoded if e] == [
            ("a.t", "src1", 1, 1, 0, 7),
            ("a.t", "src1", 2, 2, 0, 7),
            ("a.t", "src1", 3, 3, 0, 7),
        ]

    def test_gap_is_counted(self, new_tracker: NewTracker) -> None:
        """A jump in sequence reports the events missed before it, per topic."""
        tracker = new_tracker()
        tracker.decode(event("a.t", 1))
        tracker.decode(event("b.t", 1))
        later = tracker.decode(event("a.t", 5))
        assert later is not None and later.missed == 3
        assert tracker.missed_total == 3
        again = tracker.decode(event("a.t", 5))  # a repeat is not a gap
        assert again is not None and again.missed == 0

    @pytest.mark.parametrize("late", [2, 4, 5])
    def test_a_late_event_leaves_the_last_seen(self, new_tracker: NewTracker, late: int) -> None:
        """An event at or below the last seq seen (late or repeated) has missed 0 and does not
        lower the last seen: the next in order is not counted as a gap (§9)."""
        tracker = new_tracker()
        for seq in (1, 5):
            tracker.decode(event("a.t", seq))
        assert tracker.missed_total == 3
        again = tracker.decode(event("a.t", late))
        assert again is not None and (again.seq, again.missed) == (late, 0)
        following = tracker.decode(event("a.t", 6))
        assert following is not None and following.missed == 0
        assert tracker.missed_total == 3
        slow = tracker.decode(b"a.t\0" + msgpack.packb([1, 9, "src1", 7, late, 1.5, None, "x"]))
        assert slow is not None and slow.missed == 0  # the slow path (extra elements) agrees
        assert tracker.decode(event("a.t", 7)) is not None and tracker.missed_total == 3

    def test_new_epoch_starts_afresh(self, new_tracker: NewTracker) -> None:
        """A publisher that restarted (new epoch) starts a new count, not a gap."""
        tracker = new_tracker()
        tracker.decode(event("a.t", 40))
        restarted = tracker.decode(event("a.t", 1, epoch=8))
        assert restarted is not None and restarted.missed == 0
        assert tracker.missed_total == 0

    def test_probes_and_malformed_frames(self, new_tracker: NewTracker) -> None:
        """Subscription probes are not events; malformed frames are counted and skipped."""
        tracker = new_tracker()
        assert tracker.decode(event("_probe.x", 1)) is None
        assert tracker.decode(b"no separator") is None
        assert tracker.decode(b"a.t\0\xc1") is None
        assert tracker.decode(b"\xff\0" + event("x", 1).split(b"\0", 1)[1]) is None
        assert tracker.malformed == 3

    @pytest.mark.parametrize(
        "body",
        [
            [1, 9, "src1", 7, "2", 1.5, None],  # seq a str
            [1, 9, "src1", 7, -2, 1.5, None],  # negative seq
            [1, 9, "src1", 7, 2.0, 1.5, None],  # seq a float
            [1, 9, "src1", 7, 2, "1.5", None],  # ts a str
            [1, 9, "src1", -7, 2, 1.5, None],  # negative epoch
            [1, 9, 3, 7, 2, 1.5, None],  # src not a str
            [1, 9, "src1", 7, 2, True, None],  # ts a bool
            [True, 9, "src1", 7, 2, 1.5, None],  # version true
            [1, 9, "src1", 7, 2, 1.5, {1: "int key"}],
            [1, 9, "src1", 7, 2, 1.5, msgpack.ExtType(1, b"\0\0\0\1")],
            [1, 9, "src1", 7, 2, 1.5, msgpack.Timestamp(1)],
        ],
    )
    def test_ill_typed_bodies_are_malformed(self, new_tracker: NewTracker, body: list[Any]) -> None:
        """Bodies protocol.decode_event refuses are skipped and counted on the fast path too,
        even when their topic is already tracked (they never reach the seq arithmetic)."""
        tracker = new_tracker()
        tracker.decode(event("a.t", 1))
        assert tracker.decode(b"a.t\0" + msgpack.packb(body)) is None
        assert tracker.malformed == 1
        with pytest.raises(BadRequest):
            protocol.decode_event(b"a.t\0" + msgpack.packb(body))
        assert tracker.decode(event("a.t", 2)) is not None and tracker.missed_total == 0

    def test_a_longer_encoding_of_the_same_values_is_decoded(self, new_tracker: NewTracker) -> None:
        """msgpack allows longer forms than the shortest (an encoder may write every int in 8
        bytes): the body then does not start with the publisher's stored head, and the event
        is decoded and tracked by the full path, gaps included."""
        tracker = new_tracker()
        tracker.decode(event("a.t", 1))
        head = b"\x97\x01\x09\xa4src1\xcf" + (7).to_bytes(8, "big")  # epoch 7 as a uint 64
        for seq, missed in ((2, 0), (4, 1)):
            rest = b"\xcf" + seq.to_bytes(8, "big") + msgpack.packb(1.5) + msgpack.packb("x")
            decoded = tracker.decode(b"a.t\0" + head + rest)
            assert decoded is not None
            assert (decoded.seq, decoded.epoch, decoded.data, decoded.missed) == (
                seq,
                7,
                "x",
                missed,
            )
        assert tracker.decode(event("a.t", 5)) is not None and tracker.missed_total == 1

    def test_newer_minor_version_goes_the_slow_way(self, new_tracker: NewTracker) -> None:
        """An event body with extra trailing elements is still decoded and tracked."""
        tracker = new_tracker()
        tracker.decode(event("a.t", 1))
        body = msgpack.packb([1, 9, "src1", 7, 3, 1.5, "data", "extra"])
        later = tracker.decode(b"a.t\0" + body)
        assert later is not None
        assert (later.seq, later.data, later.missed) == (3, "data", 1)
        assert tracker.missed_total == 1
