"""The progress of a call as ``linebus call`` shows it: a bar on a terminal, plain lines in a pipe.

An update that carries numbers ``done`` and ``total`` (FlashRunner transfers and runs, the echo
actor's ``work``) is drawn with its percentage, rate and time left; its other fields follow as
``key=value``. Any other update (a FLUX status message, a telemetry flush count) is printed as
a line of its fields. ``--json`` does not come here: the CLI prints each update as a JSON line.

- ``BarProgress`` (stdout and stderr are terminals): a rich progress bar on stderr, redrawn at
  most 10 times a second, and once more at the end;
- ``LineProgress`` (piped): one line per update on stderr, at most one a second while numbers
  climb, always the first, the last (``done == total``) and every update without numbers.

Both leave stdout to the call's result. ``Estimate`` works out rate and time left for both, from
a clock they are given (a test passes a fake one).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TextIO

__all__ = [
    "BarProgress",
    "Estimate",
    "LineProgress",
    "ProgressView",
    "done_total",
    "format_duration",
    "format_fields",
    "progress_view",
]

Clock = Callable[[], float]

#: The window the rate is measured over: recent enough to follow a change of pace.
RATE_WINDOW_S = 10.0


def done_total(update: Any) -> tuple[float, float] | None:
    """``(done, total)`` of an update that carries both as numbers (total > 0), else None."""
    if not isinstance(update, dict):
        return None
    done, total = _number(update.get("done")), _number(update.get("total"))
    if done is not None and total is not None and total > 0:
        return done, total
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def format_fields(update: Any, skip: tuple[str, ...] = ("done", "total")) -> str:
    """An update's fields as ``key=value`` words (values as JSON), or the JSON of a non-map."""
    if not isinstance(update, dict):
        return _json(update)
    return " ".join(f"{k}={_json(v)}" for k, v in update.items() if k not in skip)


def _json(value: Any) -> str:
    if isinstance(value, str) and value and " " not in value and '"' not in value:
        return value  # a plain word stays readable: status=heating, not status="heating"
    return json.dumps(value, ensure_ascii=False, default=_bytes_size)


def _bytes_size(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    raise TypeError(type(value).__name__)


def format_duration(seconds: float | None) -> str:
    """``0:07``, ``12:05``, ``1:02:03``; ``-:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(rate: float | None) -> str:
    """A rate per second, compact: ``12.3/s``, ``4.5k/s``, ``1.2M/s``; ``-/s`` when unknown."""
    if rate is None:
        return "-/s"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= limit:
            return f"{rate / limit:.1f}{suffix}/s"
    return f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s"


class Estimate:
    """Rate and time left of a count climbing to a total, over the last ``RATE_WINDOW_S``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, done: float) -> None:
        """Record that ``done`` was reached now (a count that went back restarts the estimate)."""
        now = self._clock()
        if self._samples and done < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()

    @property
    def rate(self) -> float | None:
        """Units per second, or None before two samples some time apart."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def left_s(self, done: float, total: float) -> float | None:
        """Seconds until ``total`` at the current rate, or None when there is no rate yet."""
        rate = self.rate
        if done >= total:
            return 0.0
        return (total - done) / rate if rate else None


class ProgressView(Protocol):
    """What ``linebus call`` hands each progress update to, and closes after the answer."""

    def update(self, data: Any) -> None: ...

    def close(self) -> None: ...


class LineProgress:
    """Plain progress lines (for a pipe or a log); see the module docstring.

    Args:
        out: Where the lines go (stderr).
        clock: Monotonic seconds.
        min_interval_s: The shortest time between two lines of a climbing count.
    """

    def __init__(self, out: TextIO, clock: Clock = time.monotonic, min_interval_s: float = 1.0):
        self._out = out
        self._clock = clock
        self._min_interval_s = min_interval_s
        self._estimate = Estimate(clock)
        self._last_line = -math.inf
        self._held: str | None = None

    def update(self, data: Any) -> None:
        numbers = done_total(data)
        if numbers is None:
            self._write(f"progress {format_fields(data, ())}".rstrip())
            return
        done, total = numbers
        self._estimate.add(done)
        line = self._line(data, done, total)
        if done >= total or self._clock() - self._last_line >= self._min_interval_s:
            self._write(line)
        else:
            self._held = line

    def _line(self, data: dict[str, Any], done: float, total: float) -> str:
        rate = self._estimate.rate
        left = format_duration(self._estimate.left_s(done, total))
        words = [
            f"progress {_count(done)}/{_count(total)} {done / total:.0%}",
            f"{format_rate(rate)}",
            f"{left} left",
            format_fields(data),
        ]
        return " ".join(w for w in words if w)

    def _write(self, line: str) -> None:
        self._held = None
        self._last_line = self._clock()
        print(line, file=self._out, flush=True)

    def close(self) -> None:
        """Print the last update if it was held back (the count stopped short of its total)."""
        if self._held is not None:
            self._write(self._held)


def _count(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


class BarProgress:
    """A progress bar on a terminal (rich), with rate and time left; see the module docstring.

    Args:
        label: What the bar is of (``fr1 run``).
        out: The terminal (stderr).
        clock: Monotonic seconds.
        min_redraw_s: The shortest time between two redraws.
    """

    def __init__(
        self,
        label: str,
        out: TextIO,
        clock: Clock = time.monotonic,
        *,
        min_redraw_s: float = 0.1,
        width: int | None = None,
    ) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self._clock = clock
        self._min_redraw_s = min_redraw_s
        self._estimate = Estimate(clock)
        self._console = Console(file=out, force_terminal=True, width=width, highlight=False)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[count]}", markup=False),
            TextColumn("{task.fields[rate]}", markup=False),
            TextColumn("{task.fields[left]} left", markup=False),
            TextColumn("{task.fields[extra]}", markup=False),
            console=self._console,
            auto_refresh=False,
            get_time=clock,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(
            label, total=None, start=False, count="", rate="", left="-:--", extra=""
        )
        self._started = False
        self._last_draw = -math.inf

    def update(self, data: Any) -> None:
        numbers = done_total(data)
        if numbers is None:
            # A message, not a count: print it above the bar, which stays where it is.
            self._console.print(f"progress {format_fields(data, ())}".rstrip(), markup=False)
            return
        done, total = numbers
        self._estimate.add(done)
        if not self._started:
            self._started = True
            self._progress.start()
            self._progress.start_task(self._task)
        self._progress.update(
            self._task,
            completed=done,
            total=total,
            count=f"{_count(done)}/{_count(total)}",
            rate=format_rate(self._estimate.rate),
            left=format_duration(self._estimate.left_s(done, total)),
            extra=format_fields(data),
        )
        now = self._clock()
        if done >= total or now - self._last_draw >= self._min_redraw_s:
            self._last_draw = now
            self._progress.refresh()

    def close(self) -> None:
        """Draw the last state and leave the bar on the screen, the cursor below it."""
        if self._started:
            self._progress.refresh()
            self._progress.stop()


def progress_view(
    label: str, *, out: TextIO | None = None, tty: bool | None = None
) -> ProgressView:
    """The view ``linebus call`` uses: a bar when stdout and ``out`` (stderr) are terminals,
    else plain lines."""
    out = out or sys.stderr
    if tty is None:
        tty = sys.stdout.isatty() and out.isatty()
    return BarProgress(label, out) if tty else LineProgress(out)
