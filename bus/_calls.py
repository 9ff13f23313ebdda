"""The I/O-free core shared by the sync and asyncio clients: request ids, call state, decoding
of answers into results or typed errors, and gap detection on event streams.

Imports only msgpack, ``bus.protocol`` and ``bus.errors``, like every client module.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from bus import protocol
from bus.errors import BadRequest, BusError, DeadlineExceeded, from_wire
from bus.protocol import Event, Kind

__all__ = ["CallCore", "CallState", "GapTracker", "TrackedEvent"]

_REPLY = int(Kind.REPLY)
_ERROR = int(Kind.ERROR)
_PROGRESS = int(Kind.PROGRESS)
_unpackb = msgpack.unpackb

#: Extra time a client waits past a request's deadline for the broker's own typed answer.
DEADLINE_GRACE_S = 0.25

ProgressCallback = Callable[[Any], None]


class CallState:
    """One request in flight: its deadline, progress updates, and finally a result or an error."""

    __slots__ = ("deadline", "done", "error", "msg_id", "on_progress", "progress", "result", "service", "command")

    def __init__(self, msg_id: str, service: str, command: str, deadline: float, on_progress: ProgressCallback | None) -> None:
        self.msg_id = msg_id
        self.service = service
        self.command = command
        self.deadline = deadline
        self.on_progress = on_progress
        self.progress: list[Any] = []
        self.done = False
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
        state = CallState(msg_id, service, command, time.monotonic() + ttl + DEADLINE_GRACE_S, on_progress)
        self.pending[msg_id] = state
        return state, frames

    def dispatch(self, frames: list[Any]) -> CallState | None:
        """Apply one received message to its call; return the call, or None if it is not ours."""
        self.heard_from_broker = True
        try:
            header = _unpackb(frames[0])
            kind = header[1]
            msg_id = header[2]
        except Exception:  # a malformed frame from the broker is dropped, not fatal
            return None
        state = self.pending.get(msg_id)
        if state is None:
            return None
        if kind == _REPLY:
            payload = header[3]
            state.result = (
                protocol.unpack_value(payload, frames[1:])
                if len(frames) > 1
                else (_unpackb(payload, strict_map_key=False) if payload else None)
            )
            state.done = True
            del self.pending[msg_id]
        elif kind == _ERROR:
            details = header[5] if len(header) > 5 and isinstance(header[5], dict) else {}
            state.error = from_wire(str(header[3]), f"{state.service}.{state.command}: {header[4]}", details)
            state.done = True
            del self.pending[msg_id]
        elif kind == _PROGRESS:
            try:
                update = protocol.unpack_value(header[3], frames[1:])
            except BadRequest:
                return state
            if state.on_progress is not None:
                state.on_progress(update)
            else:
                state.progress.append(update)
        return state

    def expire(self, state: CallState, endpoint: str) -> None:
        """Fail ``state`` locally: its deadline (plus grace) passed with no answer at all."""
        if state.done:
            return
        self.pending.pop(state.msg_id, None)
        state.done = True
        if not self.heard_from_broker:
            from bus.errors import BrokerUnreachable

            state.error = BrokerUnreachable(
                f"{state.service}.{state.command}: no answer from the broker at {endpoint}; is it running?",
                details={"endpoint": endpoint},
            )
        else:
            state.error = DeadlineExceeded(
                f"{state.service}.{state.command}: no answer before the deadline", details={"msg_id": state.msg_id}
            )

    def fail_all(self, error_factory: Callable[[CallState], BusError]) -> None:
        """Fail every pending call (client closing)."""
        for state in list(self.pending.values()):
            state.error = error_factory(state)
            state.done = True
        self.pending.clear()


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    """An event as a subscriber sees it: ``missed`` counts events lost just before it on its
    topic from its publisher (0 normally), so the subscriber can backfill from history."""

    topic: str
    src: str
    seq: int
    ts: float
    data: Any
    missed: int = 0
    epoch: int = 0


class GapTracker:
    """Detects lost events from the per-(publisher, topic) sequence numbers."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[int, int]] = {}
        self.missed_total = 0

    def track(self, event: Event) -> TrackedEvent:
        """Return the event with the number of events missed before it."""
        key = (event.src, event.topic)
        last = self._last.get(key)
        missed = 0
        if last is not None and last[0] == event.epoch and event.seq > last[1] + 1:
            missed = event.seq - last[1] - 1
            self.missed_total += missed
        self._last[key] = (event.epoch, event.seq)
        return TrackedEvent(event.topic, event.src, event.seq, event.ts, event.data, missed, event.epoch)
