"""The bus's own part of ``linebus demo``, on the config's ``echo`` actor (``bus.testing.EchoActor``).

``tour`` lists the line and, with an echo actor, calls commands through the broker, follows a
long command's progress, receives events with their sequence numbers, shows typed errors, and
kills the actor mid-job so the caller is told at once and the supervisor restarts it (an actor in
another container or on another host is asked to exit instead: its restart policy brings it back).
``generic`` is the part of an actor kind without a tour of its own; ``counters`` closes the
demo with the broker's counters, and ``metrics`` with the same read from its ``/metrics``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.request
from pathlib import Path

from bus.client import Client
from bus.errors import BusError, Unavailable
from bus.testing import wait_until
from bus.tours import Say

__all__ = ["counters", "generic", "metrics", "tour"]


def tour(bus: Client, echo: str | None, say: Say) -> None:
    """The line's services; with an ``echo`` actor, calls, progress, events, errors and a crash."""
    say("\n== the line ==")
    for row in bus.services():
        say(f"  {row['name']:<12} {row['kind']:<12} {row['state']:<5} pid {row['pid']}")
    if echo is None:
        return
    say(f"\n== calling commands on {echo!r} through the broker ==")
    say(f"  add(a=2, b=40) -> {bus.call(echo, 'add', a=2, b=40)}")
    try:
        bus.call(echo, "add", a="two")
    except BusError as exc:
        say(f"  add(a='two') is refused before it runs: {exc}")
    try:
        bus.call("no-such-device", "ping")
    except BusError as exc:
        say(f"  a service nobody registered: {exc}")
    say("  a long command reports progress as it goes:")
    bus.call(
        echo,
        "work",
        steps=3,
        step_s=0.1,
        progress=lambda p: say(f"    progress {p['done']}/{p['total']}"),
    )
    say("\n== events ==")
    with bus.subscribe(f"{echo}.") as sub:
        sub.wait_ready()
        bus.call(echo, "emit", event="reading", count=3, data={"temp_c": 21.5})
        for _ in range(3):
            event = sub.next(5)
            if event is not None:
                say(
                    f"  {event.topic} #{event.seq} {event.data} (gap detection: missed {event.missed})"
                )
    say("\n== a crash, and the supervisor repairing it ==")
    old_pid = bus.call(echo, "ping")["pid"]
    job = bus.start(echo, "work", steps=100, step_s=0.1)
    next(iter(job.updates(timeout=5)), None)
    if _local_actor(old_pid, echo):
        say(
            f"  a 10-second job is running on {echo} (pid {old_pid});"
            " killing that process with SIGKILL"
        )
        os.kill(old_pid, signal.SIGKILL)
    else:  # in another container or on another host: its pid is not ours to signal
        say(
            f"  a 10-second job is running on {echo} (pid {old_pid}, not on this host);"
            " asking it to exit at once"
        )
        with contextlib.suppress(Unavailable):
            bus.call(echo, "exit", code=137)
    killed = time.monotonic()
    try:
        job.result()
    except Unavailable as exc:
        say(f"  the caller is told at once ({time.monotonic() - killed:.2f} s later): {exc}")
    new_pid = wait_until(
        lambda: _new_pid(bus, echo, old_pid), 20, f"{echo} to restart", ignore=(BusError,)
    )
    kind = bus.call(echo, "ping")["kind"]
    say(f"  the supervisor restarted it as pid {new_pid}; next call: ping -> {kind}")


def _local_actor(pid: int, name: str) -> bool:
    """Whether ``pid`` is, on this host, the process of actor ``name`` (``linebus actor CONFIG
    NAME``): never signal a process that merely has the same number in another pid namespace."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"actor" in argv and name.encode() in argv


def _new_pid(bus: Client, name: str, old_pid: int) -> int | None:
    for row in bus.services(timeout=1.0):
        if row["name"] == name and row["state"] == "up" and row["pid"] != old_pid:
            return int(row["pid"])
    return None


def generic(bus: Client, service: str, say: Say) -> None:
    """Ping an actor and list its commands (for a kind without a tour of its own)."""
    commands = sorted(bus.describe(service)["commands"])
    say(f"  ping -> {bus.call(service, 'ping')}")
    say(f"  {len(commands)} commands: {', '.join(commands)}")


def counters(bus: Client, say: Say) -> None:
    """The broker's counters: messages routed and dropped."""
    say("\n== broker counters ==")
    stats = bus.stats()
    say(f"  routed {stats['routed']}")
    say(f"  dropped {stats['dropped']} (every drop is counted with its reason)")


def metrics(url: str, say: Say) -> None:
    """The same figures as Prometheus scrapes them from the broker's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    say("\n== metrics (Prometheus) ==")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except OSError as exc:
        say(f"  {url} could not be read: {exc}")
        return
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def total(name: str) -> int:
        return int(sum(s.value for s in samples if s.name == name))

    say(f"  {url}: {len(samples)} samples, for Prometheus to scrape (README, 'Metrics')")
    say(
        f"  {total('linebus_service_up')} services up, "
        f"restarts: {total('linebus_service_restarts_total')}, "
        f"{total('linebus_request_duration_seconds_count')} answers timed in the latency "
        "histograms"
    )
    telemetry = [s for s in samples if s.name == "linebus_telemetry_stats_success"]
    if telemetry:
        say(
            f"  telemetry: {total('linebus_telemetry_stats_success')} of {len(telemetry)} actors"
            f" answered the scrape's stats call, {total('linebus_telemetry_pending_messages')}"
            " messages pending upstream"
        )
