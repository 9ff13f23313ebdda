"""Bounded logging of rejected input: the first lines of a window, then one summary with counts.

Anyone who can reach a port can send garbage, and a log line per rejected message lets them fill
the disk (100 000 malformed messages once wrote 16 MB of warnings). ``RejectLog`` logs the first
``limit`` rejections of each ``window_s`` in full, counts the rest by reason, and once the window
is over writes one line::

    rejected_input_suppressed  suppressed=99812  reasons={"malformed": 99800, "too_large": 12}
                               message="suppressed 99812 similar messages: malformed=99800, ..."

so the log grows by at most ``limit + 1`` lines per window whatever arrives. Reasons are meant to
be a small fixed vocabulary (the broker's drop reasons); past ``max_reasons`` distinct ones, new
reasons are counted as ``other`` so that hostile text cannot grow the table.

The clock is injectable (``time.monotonic`` by default), so tests need no sleeping. Not
thread-safe: use one per thread (the broker's loop owns its own).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["RejectLog", "SummarizingLimiter", "Suppressed"]

_OTHER = "other"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """What a window did not log: how many lines, by reason."""

    count: int
    reasons: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0

    def message(self) -> str:
        """``suppressed K similar messages: reason=n, ...`` (reasons by decreasing count)."""
        counts = ", ".join(
            f"{reason}={n}" for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])
        )
        return f"suppressed {self.count} similar messages: {counts}"


class SummarizingLimiter:
    """Lets ``limit`` hits through per window of ``window_s`` and counts the rest by reason.

    A window opens at the first hit after the previous one closed, so a quiet limiter costs
    nothing and a burst always gets its first ``limit`` lines.

    Args:
        limit: Hits let through per window.
        window_s: Length of a window.
        clock: Monotonic seconds.
        max_reasons: Distinct reasons counted per window; more are counted as ``other``.
    """

    def __init__(
        self,
        limit: int = 10,
        window_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_reasons: int = 32,
    ) -> None:
        if limit < 0 or window_s <= 0 or max_reasons < 1:
            raise ValueError("limit >= 0, window_s > 0 and max_reasons >= 1 are required")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_reasons = max_reasons
        self._window_end = -math.inf
        self._open = False
        self._passed = 0
        self._suppressed: Counter[str] = Counter()
        self._ready: Suppressed | None = None

    def hit(self, reason: str) -> bool:
        """Count one event; True if it should be logged in full."""
        now = self._clock()
        if not self._open or now >= self._window_end:
            self._close()
            self._open = True
            self._window_end = now + self.window_s
        if self._passed < self.limit:
            self._passed += 1
            return True
        suppressed = self._suppressed
        if reason not in suppressed and len(suppressed) >= self._max_reasons:
            reason = _OTHER
        suppressed[reason] += 1
        return False

    def poll(self) -> Suppressed | None:
        """The summary of a finished window that suppressed something, once; else None.

        Call it periodically (the broker's heartbeat tick), so that the summary of the last
        window of a burst is written even if nothing arrives after it.
        """
        if self._open and self._clock() >= self._window_end:
            self._close()
        ready, self._ready = self._ready, None
        return ready

    def _close(self) -> None:
        if self._suppressed:
            self._ready = Suppressed(
                sum(self._suppressed.values()), dict(self._suppressed), self.window_s
            )
        self._open = False
        self._passed = 0
        self._suppressed = Counter()


class LogMethod(Protocol):
    """A logger method such as structlog's ``log.warning``: an event name and fields."""

    def __call__(self, event: str, /, **fields: Any) -> Any: ...


class RejectLog:
    """Log lines about rejected input through ``emit``, rate-limited and summarised.

    Args:
        emit: The logger method, e.g. ``structlog.get_logger().warning``.
        limiter: The window and limit; ``SummarizingLimiter()`` (10 per 10 s) by default.
        summary_event: The event name of the summary lines.
    """

    def __init__(
        self,
        emit: LogMethod,
        limiter: SummarizingLimiter | None = None,
        *,
        summary_event: str = "rejected_input_suppressed",
    ) -> None:
        self._emit = emit
        self.limiter = limiter or SummarizingLimiter()
        self._summary_event = summary_event

    def __call__(self, event: str, reason: str, **fields: Any) -> None:
        """Log ``event`` with ``reason`` and ``fields`` unless this window's quota is used up."""
        logged = self.limiter.hit(reason)
        self.tick()  # a hit that opened a new window may have closed one with a summary
        if logged:
            self._emit(event, reason=reason, **fields)

    def tick(self) -> None:
        """Write the summary of a finished window, if there is one; call it periodically."""
        summary = self.limiter.poll()
        if summary is not None:
            self._emit(
                self._summary_event,
                suppressed=summary.count,
                reasons=summary.reasons,
                window_s=summary.window_s,
                message=summary.message(),
            )
