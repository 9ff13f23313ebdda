"""Slow subscribers: does one subscriber that stops reading hurt the others, or the broker?

    python bench/slow_subscriber_bench.py [--rate 20000] [--seconds 5] [--subscriber-queue N]

Real processes on loopback: a ``linebus broker``, an ``EchoActor`` named ``bench`` that
publishes ``bench.reading`` events (``SMALL``, 60 bytes of msgpack) when this script calls its
``emit`` in paced chunks, one normal subscriber (``Client.subscribe``, counting what it receives
and what it detects as missed), and for the second run of each pair a *stalled* subscriber: it
subscribes to the same events and never reads one.

For each publish rate (``--rate``, paced; ``0`` is as fast as the actor publishes), it runs the
line without then with the stalled subscriber and prints, for the normal subscriber, the share of
events delivered, and the ratio of the two runs (1.00: the stalled one costs nothing). It also
samples the broker's RSS every 50 ms and prints its peak beside its idle size, so the memory a
stalled subscriber can pin in the broker is measured, not guessed. Results: docs/BENCHMARKS.md,
"Slow subscribers".
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bus.bench import SMALL, _actor, _broker_process, _rss_mb, _stop
from bus.client import Client
from bus.testing import free_port, wait_until

#: Events per ``emit`` call at most (one call runs inline in the actor's event loop).
CHUNK = 2_000


def _normal(ep: dict[str, str], ready: Any, out: Any, work_s: float = 0.0) -> None:
    """Count ``bench.reading`` events received and detected missed until ``bench.end``,
    spending ``work_s`` of CPU on each (a consumer that does something with its events)."""
    with (
        Client(ep["command"], subscribe_endpoint=ep["subscribe"], keys=False) as client,
        client.subscribe("bench.", timeout=60) as sub,
    ):
        sub.wait_ready(timeout=20)
        with ready.get_lock():
            ready.value += 1
        received = missed = 0
        for event in sub:
            if event.topic == "bench.reading":
                received += 1
                missed += event.missed
                if work_s:
                    busy_until = time.perf_counter() + work_s
                    while time.perf_counter() < busy_until:
                        pass
            elif event.topic == "bench.end":
                break
        out.put((received, missed))


def _stalled(ep: dict[str, str], ready: Any, max_queue: int | None, reads: float) -> None:
    """Subscribe to the same events, then read ``reads`` of them per second (0: never read one)
    until terminated."""
    with (
        Client(ep["command"], subscribe_endpoint=ep["subscribe"], keys=False) as client,
        client.subscribe("bench.", max_queue=max_queue) as sub,
    ):
        sub.wait_ready(timeout=20)
        with ready.get_lock():
            ready.value += 1
        if reads <= 0:
            signal.pause()
        start, got = time.perf_counter(), 0
        while True:
            ahead = got / reads - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
            if sub.next(1.0) is not None:
                got += 1


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssPeak(threading.Thread):
    """The peak RSS of process ``pid`` (MiB), sampled every 50 ms until ``stop``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.05):
            self.peak = max(self.peak, _rss_mb(self.pid))

    def stop(self) -> float:
        self._halt.set()
        self.join(5)
        return self.peak


def _publish(client: Client, rate: float, seconds: float) -> tuple[int, float]:
    """Emit ``bench.reading`` at ``rate`` per second (0: flat out) for ``seconds``; returns the
    count and the rate achieved."""
    sent = 0
    start = time.perf_counter()
    end = start + seconds
    chunk = CHUNK if rate <= 0 else max(1, min(CHUNK, int(rate / 100)))
    while (now := time.perf_counter()) < end:
        if rate > 0 and sent > (now - start) * rate:
            time.sleep(min(0.01, sent / rate - (now - start)))
            continue
        client.call("bench", "emit", event="reading", count=chunk, data=SMALL)
        sent += chunk
    return sent, sent / (time.perf_counter() - start)


