"""What ``/metrics`` costs the bus: command and event rates through a broker without
``[broker] metrics`` and through one serving it while it is scraped every second.

    python bench/metrics_cost.py [--quick] [--json]

Real processes on loopback: two ``linebus broker`` processes (bus.bench's ``_broker_process``),
one started from a config with ``[broker] metrics``, each with an ``EchoActor`` named ``bench``;
for the "with" side a scraper process reads that broker's ``/metrics`` every ``SCRAPE_S`` (60
times Prometheus' default rate) for the whole run, started (and its first scrape done) before
the run. The measurements are ``bus.bench``'s own
(``_bus_round_trips``, ``_events``): sequential calls, calls with 8 in flight, events to one
subscriber; each runs against the two brokers alternately ``bus.bench.REPEATS`` times, the
median of each side kept (``bus.bench._alternate``).

What the "without" broker still does per answered request: it adds one to a latency bucket
(``ServiceEntry.latency``), which is not configurable. ``bucket_ns`` measures those lines alone
with ``timeit``. Results: docs/BENCHMARKS.md, "Metrics cost".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

from bus.bench import (
    SMALL,
    Measure,
    _actor,
    _alternate,
    _broker_process,
    _bus_round_trips,
    _events,
    _stop,
    wait_for_actors,
)
from bus.testing import free_port

#: Seconds between two scrapes of the "with" broker: 60 times Prometheus' default rate, so that
#: even a one-second run sees several.
SCRAPE_S = 0.25


def _scraper(url: str, ready: Any, stop: Any, out: Any) -> None:
    """Read ``url`` at once (then set ``ready``), and every ``SCRAPE_S`` until ``stop`` is set;
    put the count of scrapes after the first and the longest one's seconds in ``out``."""
    count, longest = -1, 0.0
    while True:
        started = time.monotonic()
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        count, longest = count + 1, max(longest, time.monotonic() - started)
        ready.set()
        if stop.wait(SCRAPE_S):
            break
    out.put((count, longest))


def _scraped(url: str, measure: Measure, scrapes: list[tuple[int, float]]) -> Measure:
    """``measure`` while a scraper process reads ``url`` (started before, so its start-up is not
    measured); its figures go to ``scrapes``."""
    ctx = mp.get_context("spawn")

    def run() -> dict[str, float]:
        ready, stop = ctx.Event(), ctx.Event()
        out: Any = ctx.Queue()
        scraper = ctx.Process(target=_scraper, args=(url, ready, stop, out), daemon=True)
        scraper.start()
        try:
            if not ready.wait(30):
                raise TimeoutError(f"no scrape of {url} within 30 s")
            return measure()
        finally:
            stop.set()
            scrapes.append(out.get(timeout=30))
            scraper.join(10)

    return run


def bucket_ns() -> float:
    """Nanoseconds of the broker's per-answer latency bookkeeping (the lines in
    ``Broker._route_answer``), timed alone."""
    setup = (
        "from bisect import bisect_left as bucket\n"
        "from bus.directory import LATENCY_BOUNDS as bounds\n"
        "latency = [0] * (len(bounds) + 1); total = 0.0; now = 1000.004; started = 1000.0"
    )
    stmt = "elapsed = now - started\nlatency[bucket(bounds, elapsed)] += 1\ntotal += elapsed"
    number = 1_000_000
    return min(timeit.repeat(stmt, setup, number=number, repeat=5)) / number * 1e9


def run(quick: bool = False) -> dict[str, Any]:
    """Every pattern through both brokers; the medians, their ratios, and ``bucket_ns``."""
    ctx = mp.get_context("spawn")
    plain, metered = (
        {name: f"tcp://127.0.0.1:{free_port()}" for name in ("command", "publish", "subscribe")}
        for _ in range(2)
    )
    url = f"http://127.0.0.1:{free_port()}/metrics"
    folder = Path(tempfile.mkdtemp(prefix="metrics-cost-"))
    config = folder / "metrics.toml"
    config.write_text(f'[broker]\nmetrics = "{url.removeprefix("http://").split("/")[0]}"\n')
    brokers = [_broker_process(plain), _broker_process(metered, config)]
    actors = [
        ctx.Process(target=_actor, args=(bus["command"], bus["publish"]), daemon=True)
        for bus in (plain, metered)
    ]
    for actor in actors:
        actor.start()
    n_seq = 2000 if quick else 10_000
    n_inflight = 4000 if quick else 20_000
    n_events = 40_000 if quick else 200_000

    def patterns(bus: dict[str, str]) -> dict[str, Measure]:
        return {
            "commands_sequential": lambda: _bus_round_trips(bus["command"], n_seq, 1, SMALL),
            "commands_inflight8": lambda: _bus_round_trips(bus["command"], n_inflight, 8, SMALL),
            "events_1sub": lambda: _events("bus", bus, n_events, 1),
        }

    results: dict[str, Any] = {}
    scrapes: list[tuple[int, float]] = []
    try:
        for bus in (plain, metered):
            wait_for_actors(bus["command"])
        without, with_metrics = patterns(plain), patterns(metered)
        for name in without:
            pair = _alternate(
                {"without": without[name], "with": _scraped(url, with_metrics[name], scrapes)}
            )
            pair["ratio"] = pair["with"]["per_s"] / pair["without"]["per_s"]
            results[name] = pair
    finally:
        _stop(actors, brokers)
        shutil.rmtree(folder)
    results["scrapes_per_run"] = scrapes
    results["bucket_ns"] = bucket_ns()
    return results


def report(results: dict[str, Any]) -> str:
    """The table docs/BENCHMARKS.md records."""
    lines = [
        f"| pattern | metrics off | metrics on, scraped every {SCRAPE_S:g} s | ratio |",
        "|---|---|---|---|",
    ]
    for name, pair in results.items():
        if not isinstance(pair, dict):
            continue
        lines.append(
            f"| {name} | {pair['without']['per_s']:,.0f}/s {pair['without']['runs']}"
            f" | {pair['with']['per_s']:,.0f}/s {pair['with']['runs']} | {pair['ratio']:.2f} |"
        )
    scrapes = ", ".join(f"{n} (longest {s * 1000:.0f} ms)" for n, s in results["scrapes_per_run"])
    lines.append(f"\nscrapes per 'on' run: {scrapes}")
    lines.append(f"latency bookkeeping per answered request: {results['bucket_ns']:.0f} ns")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = run(quick=args.quick)
    print(json.dumps(results, indent=2) if args.json else report(results))
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
