"""Recovery: how long a killed actor takes to serve again under ``linebus up``'s default settings.

    python bench/recovery.py [--kills 10] [--spacing 12.5] [--json]

One line in a temporary directory: a broker and one echo actor (``bus.testing:EchoActor``)
under ``linebus up``, with the default ``[supervisor]`` and ``[broker]`` timing (no table in the
config). ``--kills`` times: wait until the actor has served for ``--spacing`` seconds (a healthy
run: more than ``healthy_run_s``, 5 s; and kills far enough apart that no more than
``flap_max_restarts`` (5) fall within ``flap_window_s`` (60 s), or the supervisor rightly gives
the actor up as flapping), ``kill -9`` it, then call ``ping`` every 10 ms as the
documented retry advice says (``unavailable`` is retryable; anything else ends the run with an
error) until a call succeeds from a new pid. Each kill's time is kill → that first successful
reply, split at the new process's creation (its start time in ``/proc``, 10 ms resolution):

- **restart**: kill → the new process exists (the supervisor noticing the exit, its restart
  policy's delay);
- **start-up**: → the first successful reply (interpreter and imports, the device opened, the
  broker connection, registration, the call itself).

It prints median and max of each, and the whole. Only the bench's own processes are started,
and all are stopped at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bus.client import Client
from bus.errors import BusError
from bus.testing import free_port

SERVICE = "echo1"
RETRY_S = 0.01


def write_config(directory: Path) -> Path:
    """A line of one echo actor on free loopback ports, every timing at its default."""
    ports = [free_port() for _ in range(3)]
    path = directory / "line.toml"
    path.write_text(
        "[broker]\n"
        f'command = "tcp://127.0.0.1:{ports[0]}"\n'
        f'publish = "tcp://127.0.0.1:{ports[1]}"\n'
        f'subscribe = "tcp://127.0.0.1:{ports[2]}"\n\n'
        "[[actor]]\n"
        f'name = "{SERVICE}"\n'
        'kind = "echo"\n'
        'class = "bus.testing:EchoActor"\n'
    )
    return path


def _now() -> float:
    """Seconds on the clock /proc's process start times count on (since boot)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float:
    """When process ``pid`` was created, on ``_now``'s clock (Linux, 10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime


def serving_pid(bus: Client, old_pid: int | None, timeout: float) -> tuple[float, int]:
    """Call ping every ``RETRY_S`` until a process other than ``old_pid`` answers; return when
    and its pid. ``unavailable`` (retryable) is retried; any other error is raised."""
    end = time.monotonic() + timeout
    while True:
        try:
            pid = int(bus.call(SERVICE, "ping", timeout=1.0)["pid"])
        except BusError as exc:
            if not exc.retryable or time.monotonic() > end:
                raise
        else:
            if pid != old_pid:
                return _now(), pid
        time.sleep(RETRY_S)


def run(kills: int, spacing_s: float) -> dict[str, Any]:
    """Kill the actor ``kills`` times; return the figures in seconds."""
    with tempfile.TemporaryDirectory(prefix="linebus-recovery-") as tmp:
        config = write_config(Path(tmp))
        env = {**os.environ, "LINEBUS_LOG_LEVEL": "error"}
        up = subprocess.Popen([sys.executable, "-m", "bus.cli", "up", str(config)], env=env)
        rows: list[dict[str, float]] = []
        endpoint = config.read_text().split('"')[1]
        try:
            with Client(endpoint, timeout=30) as bus:
                served_at, pid = serving_pid(bus, None, 60)
                for _ in range(kills):
                    time.sleep(max(0.0, served_at + spacing_s - _now()))
                    killed = _now()
                    os.kill(pid, signal.SIGKILL)
                    served_at, pid = serving_pid(bus, pid, 15)
                    started = started_at(pid)
                    rows.append(
                        {
                            "restart": started - killed,
                            "start-up": served_at - started,
                            "total": served_at - killed,
                        }
                    )
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=20)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
    return {
        name: {
            "median_s": statistics.median(row[name] for row in rows),
            "max_s": max(row[name] for row in rows),
        }
        for name in ("restart", "start-up", "total")
    } | {"kills": kills}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="how many kill -9 (default 10)")
    parser.add_argument(
        "--spacing",
        type=float,
        default=12.5,
        help="seconds each new process serves before it is killed (default 12.5: a healthy"
        " run, and at most 5 kills a minute, under the flap limit)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run(args.kills, args.spacing)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"kill -9 of an actor -> first successful call, {args.kills} kills:")
    print(f"{'':<10} {'median':>8} {'max':>8}")
    for name in ("restart", "start-up", "total"):
        row = figures[name]
        print(f"{name:<10} {row['median_s']:>7.3f}s {row['max_s']:>7.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
