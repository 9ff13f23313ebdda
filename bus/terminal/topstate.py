"""What ``linebus top`` knows of a line, built from what it polls and hears; no drawing here.

Three inputs, each applied as it comes:

- ``on_services``: the broker's ``services`` rows (name, kind, state, since, pid, restarts,
  up_since), polled once a refresh;
- ``on_stats``: the broker's ``stats``; two polls make the rates (``routed`` and ``dropped``
  counters per second between them);
- ``on_job``: a ``<service>.job`` event (docs/PROTOCOL.md §9, "Job events"): a running job, its
  last progress with rate and time left (``bus.terminal.progress.Estimate``), and its outcome,
  kept on show for ``KEEP_ENDED_S`` after it ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.terminal.progress import Estimate, done_total

__all__ = ["KEEP_ENDED_S", "JobView", "TopState"]

#: How long an ended job stays on show with its outcome.
KEEP_ENDED_S = 10.0


@dataclass
class JobView:
    """One job as ``top`` shows it."""

    service: str
    job: str
    command: str
    estimate: Estimate
    started: float  # on the state's clock
    progress: Any = None
    outcome: str | None = None  # None while it runs
    code: str | None = None
    duration_s: float | None = None
    ended: float | None = None

    @property
    def numbers(self) -> tuple[float, float] | None:
        """``(done, total)`` of the last progress, when it has them."""
        return done_total(self.progress)


@dataclass
class TopState:
    """The line as ``top`` last saw it; see the module docstring.

    Args:
        clock: Monotonic seconds (a test passes a fake).
    """

    clock: Callable[[], float] = time.monotonic
    services: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    problem: str | None = None
    _jobs: dict[tuple[str, str], JobView] = field(default_factory=dict)
    _last_stats: tuple[float, Mapping[str, Any]] | None = None

    def on_services(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """The broker's services rows, in its order (by name)."""
        self.services = [dict(row) for row in rows]
        self.problem = None

    def on_stats(self, stats: Mapping[str, Any]) -> None:
        """The broker's stats; rates per second of its counters since the previous poll."""
        now = self.clock()
        self.stats = dict(stats)
        if self._last_stats is not None:
            then, before = self._last_stats
            span = now - then
            if span > 0:
                self.rates = {
                    f"{group}.{key}": max(0, value - before.get(group, {}).get(key, 0)) / span
                    for group in ("routed", "dropped")
                    for key, value in stats.get(group, {}).items()
                }
        self._last_stats = (now, {g: dict(stats.get(g, {})) for g in ("routed", "dropped")})

    def on_job(self, service: str, data: Any) -> None:
        """A ``<service>.job`` event's data; malformed ones are ignored."""
        if not isinstance(data, dict) or not isinstance(data.get("job"), str):
            return
        now = self.clock()
        key = (service, data["job"])
        job = self._jobs.get(key)
        if job is None:
            elapsed = data.get("elapsed_s")
            elapsed = elapsed if isinstance(elapsed, (int, float)) else 0.0
            job = self._jobs[key] = JobView(
                service,
                data["job"],
                str(data.get("command", "?")),
                Estimate(self.clock),
                started=now - elapsed,
            )
        state = data.get("state")
        if state == "progress":
            job.progress = data.get("progress")
            numbers = job.numbers
            if numbers is not None:
                job.estimate.add(numbers[0])
        elif state == "ended":
            job.outcome = str(data.get("outcome", "?"))
            job.code = data.get("code")
            duration = data.get("duration_s")
            job.duration_s = duration if isinstance(duration, (int, float)) else None
            job.ended = now

    def jobs(self) -> list[JobView]:
        """Running jobs, oldest first, then those ended in the last ``KEEP_ENDED_S``; older
        ended jobs are forgotten. A job of a service that went down ends with it."""
        now = self.clock()
        down = {row["name"] for row in self.services if row.get("state") != "up"}
        for key, job in list(self._jobs.items()):
            if job.ended is None and job.service in down:
                job.outcome, job.ended = "lost", now  # its actor went away mid-job
            if job.ended is not None and now - job.ended > KEEP_ENDED_S:
                del self._jobs[key]
        jobs = sorted(self._jobs.values(), key=lambda j: j.started)
        return [j for j in jobs if j.ended is None] + [j for j in jobs if j.ended is not None]

    def uptime_s(self, row: Mapping[str, Any], now_wall: float) -> float | None:
        """How long a service has been up (None while down): from ``up_since`` when the broker
        sends it, else from ``since``."""
        if row.get("state") != "up":
            return None
        since = row.get("up_since") or row.get("since")
        return max(0.0, now_wall - since) if isinstance(since, (int, float)) else None
