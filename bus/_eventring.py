"""An actor's memory of its recent events, per topic, for subscribers that repair a gap.

Each topic keeps a ring of its last ``size`` events as ``(seq, ts, data, common)``: the Python
objects the actor published, not their encoding, so keeping an event costs one tuple and one
deque append, also for an event nobody subscribed to (a subscriber whose subscription was still
travelling, or was being renewed after a broker restart, may be the one that needs it).
``common`` is ``publish_many``'s shared map (None for ``publish``): merged only when replayed.

Bounded memory: at most ``size`` events per topic (the oldest falls out as a new one comes in),
and only events younger than ``age_s`` are replayed. An actor's data must therefore not be
mutated after it is published (the runtime never copies it), which is the rule anyway for a
value handed to another task.

``replay`` answers the built-in ``replay`` command (PROTOCOL.md §9, "Repairing a gap"): the
events with ``after < seq < before``, or ``TooOld`` when the first of them is no longer kept.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from bus.errors import InvalidArguments, TooOld

__all__ = ["DEFAULT_RING_AGE_S", "DEFAULT_RING_SIZE", "EventRing", "RingEntry"]

#: Events kept per topic by default; 0 keeps none (every repair is answered ``too_old``).
DEFAULT_RING_SIZE: Final = 1000
#: Events older than this (seconds) are not replayed by default.
DEFAULT_RING_AGE_S: Final = 60.0

#: ``(seq, ts, data, common)``; data is ``{**common, **data}`` when common is not None.
RingEntry = tuple[int, float, Any, Mapping[str, Any] | None]


class EventRing:
    """The recent events of one topic; see the module docstring.

    Args:
        size: Events kept (≥ 0).
        age_s: Events older than this are not replayed (> 0).
    """

    __slots__ = ("_entries", "age_s")

    def __init__(self, size: int = DEFAULT_RING_SIZE, age_s: float = DEFAULT_RING_AGE_S) -> None:
        if size < 0:
            raise ValueError(f"event ring size must be ≥ 0, not {size}")
        if not age_s > 0:
            raise ValueError(f"event ring age must be > 0 s, not {age_s}")
        self._entries: deque[RingEntry] = deque(maxlen=size)
        self.age_s = age_s

    @property
    def size(self) -> int:
        """How many events the ring keeps at most."""
        return self._entries.maxlen or 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, entry: RingEntry) -> None:
        """Keep one event (the oldest falls out when the ring is full)."""
        self._entries.append(entry)

    def extend(self, entries: Any) -> None:
        """Keep consecutive events, given in order as an iterable of ``RingEntry``."""
        self._entries.extend(entries)

    def entries(self) -> list[RingEntry]:
        """The events kept, oldest first."""
        return list(self._entries)

    def oldest(self, now: float | None = None) -> int | None:
        """The sequence number of the oldest event still replayable, or None if none is."""
        self._expire(time.time() if now is None else now)
        return self._entries[0][0] if self._entries else None

    def _expire(self, now: float) -> None:
        entries, limit = self._entries, now - self.age_s
        while entries and entries[0][1] < limit:
            entries.popleft()

    def replay(self, topic: str, after: int, before: int) -> list[list[Any]]:
        """The events with ``after < seq < before``, oldest first, each as ``[seq, ts, data]``.

        A sequence number inside the range that the ring never held (the actor published a
        lazy ``publish_many`` nobody heard) is absent from the answer: the caller counts it lost.

        Raises:
            InvalidArguments: ``after`` is negative or ``before`` is not above it.
            TooOld: ``after + 1`` is no longer kept (fell out by size or age, or was never
                published); ``details["oldest"]`` is the oldest seq still kept (None: none), so
                the caller can ask again from there.
        """
        if after < 0:
            raise InvalidArguments.about(
                f"after must be ≥ 0, not {after}", argument="after", problem="value", expected="≥ 0"
            )
        if before <= after:
            raise InvalidArguments.about(
                f"before ({before}) must be greater than after ({after})",
                argument="before",
                problem="value",
                expected="> after",
            )
        oldest = self.oldest()
        if oldest is None or oldest > after + 1:
            raise TooOld(
                f"{topic}: events from seq {after + 1} are no longer kept"
                + (f" (oldest kept: {oldest})" if oldest is not None else " (none kept)"),
                details={"topic": topic, "oldest": oldest},
            )
        found: list[list[Any]] = []
        for seq, ts, data, common in self._entries:
            if seq <= after:
                continue
            if seq >= before:
                break
            found.append([seq, ts, data if common is None else {**common, **data}])
        return found
