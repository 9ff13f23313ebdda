"""Soak: the demo line under steady mixed load for a given time; fails if anything drifts.

    .venv/bin/python -m bench.soak --duration 1800             # 30 minutes (docs/BENCHMARKS.md)
    .venv/bin/python -m bench.soak --duration 60 --secure      # CI-sized, the CURVE line
    .venv/bin/python -m bench.soak --duration 600 --json soak.json --interval 5

The line is configs/demo.toml (``--secure``: demo-secure.toml) under ``linebus up`` on free
ports, the load bench/mixedload.py's (callers of every actor, an event subscriber, telemetry
ingest, FlashRunner transfers, FLUX uploads), the same as the fault suite's but with no fault.
Every ``--interval`` seconds it samples, for the supervisor and each of its children, resident
memory (RSS), open file descriptors and threads (from /proc), and the latency of the short calls
made since the last sample (p50, p99) and their failures.

The rule (``drift``): the first half of the run is warm-up (caches, pools and the store's pages
fill); over the second half a least-squares line is fitted to each series, and the series drifts
when the line rises by more than its limit across that half (``LIMITS``: RSS 4 MiB or 5 %,
whichever is more; 4 descriptors; 4 threads; call latency p50 20 ms or 100 %). A process that
restarted (no fault is injected: it crashed), a call that outlived its deadline, or a failed
call also fail the run. Exit 0: nothing drifted; 1: something did (each named); 2: bad usage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.demoline import DemoLine, proc_sample
from bench.mixedload import CALL_DEADLINE_S, MixedLoad

#: The series' limits: (absolute, relative to the second half's median). A series drifts when its
#: fitted rise across the second half exceeds the larger of the two.
LIMITS: dict[str, tuple[float, float]] = {
    "rss_kib": (4096.0, 0.05),
    "fds": (4.0, 0.0),
    "threads": (4.0, 0.0),
    "p50_ms": (20.0, 1.0),
}
SUPERVISOR = "supervisor"


@dataclass
class Series:
    """One sampled quantity over time: (seconds since the start, value) points."""

    name: str
    metric: str
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    """The rule applied to one series: its fitted rise across the second half, and its limit."""

    name: str
    metric: str
    first: float
    last: float
    rise: float
    limit: float

    @property
    def drifts(self) -> bool:
        """Whether the series rose past its limit."""
        return self.rise > self.limit


def slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of ``points`` (0 for fewer than 2 distinct times)."""
    if len(points) < 2:
        return 0.0
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


