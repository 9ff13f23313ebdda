"""The dashboard's cost to the bus (issue 16, item 7): the bus's command and event rates without
the dashboard, and with ``linebus web`` serving five open pages.

    python bench/web_cost.py [--quick] [--json]

Real processes on loopback: a ``linebus broker``, an ``EchoActor`` named ``bench``, and for the
"with" side ``linebus web`` on the same broker with five live streams of the page
(``GET /ui/stream``, read as a browser's ``EventSource`` would, by five threads of a reader
process). The web process follows every event of the line for the page (its ``LineView``
subscribes to all topics), so the broker fans each event out to it too: that is the cost.

The measurements are ``bus.bench``'s own (``_bus_round_trips``, ``_events``): sequential calls,
calls with 8 in flight, and events to one subscriber. Each runs without and with the dashboard
alternately, ``bus.bench.REPEATS`` times, and the median of each side is kept
(``bus.bench._alternate``); the web process and its pages start afresh for every "with" run.
The target: no rate lower by more than 10% (ratio with/without >= 0.9). Beside the rates, the
share of a core the web process used during each "with" run: the cost itself, which run-to-run
noise on a shared machine can hide. Results:
docs/BENCHMARKS.md, "The dashboard's cost".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from bus.bench import (
    SMALL,
    Measure,
    _actor,
    _alternate,
    _broker_process,
    _bus_round_trips,
    _events,
    wait_for_actors,
)
from bus.client import ENV_BROKER_KEY, ENV_BROKER_KEY_FILE, ENV_KEY, ENV_KEY_FILE
from bus.testing import free_port, wait_until

#: Open pages of the dashboard during the "with" runs.
PAGES = 5
#: The page's live stream (helper web-page's ``bus.web.dashboard``).
STREAM = "/ui/stream"
TARGET = 0.9
#: The dashboard runs on the bench's plaintext broker: no key from the caller's shell.
_KEY_VARIABLES = (ENV_KEY_FILE, ENV_KEY, ENV_BROKER_KEY_FILE, ENV_BROKER_KEY)


def _pages(url: str, count: int, ready: Any, stop: Any, out: Any) -> None:
    """``count`` threads, each reading the page's stream at ``url`` until ``stop`` is set;
    ``ready`` counts the streams that got their first message; ``out`` gets the messages read."""
    messages = [0] * count

    def read(i: int) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(30, read=None)) as http,
            http.stream("GET", url) as response,
        ):
            first = True
            for line in response.iter_lines():
                if line.startswith("data:"):
                    messages[i] += 1
                    if first:
                        first = False
                        with ready.get_lock():
                            ready.value += 1
                if stop.is_set():
                    return

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    stop.wait()
    out.put(sum(messages))


@contextlib.contextmanager
def _dashboard(bus: dict[str, str]) -> Iterator[int]:
    """``linebus web`` on the bench's broker with ``PAGES`` open streams, for the block; its
    pid."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in _KEY_VARIABLES}
    web = subprocess.Popen(
        [
            *(sys.executable, "-m", "bus.cli", "web", "--endpoint", bus["command"]),
            *("--subscribe", bus["subscribe"], "--listen", f"127.0.0.1:{port}"),
        ],
        env={**env, "LINEBUS_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL,
    )
    ctx = mp.get_context("spawn")
    ready = ctx.Value("i", 0)
    stop = ctx.Event()
    out: Any = ctx.Queue()
    reader = ctx.Process(
        target=_pages,
        args=(f"http://127.0.0.1:{port}{STREAM}", PAGES, ready, stop, out),
        daemon=True,
    )
    try:

        def serving() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(serving, 30, "linebus web to serve")
        reader.start()
        wait_until(lambda: ready.value >= PAGES, 30, f"{PAGES} page streams")
        yield web.pid
        stop.set()
        _DELIVERED.append(out.get(timeout=30))
    finally:
        stop.set()
        reader.join(10)
        if reader.is_alive():
            reader.terminate()
            reader.join(5)
        web.terminate()
        web.wait(10)


#: Page messages read during each "with" run (shows the pages were live).
_DELIVERED: list[int] = []


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_dashboard(bus: dict[str, str], measure: Measure) -> Measure:
    """``measure`` with the dashboard up; adds the share of a core the web process used
    meanwhile (``web_cpu``): the cost itself, which the noisy rates can hide."""

    def run() -> dict[str, float]:
        with _dashboard(bus) as pid:
            cpu, started = _cpu_s(pid), time.monotonic()
            figures = measure()
            share = (_cpu_s(pid) - cpu) / (time.monotonic() - started)
            return {**figures, "web_cpu": share}

    return run


def run(quick: bool = False) -> dict[str, Any]:
    """Every pattern without and with the dashboard; the medians and their ratios."""
    bus = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("command", "publish", "subscribe")}
    n_seq = 2000 if quick else 10_000
    n_inflight = 4000 if quick else 20_000
    n_events = 40_000 if quick else 200_000
    broker = _broker_process(bus)
    actor = mp.get_context("spawn").Process(
        target=_actor, args=(bus["command"], bus["publish"]), daemon=True
    )
    actor.start()
    patterns: dict[str, Measure] = {
        "commands_sequential": lambda: _bus_round_trips(bus["command"], n_seq, 1, SMALL),
        "commands_inflight8": lambda: _bus_round_trips(bus["command"], n_inflight, 8, SMALL),
        "events_1sub": lambda: _events("bus", bus, n_events, 1),
    }
    results: dict[str, Any] = {}
    try:
        wait_for_actors(bus["command"])
        for name, measure in patterns.items():
            pair = _alternate({"without": measure, "with": _with_dashboard(bus, measure)})
            pair["ratio"] = pair["with"]["per_s"] / pair["without"]["per_s"]
            results[name] = pair
    finally:
        actor.terminate()
        actor.join(5)
        broker.terminate()
        broker.wait(10)
    results["page_messages_per_run"] = list(_DELIVERED)
    return results


def report(results: dict[str, Any]) -> str:
    """The table docs/BENCHMARKS.md records."""
    lines = [
        f"| pattern | without dashboard | with {PAGES} open pages | ratio | target"
        " | web process CPU |",
        "|---|---|---|---|---|---|",
    ]
    for name, pair in results.items():
        if not isinstance(pair, dict):
            continue
        verdict = "met" if pair["ratio"] >= TARGET else "NOT met"
        lines.append(
            f"| {name} | {pair['without']['per_s']:,.0f}/s {pair['without']['runs']}"
            f" | {pair['with']['per_s']:,.0f}/s {pair['with']['runs']}"
            f" | {pair['ratio']:.2f} | >= {TARGET} ({verdict})"
            f" | {pair['with']['web_cpu']:.0%} |"
        )
    lines.append(f"\npage stream messages read per 'with' run: {results['page_messages_per_run']}")
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
