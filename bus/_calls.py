"""The I/O-free core shared by the sync and asyncio clients: request ids, call state, decoding
of answers into results or typed errors, gap detection on event streams, and the steps of
repairing a gap (``GapRepair``).

Imports only msgpack, ``bus.protocol`` and ``bus.errors``, like every client module.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

from bus import protocol
from bus.errors import (
    BadRequest,
    BrokerUnreachable,
    BusError,
    DeadlineExceeded,
    TooOld,
    Unavailable,
    from_wire,
)
from bus.protocol import Event, Kind

__all__ = ["CallCore", "CallState", "GapRepair", "GapTracker", "LossReport", "TrackedEvent"]

_REPLY = int(Kind.REPLY)
_ERROR = int(Kind.ERROR)
_PROGRESS = int(Kind.PROGRESS)
_split = protocol.split
_peek_msg_id = protocol.peek_msg_id
_reply_header = protocol.reply_header
_unpackb = msgpack.unpackb  # event bodies only (GapTracker.decode's fast path)
_no_ext = protocol.no_ext_hook
_event_fields_ok = protocol.event_fields_ok
_has_timestamp = protocol.has_timestamp
_event_body_head = protocol.event_body_head
#: A body head no frame starts with (0xc1 is never used in msgpack): state not yet fast.
_NO_HEAD = b"\xc1"

#: Extra time a client waits past a request's deadline for the broker's own typed answer.
DEADLINE_GRACE_S = 0.25

ProgressCallback = Callable[[Any], None]


class CallState:
    """One request in flight: its deadline, progress updates, and finally a result or an error."""

    __slots__ = (
        "command",
        "deadline",
        "done",
        "error",
        "msg_id",
        "on_progress",
        "progress",
        "result",
        "sent",
        "service",
    )

    def __init__(
        self,
        msg_id: str,
        service: str,
        command: str,
        deadline: float,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.msg_id = msg_id
        self.service = service
        self.command = command
        self.deadline = deadline
        self.on_progress = on_progress
        self.progress: list[Any] = []
        self.done = False
        #: The request went out on a connection (set by the client that sent it).
        self.sent = False
        self.result: Any = None
        self.error: BusError | None = None

    def outcome(self) -> Any:
        """Return the result or raise the error; only valid once ``done``."""
        if self.error is not None:
            raise self.error
        return self.result


class CallCore:
    """Builds requests and matches every answer to the call it belongs to."""

    def __init__(self, default_timeout_s: float) -> None:
        self.default_timeout_s = default_timeout_s
        self._prefix = protocol.new_id_prefix()
        self._counter = itertools.count(1)
        self.pending: dict[str, CallState] = {}
        self.heard_from_broker = False
        #: Calls that were in flight when the connection to the broker closed: no answer can
        #: reach them on a new connection (see ``connection_lost``).
        self.lost: set[str] = set()

    def request(
        self,
        service: str,
        command: str,
        args: dict[str, Any],
        timeout: float | None,
        on_progress: ProgressCallback | None = None,
    ) -> tuple[CallState, list[Any]]:
        """Register a new call and return it with the frames to send."""
        ttl = self.default_timeout_s if timeout is None else timeout
        if ttl <= 0:
            raise DeadlineExceeded(f"{service}.{command}: timeout must be positive, got {ttl}")
        msg_id = f"{self._prefix}-{next(self._counter)}"
        frames = protocol.encode_request(msg_id, service, command, ttl, args)
        state = CallState(
            msg_id, service, command, time.monotonic() + ttl + DEADLINE_GRACE_S, on_progress
        )
        self.pending[msg_id] = state
        return state, frames

    def notice(self, service: str, command: str, args: dict[str, Any], ttl: float) -> list[Any]:
        """The frames of a request nobody waits for: its answer, as any answer with an unknown
        ``msg_id``, is dropped on arrival (``dispatch`` returns None)."""
        return protocol.encode_request(
            f"{self._prefix}-{next(self._counter)}", service, command, ttl, args
        )

    def dispatch(self, frames: list[Any]) -> CallState | None:
        """Apply one received message to its call; return the call, or None if it is not ours."""
        self.heard_from_broker = True
        try:
            kind, header = _split(frames[0])
        except BusError:  # a malformed frame from the broker is dropped, not fatal
            return None
        msg_id = _peek_msg_id(header)
        state = self.pending.get(msg_id) if msg_id is not None else None
        if state is None:
            return None
        if kind == _REPLY:
            try:
                payload = _reply_header(header).payload
                state.result = (
                    protocol.unpack_value(payload, frames[1:])
                    if len(frames) > 1
                    else protocol.unpack_small(payload)
                )
            except BadRequest as exc:
                state.error = exc
            state.done = True
            del self.pending[state.msg_id]
        elif kind == _ERROR:
            try:
                error = protocol.error_header(header)
                if len(frames) > 1:  # the broker routes answers unchecked (PROTOCOL.md §3)
                    raise protocol.bulk_not_allowed(kind, len(frames) - 1)
            except BadRequest as exc:
                state.error = exc
            else:
                state.error = from_wire(
                    error.code, f"{state.service}.{state.command}: {error.message}", error.details
                )
            state.done = True
            del self.pending[state.msg_id]
        elif kind == _PROGRESS:
            try:
                update = protocol.unpack_value(_reply_header(header).payload, frames[1:])
            except BadRequest:
                return state
            if state.on_progress is not None:
                state.on_progress(update)
            else:
                state.progress.append(update)
        return state

    def connection_lost(self) -> None:
        """The connection to the broker closed (it stopped, restarted, or dropped us): the calls
        in flight now (sent, ``CallState.sent``; one still waiting for a connection is not)
        can never be answered. They fail once the next handshake ends (success:
        ``unavailable``, retryable; refusal: that refusal) or at their deadline
        (``unavailable``), not with ``deadline_exceeded``: a caller that retries what is
        retryable rides out a broker restart (docs/PROTOCOL.md §8)."""
        self.lost.update(msg_id for msg_id, state in self.pending.items() if state.sent)

    def reconnected(self, endpoint: str) -> None:
        """A handshake with the broker succeeded: fail the calls lost with the old connection."""
        lost, self.lost = self.lost, set()
        for msg_id in lost:
            state = self.pending.get(msg_id)
            if state is not None:
                self.fail(state, self._lost_error(state, endpoint))

    @staticmethod
    def _lost_error(state: CallState, endpoint: str) -> Unavailable:
        return Unavailable(
            f"{state.service}.{state.command}: the connection to the broker at {endpoint} closed"
            " before the answer (the broker stopped or restarted); the request may have run",
            details={"endpoint": endpoint},
        )

    def expire(self, state: CallState, endpoint: str, *, unsent: bool = False) -> None:
        """Fail ``state`` locally: its deadline (plus grace) passed with no answer at all, or
        (``unsent``) with no connection to send it on."""
        if state.done:
            return
        self.pending.pop(state.msg_id, None)
        state.done = True
        if state.msg_id in self.lost:
            self.lost.discard(state.msg_id)
            state.error = self._lost_error(state, endpoint)
        elif unsent or not self.heard_from_broker:
            state.error = BrokerUnreachable(
                f"{state.service}.{state.command}: no answer from the broker at {endpoint}; is it running?",
                details={"endpoint": endpoint},
            )
        else:
            state.error = DeadlineExceeded(
                f"{state.service}.{state.command}: no answer before the deadline",
                details={"msg_id": state.msg_id},
            )

    def fail(self, state: CallState, error: BusError) -> None:
        """Fail ``state`` locally with ``error`` (the broker refused our connection, say)."""
        if state.done:
            return
        self.pending.pop(state.msg_id, None)
        state.done = True
        state.error = error

    def fail_every(self, error: BusError) -> None:
        """Fail every pending call with the same ``error`` (the broker refused the connection)."""
        self.fail_all(lambda _: error)

    def fail_all(self, error_factory: Callable[[CallState], BusError]) -> None:
        """Fail every pending call (client closing)."""
        for state in list(self.pending.values()):
            state.error = error_factory(state)
            state.done = True
        self.pending.clear()


class TrackedEvent(NamedTuple):
    """An event as a subscriber sees it: ``missed`` counts events lost just before it on its
    topic from its publisher (0 normally), so the subscriber can backfill from history."""

    topic: str
    src: str
    seq: int
    ts: float
    data: Any
    missed: int = 0
    epoch: int = 0


def _speedups() -> Any:
    """``bus._speedups``, the C version of ``GapTracker``'s hot path, when it was built (see
    setup.py) and ``LINEBUS_PURE_PYTHON`` is not set; else None."""
    if os.environ.get("LINEBUS_PURE_PYTHON"):
        return None
    try:
        from bus import _speedups as speedups
    except ImportError:
        return None
    kwargs = {"strict_map_key": True, "ext_hook": _no_ext}  # as in _next_or_decode
    speedups.configure(_unpackb, kwargs, _has_timestamp, TrackedEvent)
    return speedups


_SPEEDUPS = _speedups()


class GapTracker:
    """Decodes event frames and detects lost events from their per-(publisher, topic) sequence.

    State is kept per topic. Each publisher picks a random epoch when it starts, so a change of
    epoch (another publisher, or the same one restarted) starts the count afresh instead of
    reporting a gap.

    ``decode(frame)`` decodes one event frame and accounts for gaps; it returns None for
    probes and (counted) malformed frames. Its hot path is in C when ``bus._speedups`` was
    built, unless ``pure_python`` (or ``LINEBUS_PURE_PYTHON`` in the environment): the same
    rules either way, the tests run both.
    """

    def __init__(self, *, pure_python: bool = False) -> None:
        # topic bytes -> [topic str, epoch, last seq, body head]; mutated in place (hot path).
        # The body head is ``protocol.event_body_head(src, epoch)`` of the topic's publisher.
        self._last: dict[bytes, list[Any]] = {}
        self.missed_total = 0
        self.malformed = 0
        self.decode: Callable[[bytes], TrackedEvent | None] = (
            self._next_or_decode
            if _SPEEDUPS is None or pure_python
            else _SPEEDUPS.Decoder(self._last, self._decode).decode
        )

    def _next_or_decode(self, frame: bytes) -> TrackedEvent | None:
        """``decode`` in Python (bus/_speedups.c does the same)."""
        # The hot path: the next event of a topic from the publisher seen last on it. Its body
        # starting with that publisher's head (array of 7, version 1, kind 9, src, epoch: the
        # checks of protocol.decode_event on those four, made when the head was stored) leaves
        # seq, ts and data to check. Anything else takes the full path below.
        sep = frame.find(b"\0")
        if sep >= 0:
            state = self._last.get(frame[:sep])
            if state is not None and frame.startswith(state[3], sep + 1):
                try:
                    # As protocol.decode_event unpacks a body: str map keys, no ext value.
                    body = _unpackb(frame[sep + 1 :], strict_map_key=True, ext_hook=_no_ext)
                except Exception:  # malformed: counted by the full path
                    return self._decode(frame)
                seq = body[4]
                ts = body[5]
                data = body[6]
                if (
                    type(seq) is int
                    and seq == state[2] + 1
                    and (type(ts) is float or type(ts) is int)
                    and (0xFF not in frame or not _has_timestamp(frame, data))
                ):
                    state[2] = seq
                    return _new_tuple(TrackedEvent, (state[0], body[2], seq, ts, data, 0, body[3]))
        return self._decode(frame)

    def _decode(self, frame: bytes) -> TrackedEvent | None:
        """``decode`` of any frame: the first of a topic or publisher incarnation, a gap, a late
        event, a newer minor version, a malformed frame."""
        sep = frame.find(b"\0")
        try:
            body = _unpackb(frame[sep + 1 :], strict_map_key=True, ext_hook=_no_ext)
        except Exception:  # a malformed event is skipped, never fatal to a subscriber
            body = None
        if (
            sep < 0
            or type(body) is not list
            or len(body) != 7
            or body[1] != 9
            or body[0] != 1
            or type(body[0]) is not int
            or type(body[1]) is not int
        ):
            return self._slow(frame)
        _, _, src, epoch, seq, ts, data = body
        if not _event_fields_ok(src, epoch, seq, ts) or _has_timestamp(frame, data):
            return self._slow(frame)  # which counts it as malformed
        key = frame[:sep]
        state = self._last.get(key)
        if state is not None and state[1] == epoch:
            # The same publisher incarnation (epochs are random per publisher start).
            last_seq = state[2]
            if state[3] is _NO_HEAD:  # tracked from an event decoded by ``_slow``
                state[3] = _event_body_head(src, epoch)
            if seq <= last_seq:  # late or repeated: the last seen stays (PROTOCOL.md §9)
                return _new_tuple(TrackedEvent, (state[0], src, seq, ts, data, 0, epoch))
            state[2] = seq
            missed = seq - last_seq - 1
            self.missed_total += missed
            return _new_tuple(TrackedEvent, (state[0], src, seq, ts, data, missed, epoch))
        if key.startswith(b"_probe."):
            return None  # subscription probes (wait_ready) are not events of the line
        try:
            topic = key.decode()
        except UnicodeDecodeError:
            self.malformed += 1
            return None
        self._last[key] = [topic, epoch, seq, _event_body_head(src, epoch)]
        return _new_tuple(TrackedEvent, (topic, src, seq, ts, data, 0, epoch))

    def _slow(self, frame: bytes) -> TrackedEvent | None:
        """Frames with extra trailing elements (a newer minor version) or errors."""
        try:
            event = protocol.decode_event(frame)
        except BadRequest:
            self.malformed += 1
            return None
        return self.track(event)

    def track(self, event: Event) -> TrackedEvent:
        """Return an already decoded event with the number of events missed before it."""
        topic, src, epoch, seq, ts, data = event
        key = topic.encode()
        state = self._last.get(key)
        missed = 0
        if state is not None and state[1] == epoch:
            if seq <= state[2]:  # late or repeated: the last seen stays (PROTOCOL.md §9)
                return TrackedEvent(topic, src, seq, ts, data, 0, epoch)
            missed = seq - state[2] - 1
            self.missed_total += missed
        # No body head: events reaching ``track`` may come from elsewhere than a frame (a
        # replay's answer); ``_decode`` sets it from the next frame of this incarnation.
        self._last[key] = [topic, epoch, seq, _NO_HEAD]
        return TrackedEvent(topic, src, seq, ts, data, missed, epoch)


_new_tuple = tuple.__new__


class GapRepair:
    """The steps of repairing one gap, without I/O (PROTOCOL.md §9, "Repairing a gap").

    ``event`` arrived with ``missed`` > 0. While ``args()`` is not None, call the built-in
    ``replay`` of ``event.src`` with those arguments and hand the outcome to ``take``; then
    ``events()`` is what to deliver: the recovered events in order, then ``event``, each with
    ``missed`` set to how many events just before it are lost for good.

    A ``too_old`` answer whose ``oldest`` falls inside the gap asks again from there (the start
    of the gap is lost, the rest may not be); any other error loses the rest of the gap.
    """

    #: Calls one repair may make: the first, and one per ``too_old`` that moves the start on.
    MAX_CALLS = 3

    def __init__(self, event: TrackedEvent) -> None:
        self.event = event
        self._first = event.seq - event.missed - 1  # the last seq received before the gap
        self._after: int | None = self._first
        self._calls = 0
        self._found: list[tuple[int, float, Any]] = []
        if event.src == protocol.BROKER_SERVICE:
            self._after = None  # the broker keeps no events: nothing to ask

    @property
    def recovered(self) -> int:
        """Events recovered so far."""
        return len(self._found)

    def args(self) -> dict[str, Any] | None:
        """The arguments of the next ``replay`` call, or None when the repair is over."""
        if self._after is None or self._calls >= self.MAX_CALLS:
            return None
        event = self.event
        return {
            "topic": event.topic,
            "epoch": event.epoch,
            "after": self._after,
            "before": event.seq,
        }

    def take(self, result: Any = None, error: BusError | None = None) -> None:
        """Take the answer to the call ``args()`` described: its result, or the error it raised."""
        after, before = self._after, self.event.seq
        self._after = None
        self._calls += 1
        if after is None:
            return
        if error is not None:
            oldest = error.details.get("oldest") if isinstance(error, TooOld) else None
            if type(oldest) is int and after + 1 < oldest < before:
                self._after = oldest - 1
            return
        last = after
        for item in result if isinstance(result, list) else ():
            # Only well-formed events of the gap, in increasing order, are believed.
            if not (isinstance(item, list) and len(item) >= 3):
                continue
            seq, ts = item[0], item[1]
            if type(seq) is int and last < seq < before and type(ts) in (int, float):
                self._found.append((seq, float(ts), item[2]))
                last = seq

    def events(self) -> list[TrackedEvent]:
        """The recovered events then the live one, each with the count lost just before it."""
        event = self.event
        out = []
        prev = self._first
        for seq, ts, data in self._found:
            out.append(
                TrackedEvent(event.topic, event.src, seq, ts, data, seq - prev - 1, event.epoch)
            )
            prev = seq
        out.append(event._replace(missed=event.seq - prev - 1))
        return out


class LossReport:
    """When a subscription tells the broker what it missed (``report_subscriber``, PROTOCOL.md
    §13), without I/O: after a gap, at most every ``EVERY_S``; when idle; when it closes.

    ``args`` gives the report to send now, or None (nothing new, or too soon); after sending it
    call ``sent``. The broker shows the last report of each subscriber in ``stats``.
    """

    EVERY_S = 1.0

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.subscriber = protocol.new_id_prefix()
        self.prefixes = list(prefixes)
        self._sent = (0, 0)
        self._at = float("-inf")

    def args(self, missed: int, repaired: int, *, now: bool = False) -> dict[str, Any] | None:
        """The report to send, if the counts changed since the last one and it is time (``now``:
        whatever the time)."""
        if (missed, repaired) == self._sent:
            return None
        if not now and time.monotonic() - self._at < self.EVERY_S:
            return None
        return {
            "subscriber": self.subscriber,
            "prefixes": self.prefixes,
            "missed": missed,
            "repaired": repaired,
        }

    def sent(self, args: dict[str, Any]) -> None:
        """The report ``args`` went out."""
        self._sent = (args["missed"], args["repaired"])
        self._at = time.monotonic()
