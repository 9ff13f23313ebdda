"""The figures of an events pattern, from what its subscriber processes reported (one copy for
every side: raw pyzmq, linebus, NATS)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["event_figures"]


def event_figures(
    reports: Sequence[tuple[int, float, float, int]], n: int, subs: int
) -> dict[str, float]:
    """Rates and delivery from each subscriber's ``(events received, first arrival, last
    arrival, encoded size of the first event's data)``.

    The rate is over one span from the first subscriber's first event to the last one's last
    (perf_counter is the system-wide monotonic clock on Linux): on 2 cores the subscribers take
    turns, so per-subscriber spans would overstate it. ``data_bytes`` is the smallest size any
    subscriber saw, so a side that sent smaller events than the pattern asks shows it.
    """
    got = sum(report[0] for report in reports)
    span = max(report[2] for report in reports) - min(report[1] for report in reports)
    return {
        "per_s": got / span if span else 0.0,
        "delivered": got / (n * subs),
        "per_sub_per_s": got / subs / span if span else 0.0,
        "data_bytes": min(report[3] for report in reports),
    }
