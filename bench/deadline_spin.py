"""The broker's loop during and just after a burst of calls.

    python bench/deadline_spin.py [--tree DIR]   # DIR: run another checkout's broker instead

Prints, for asyncio calls 8 in flight with a 2 s call timeout: the broker's CPU per round trip
in the first 2 s and over the next 8 s, and after each the broker's CPU while the line sits
idle for 1.5 s. Answered requests stay in the broker's deadline heap until they come due; a
loop that turned a wait under a millisecond into ``poll(0)`` spun on them, costing a core for a
whole call timeout after every burst (BENCHMARKS.md, "Results, 2026-12-06").
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import time

from bus import bench
from bus.testing import free_port

#: The broker command, run from ``sys.argv[1]`` first on the import path (another checkout).
_BROKER = "import sys; sys.path.insert(0, sys.argv.pop(1)); from bus.cli import main; main()"
IN_FLIGHT = 8
CALL_TIMEOUT_S = 2.0
IDLE_S = 1.5


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _calls(endpoint: str, seconds: float) -> int:
    """``IN_FLIGHT`` tasks calling ``echo`` for ``seconds``; the number of calls answered."""
    from bus.aio import AsyncClient

    answered = 0
    end = time.perf_counter() + seconds
    async with AsyncClient(endpoint, timeout=CALL_TIMEOUT_S, keys=False) as client:

        async def caller() -> None:
            nonlocal answered
            while time.perf_counter() < end:
                await client.call("bench", "echo", value=bench.SMALL)
                answered += 1

        await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    return answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="", help="a checkout whose broker to run")
    args = parser.parse_args()
    ep = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("command", "publish", "subscribe")}
    command = [sys.executable, "-c", _BROKER, args.tree or os.getcwd(), "broker"]
    command += ["--bind", ep["command"], "--publish-bind", ep["publish"]]
    command += ["--subscribe-bind", ep["subscribe"]]
    broker = subprocess.Popen(command, env={**os.environ, "LINEBUS_LOG_LEVEL": "error"})
    actor = mp.get_context("spawn").Process(
        target=bench._actor, args=(ep["command"], ep["publish"]), daemon=True
    )
    actor.start()
    try:
        bench.wait_for_actors(ep["command"])
        for label, seconds in (("first 2 s", 2.0), ("next 8 s", 8.0)):
            before, began = _cpu_s(broker.pid), time.perf_counter()
            answered = asyncio.run(_calls(ep["command"], seconds))
            rate = answered / (time.perf_counter() - began)
            per_call_us = (_cpu_s(broker.pid) - before) / answered * 1e6
            before = _cpu_s(broker.pid)
            time.sleep(IDLE_S)  # measuring the idle broker, not waiting for something
            idle = _cpu_s(broker.pid) - before
            print(
                f"{label}: {rate:,.0f} round trips/s, broker {per_call_us:.0f} µs CPU per round "
                f"trip; then idle {IDLE_S} s: broker used {idle:.2f} s of CPU"
            )
    finally:
        actor.terminate()
        broker.terminate()
        broker.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
