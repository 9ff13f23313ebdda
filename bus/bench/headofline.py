"""Commands while bulk and events flow on the same line (``linebus bench --head-of-line``).

Issue 17's target: a command keeps its p99 under 5 ms while a 64 MiB transfer goes to another
actor and 100 000 events/s flow on the same line, i.e. neither bulk frames nor events queue a
command behind them in the broker or in a client.

The line is the real ``linebus broker`` and three ``EchoActor`` processes: ``bench`` answers
the timed calls, ``bulk`` takes the transfers (``length`` of a 64 MiB bytes argument, one after
another, from a client process of its own), ``events`` publishes (``emit`` calls paced to the
asked rate, from another client process). A subscriber process receives every event. The timed
calls (``echo`` of a small record, one at a time) run first on the idle line, then with the
load flowing; the report gives both, with the load actually achieved (bulk MB/s, events/s
delivered and missed), because on a 2-core machine the six processes share two cores and the
asked event rate may not be reached.

The two load generators (the transfer sender and the event pacer) run at nice 19: on a real
line they are other hosts' clients; here they would otherwise take the cores the measured path
(broker, ``bench`` actor, timing client) needs. The actors that do the loaded work (``bulk``,
``events``), the subscriber (every event it receives is counted) and the broker run at normal
priority, unless ``nice`` is given: then the measured path's priority is adjusted by it, as a
line's config does (``[broker] nice``, ``bus.priority.apply_nice`` in the ``bench`` actor and
the timing client), to show what prioritizing the command path buys on a busy controller.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bus.bench import (
    SMALL,
    _actor,
    _broker_process,
    _percentile,
    broker_config,
    wait_for_actors,
)
from bus.errors import ConfigError
from bus.priority import apply_nice
from bus.testing import free_port

__all__ = ["BULK_SIZE", "EVENT_RATE", "P99_TARGET_MS", "report", "run"]

#: The transfer's size and the event rate of the issue's target.
BULK_SIZE = 64 * 1024 * 1024
EVENT_RATE = 100_000
#: The loaded commands' p99 target (ms).
P99_TARGET_MS = 5.0
#: Events per ``emit`` call: the publisher paces calls of this many to reach the rate.
_EMIT_BATCH = 2_000


def _bulk_sender(command: str, size: int, under_way: Any, stop: Any, out: Any) -> None:
    """Send ``size`` bytes to ``bulk`` again and again until ``stop`` (``under_way`` set once
    the first has arrived); report (bytes, seconds)."""
    os.nice(19)  # a load generator: see the module docstring
    from bus.client import Client

    blob = os.urandom(size)
    sent = 0
    with Client(command, timeout=120, keys=False) as client:
        start = time.perf_counter()
        while not stop.is_set():
            if client.call("bulk", "length", data=blob) != size:
                raise RuntimeError("the bulk actor answered a wrong length")
            sent += size
            under_way.set()
        out.put(("bulk", sent, time.perf_counter() - start))


def _event_pacer(command: str, rate: int, under_way: Any, stop: Any, out: Any) -> None:
    """Have ``events`` publish ``rate`` events/s in batches until ``stop`` (``under_way`` set
    after the first batch); report the count."""
    os.nice(19)  # a load generator: see the module docstring
    from bus.client import Client

    published = 0
    with Client(command, timeout=60, keys=False) as client:
        start = time.perf_counter()
        while not stop.is_set():
            published += client.call("events", "emit", event="tick", count=_EMIT_BATCH, data=SMALL)
            under_way.set()
            # Ahead of the rate: wait for it; behind: go on at once (the actor's own pace).
            ahead = published / rate - (time.perf_counter() - start)
            if ahead > 0:
                stop.wait(ahead)
        out.put(("events", published, time.perf_counter() - start))


def _event_counter(command: str, subscribe: str, ready: Any, stop: Any, out: Any) -> None:
    """Receive every ``events.`` event until ``stop`` and the last has come; report
    (received, missed)."""
    from bus.client import Client

    received = missed = 0
    with (
        Client(command, subscribe_endpoint=subscribe, keys=False) as client,
        client.subscribe("events.") as sub,
    ):
        sub.wait_ready(timeout=20)
        ready.set()
        while True:
            # None after 0.5 s without an event: look at ``stop``; once stopped, the events
            # still on their way have arrived when none has for 0.5 s.
            event = sub.next(timeout=0.5)
            if event is not None:
                received += 1
                missed += event.missed
            elif stop.is_set():
                break
        out.put(("subscriber", received, missed))


def _timing_process(command: str, seconds: float, nice: int | None, out: Any) -> None:
    """``_timed_calls`` in a process of its own, at ``nice``; the figures go on ``out``."""
    apply_nice(nice, "the timing client")
    out.put({**_timed_calls(command, seconds), "nice": os.getpriority(os.PRIO_PROCESS, 0)})


def _timed(ctx: Any, command: str, seconds: float, nice: int | None) -> dict[str, float]:
    """Run ``_timing_process`` and return its figures (with the nice value it ran at)."""
    out = ctx.Queue()
    proc = ctx.Process(target=_timing_process, args=(command, seconds, nice, out), daemon=True)
    proc.start()
    try:
        figures: dict[str, float] = out.get(timeout=seconds + 120)
    finally:
        proc.join(10)
    return figures


def _check_nice(nice: int) -> None:
    """Refuse a ``nice`` this user may not set before starting anything, instead of a broker
    that exits at start-up: ``apply_nice`` in a thread of its own, which ends at once (Linux keeps
    a nice value per thread, so this process's other threads keep theirs)."""
    refused: list[ConfigError] = []

    def probe() -> None:
        try:
            apply_nice(nice, "linebus bench --nice")
        except ConfigError as exc:
            refused.append(exc)

    thread = threading.Thread(target=probe, name="nice-probe")
    thread.start()
    thread.join()
    if refused:
        raise refused[0]


def _timed_calls(command: str, seconds: float) -> dict[str, float]:
    """Sequential ``echo`` calls to ``bench`` for ``seconds``: count, p50, p99 and max (ms)."""
    from bus.client import Client

    latencies: list[float] = []
    with Client(command, timeout=10, keys=False) as client:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            began = time.perf_counter()
            if client.call("bench", "echo", value=SMALL) != SMALL:
                raise RuntimeError("the bench actor answered a wrong echo")
            latencies.append(time.perf_counter() - began)
    return {
        "calls": len(latencies),
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


def run(
    seconds: float = 10.0,
    event_rate: int = EVENT_RATE,
    bulk_size: int = BULK_SIZE,
    nice: int | None = None,
    transport: str = "tcp",
) -> dict[str, Any]:
    """Time commands on the idle line, then under bulk and event load; return the figures.

    ``bulk_size`` 0 leaves the transfers out, ``event_rate`` 0 the events (the subscriber
    still runs). ``nice``: the adjustment of the measured path's priority (see the module
    docstring). ``transport``: every process reaches the broker over TCP on loopback, or
    (``ipc``) over its ``ipc_dir`` Unix sockets.

    Raises:
        ConfigError: ``nice`` is negative and this user may not raise a priority.
    """
    if nice is not None:
        _check_nice(nice)
    ctx = mp.get_context("spawn")
    binds = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("command", "publish", "subscribe")}
    folder = tempfile.TemporaryDirectory(prefix="linebus-hol-")
    config, local = broker_config(Path(folder.name), transport=transport, nice=nice)
    ep = local or binds
    broker = _broker_process(binds, config)
    actors = [
        ctx.Process(
            target=_actor,
            args=(ep["command"], ep["publish"], 1, name),
            kwargs={"nice": nice if name == "bench" else None},
            daemon=True,
        )
        for name in ("bench", "bulk", "events")
    ]
    stop, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
    # Either load can be left out (0), to tell which of the two delays commands.
    load, under_way = [], []
    for generator, amount in ((_bulk_sender, bulk_size), (_event_pacer, event_rate)):
        if amount:
            under_way.append(ctx.Event())
            load.append(
                ctx.Process(
                    target=generator,
                    args=(ep["command"], amount, under_way[-1], stop, out),
                    daemon=True,
                )
            )
    counter = ctx.Process(
        target=_event_counter,
        args=(ep["command"], ep["subscribe"], ready, stop, out),
        daemon=True,
    )
    try:
        for process in actors:
            process.start()
        wait_for_actors(ep["command"], ("bench", "bulk", "events"))
        idle = _timed(ctx, ep["command"], seconds, nice)
        counter.start()
        if not ready.wait(30):
            raise RuntimeError("the event subscriber was not ready within 30 s")
        for process in load:
            process.start()
        # The timing starts once each load has done a first unit (a transfer, a batch).
        if not all(event.wait(120) for event in under_way):
            raise RuntimeError("the load was not under way within 120 s")
        loaded = _timed(ctx, ep["command"], seconds, nice)
        bench_pid = actors[0].pid
        assert bench_pid is not None  # started above
        seen = {
            # getpriority of a pid: its main thread's nice value (Linux keeps one per thread).
            "broker": os.getpriority(os.PRIO_PROCESS, broker.pid),
            "bench actor": os.getpriority(os.PRIO_PROCESS, bench_pid),
            "timing client": int(loaded.pop("nice")),
        }
        idle.pop("nice")
        stop.set()
        reports = [out.get(timeout=180) for _ in range(len(load) + 1)]
    finally:
        stop.set()
        for process in [*load, counter, *actors]:
            if process.pid is not None:
                process.join(5)
                if process.is_alive():
                    process.terminate()
                    process.join(5)
        broker.terminate()
        broker.wait(10)
        folder.cleanup()
    figures: dict[str, Any] = {
        "seconds": seconds,
        "idle": idle,
        "loaded": loaded,
        "nice": nice,
        "nice_seen": seen,
        "transport": transport,
    }
    for entry in reports:
        if entry[0] == "bulk":
            figures["bulk_MB_per_s"] = entry[1] / entry[2] / 1e6
            figures["bulk_transfers"] = entry[1] // bulk_size
        elif entry[0] == "events":
            figures["events_published"] = entry[1]
            figures["events_published_per_s"] = entry[1] / entry[2]
        else:
            figures["events_received"] = entry[1]
            figures["events_missed"] = entry[2]
    figures["event_rate_asked"] = event_rate
    figures["bulk_size"] = bulk_size
    return figures


def report(figures: dict[str, Any]) -> str:
    """The figures as docs/BENCHMARKS.md records them."""
    rows = [
        "| commands (sequential `echo`) | calls | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for phase in ("idle", "loaded"):
        f = figures[phase]
        rows.append(
            f"| {phase} | {f['calls']:,} | {f['p50_ms']:.3f} | {f['p99_ms']:.3f} "
            f"| {f['max_ms']:.1f} |"
        )
    loaded_p99 = figures["loaded"]["p99_ms"]
    verdict = "met" if loaded_p99 < P99_TARGET_MS else "missed"
    rows.append(
        f"\nload during the loaded phase: {figures.get('bulk_transfers', 0)} transfers of "
        f"{figures['bulk_size'] / 2**20:.0f} MiB ({figures.get('bulk_MB_per_s', 0):,.0f} MB/s); "
        f"events published {figures.get('events_published_per_s', 0):,.0f}/s "
        f"(asked {figures['event_rate_asked']:,}/s); of {figures.get('events_published', 0):,} "
        f"published, {figures.get('events_received', 0):,} received by the subscriber, "
        f"{figures.get('events_missed', 0):,} seen missing (sequence gaps)"
    )
    if figures.get("nice") is not None:
        seen = ", ".join(f"{who} {value}" for who, value in figures["nice_seen"].items())
        rows.append(f"the measured path ran with nice = {figures['nice']} (read back: {seen})")
    rows.append(f"commands, bulk and events reached the broker over {figures['transport']}")
    rows.append(f"loaded p99 {loaded_p99:.3f} ms: target < {P99_TARGET_MS:g} ms {verdict}")
    return "\n".join(rows)