def drift(series: Series) -> Verdict | None:
    """The rule applied to ``series`` (module docstring); None with fewer than 4 points in its
    second half (too short to judge)."""
    if not series.points:
        return None
    start, end = series.points[0][0], series.points[-1][0]
    half = [p for p in series.points if p[0] >= (start + end) / 2]
    if len(half) < 4:
        return None
    absolute, relative = LIMITS[series.metric]
    median = statistics.median(y for _, y in half)
    rise = slope(half) * (half[-1][0] - half[0][0])
    return Verdict(
        series.name,
        series.metric,
        series.points[0][1],
        series.points[-1][1],
        rise,
        max(absolute, relative * median),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Soak:
    """What one soak sampled and found."""

    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    windows: list[dict[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, metric: str, t: float, value: float) -> None:
        """Add the point (``t``, ``value``) to series ``name``/``metric``."""
        self.series.setdefault((name, metric), Series(name, metric)).points.append((t, value))

    def verdicts(self) -> list[Verdict]:
        """The rule applied to every series long enough to judge."""
        return [v for s in self.series.values() if (v := drift(s)) is not None]


def sample(line: DemoLine, load: MixedLoad, soak: Soak, t: float, since: int) -> int:
    """Take one sample of every process and of the calls after record ``since``; return the
    index to start the next window at."""
    assert line.supervisor is not None
    pids = {SUPERVISOR: line.supervisor.pid, **line.pids()}
    for name in [SUPERVISOR, *line.names]:
        pid = pids.get(name)
        if pid is None or (name in soak.pids and soak.pids[name] != pid):
            soak.problems.append(
                f"{name} restarted or is gone at {t:.0f} s (no fault was injected)"
            )
            continue
        soak.pids[name] = pid
        found = proc_sample(pid)
        if found is None:
            continue  # gone since the listing: the next sample says so
        soak.add(name, "rss_kib", t, found.rss_kib)
        soak.add(name, "fds", t, found.fds)
        soak.add(name, "threads", t, found.threads)
    records = load.ledger.snapshot()
    window = [r for r in records[since:] if r.deadline == CALL_DEADLINE_S]
    ok = [r.elapsed * 1000 for r in window if r.code == "ok"]
    if ok:
        p50, p99 = percentile(ok, 0.5), percentile(ok, 0.99)
        soak.add("calls", "p50_ms", t, p50)
        soak.windows.append(
            {
                "t": t,
                "calls": len(window),
                "failed": len(window) - len(ok),
                "p50_ms": p50,
                "p99_ms": p99,
            }
        )
    return len(records)


def run(args: argparse.Namespace) -> tuple[Soak, MixedLoad]:
    """Start the line and the load, sample until the duration is over, stop both."""
    folder = Path(args.folder or tempfile.mkdtemp(prefix="linebus-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    line = DemoLine(folder, secure=args.secure)
    load = MixedLoad(line, clients=args.clients)
    soak = Soak()
    try:
        line.start()
        load.start()
        started = time.monotonic()
        since, due = 0, args.interval
        while due <= args.duration + 1e-9:
            # On a schedule, not an interval after the last sample: a slow sample (a loaded
            # machine) does not stretch the run or thin out its samples.
            load.stopping.wait(max(0.0, started + due - time.monotonic()))
            now = time.monotonic() - started
            since = sample(line, load, soak, now, since)
            due = max(due + args.interval, now)
            if args.progress and soak.windows:
                w = soak.windows[-1]
                print(
                    f"{w['t']:7.0f} s  calls {w['calls']:5.0f}  p50 {w['p50_ms']:6.1f} ms  "
                    f"p99 {w['p99_ms']:6.1f} ms  failed {w['failed']:.0f}",
                    flush=True,
                )
    finally:
        hung = load.stop()
        line.stop()
    if hung:
        soak.problems.append(f"callers that never returned: {hung}")
    for record in load.ledger.hangs():
        soak.problems.append(f"{record.what} outlived its deadline: {record.elapsed:.1f} s")
    start = load.ledger.snapshot()[0].started if load.ledger.snapshot() else 0.0
    for record in load.ledger.snapshot():
        if record.code != "ok":
            soak.problems.append(
                f"{record.what} failed with {record.code} at {record.started - start:.0f} s"
                " (no fault was injected)"
            )
    return soak, load


def report(soak: Soak, load: MixedLoad) -> str:
    """The soak's table: each series' first and last value, fitted rise and limit, verdict."""
    lines = [
        f"{'process':<16} {'metric':<8} {'first':>9} {'last':>9} {'rise':>9} {'limit':>9}  verdict"
    ]
    for v in soak.verdicts():
        lines.append(
            f"{v.name:<16} {v.metric:<8} {v.first:>9.1f} {v.last:>9.1f} {v.rise:>9.1f}"
            f" {v.limit:>9.1f}  {'DRIFTS' if v.drifts else 'ok'}"
        )
    records = load.ledger.snapshot()
    lines.append(
        f"calls {len(records)}, readings acknowledged {len(load.ledger.acked)}, events"
        f" {load.ledger.events}, samples {len(soak.windows)}"
    )
    if soak.windows:
        quarter = max(1, len(soak.windows) // 4)
        lines.append("latency of short calls (ms), by quarter of the run: p50 / p99")
        for i in range(0, len(soak.windows), quarter):
            part = soak.windows[i : i + quarter]
            lines.append(
                f"  {part[0]['t']:6.0f}-{part[-1]['t']:6.0f} s: "
                f"{statistics.median(w['p50_ms'] for w in part):6.1f} / "
                f"{max(w['p99_ms'] for w in part):6.1f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak as the command line asks; the exit status (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (5)")
    parser.add_argument("--clients", type=int, default=3, help="command callers (3)")
    parser.add_argument("--secure", action="store_true", help="configs/demo-secure.toml (CURVE)")
    parser.add_argument("--folder", help="where the line's files go (a temporary folder)")
    parser.add_argument("--json", help="write every sample and verdict to this file")
    parser.add_argument("--progress", action="store_true", help="print each latency sample")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.interval <= 0 or args.clients < 1:
        parser.error("--duration and --interval must be > 0, --clients >= 1")
    soak, load = run(args)
    verdicts = soak.verdicts()
    print(report(soak, load))
    drifting = [v for v in verdicts if v.drifts]
    problems = soak.problems + [
        f"{v.name} {v.metric} drifts: +{v.rise:.1f} across the second half (limit {v.limit:.1f})"
        for v in drifting
    ]
    if not verdicts:
        problems.append("too short to judge: fewer than 4 samples in the second half")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "series": [asdict(s) for s in soak.series.values()],
                    "windows": soak.windows,
                    "verdicts": [{**asdict(v), "drifts": v.drifts} for v in verdicts],
                    "problems": problems,
                },
                indent=1,
            )
        )
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if not problems:
        print(f"soak passed: {len(verdicts)} series, none drifts")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