def run_once(
    rate: float,
    seconds: float,
    stalled: bool,
    queue: int | None,
    stalled_queue: int | None = None,
    reads: float = 0.0,
    work_s: float = 0.0,
) -> dict[str, Any]:
    """One line, one measured run; torn down after."""
    ctx = mp.get_context("spawn")
    port = free_port()
    ep = {
        "command": f"tcp://127.0.0.1:{port}",
        "publish": f"tcp://127.0.0.1:{free_port()}",
        "subscribe": f"tcp://127.0.0.1:{free_port()}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        config = None
        if queue is not None:
            config = Path(tmp) / "line.toml"
            config.write_text(f"[broker]\nsubscriber_queue = {queue}\n")
        broker = _broker_process(ep, config)
        procs = [ctx.Process(target=_actor, args=(ep["command"], ep["publish"]), daemon=True)]
        ready = ctx.Value("i", 0)
        out: Any = ctx.Queue()
        procs.append(ctx.Process(target=_normal, args=(ep, ready, out, work_s), daemon=True))
        if stalled:
            procs.append(
                ctx.Process(target=_stalled, args=(ep, ready, stalled_queue, reads), daemon=True)
            )
        for proc in procs:
            proc.start()
        try:
            with Client(ep["command"], timeout=60, keys=False) as client:
                wait_until(
                    lambda: any(s["name"] == "bench" for s in client.services()),
                    60,
                    "bench actor up",
                )
                wait_until(lambda: ready.value >= len(procs) - 1, 60, "subscribers ready")
                time.sleep(0.5)  # the subscriptions reach the actor's XPUB
                idle = _rss_mb(broker.pid)
                peak = RssPeak(broker.pid)
                peak.start()
                watched = {"broker": broker.pid, "stalled": procs[-1].pid if stalled else None}
                cpu0 = {k: _cpu_s(pid) for k, pid in watched.items() if pid}
                sent, achieved = _publish(client, rate, seconds)
                cpu = {k: _cpu_s(pid) - cpu0[k] for k, pid in watched.items() if pid}
                for _ in range(200):  # until the normal subscriber has seen one
                    client.call("bench", "emit", event="end")
                    if not out.empty():
                        break
                    time.sleep(0.05)
                received, missed = out.get(timeout=120)
                top = peak.stop()
        finally:
            _stop(procs, [broker])
    return {
        "sent": sent,
        "rate": achieved,
        "delivered": received / sent,
        "missed": missed,
        "rss_idle_mb": idle,
        "rss_peak_mb": top,
        "cpu_broker_s": cpu["broker"],
        "cpu_stalled_s": cpu.get("stalled", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        help="publish rate, events/s (repeatable; 0: flat out); default 20000 and 0",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="publishing time per run")
    parser.add_argument(
        "--subscriber-queue", type=int, default=None, help="[broker] subscriber_queue"
    )
    parser.add_argument(
        "--stalled-queue",
        type=int,
        default=None,
        help="the stalled subscriber's max_queue (default: none, the client's default)",
    )
    parser.add_argument(
        "--slow-reads",
        type=float,
        default=0.0,
        help="events/s the second subscriber reads (default 0: it never reads, it is stalled)",
    )
    parser.add_argument(
        "--work-us",
        type=float,
        default=0.0,
        help="CPU microseconds the normal subscriber spends per event (default 0)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs per rate")
    args = parser.parse_args()
    os.environ.setdefault("LINEBUS_LOG_LEVEL", "error")
    print(
        f"{'rate asked':>10} {'stalled':>7} {'rate got':>9} {'delivered':>9} {'missed':>8}"
        f" {'ratio':>6} {'broker RSS idle/peak MiB':>25} {'CPU s broker/stalled':>21}"
    )
    for rate in args.rate or [20_000.0, 0.0]:
        for _ in range(args.rounds):
            work_s = args.work_us / 1e6
            base = run_once(rate, args.seconds, False, args.subscriber_queue, work_s=work_s)
            slow = run_once(rate, args.seconds, True, args.subscriber_queue, args.stalled_queue)
            for row, stalled in ((base, False), (slow, True)):
                ratio = row["delivered"] / base["delivered"] if base["delivered"] else 0.0
                print(
                    f"{rate or 'max':>10} {'yes' if stalled else 'no':>7} {row['rate']:>9,.0f}"
                    f" {row['delivered']:>9.1%} {row['missed']:>8,}"
                    f" {ratio:>6.2f} {row['rss_idle_mb']:>15.1f} / {row['rss_peak_mb']:<7.1f}"
                    f" {row['cpu_broker_s']:>12.2f} / {row['cpu_stalled_s']:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
