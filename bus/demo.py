"""``linebus demo``: bring up a line, walk through what it does in plain words, shut it down.

The tour visits every actor of the config. Each actor kind contributes its own part through an
optional module ``actors.<kind>.demo`` with ``tour(bus, service, say)``; kinds without one get
the generic part (ping and describe). The bus itself is shown first: services, a call, progress,
events with sequence numbers, typed errors, and a crash that the supervisor repairs.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from bus import config as config_mod
from bus.client import Client
from bus.errors import BusError, Unavailable
from bus.supervisor import Supervisor

__all__ = ["run_demo"]

Say = Callable[[str], None]


def _say(text: str) -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except BusError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"demo: timed out waiting for {what}")


def _all_up(bus: Client, names: list[str]) -> bool:
    states = {row["name"]: row["state"] for row in bus.services(timeout=1.0)}
    return all(states.get(name) == "up" for name in names)


def _tour_bus(bus: Client, supervisor: Supervisor, echo: str | None) -> None:
    _heading("the line")
    for row in bus.services():
        _say(f"  {row['name']:<12} {row['kind']:<12} {row['state']:<5} pid {row['pid']}")
    if echo is None:
        return
    _heading(f"calling commands on {echo!r} through the broker")
    _say(f"  add(a=2, b=40) -> {bus.call(echo, 'add', a=2, b=40)}")
    try:
        bus.call(echo, "add", a="two")
    except BusError as exc:
        _say(f"  add(a='two') is refused before it runs: {exc}")
    try:
        bus.call("no-such-device", "ping")
    except BusError as exc:
        _say(f"  a service nobody registered: {exc}")
    _say("  a long command reports progress as it goes:")
    bus.call(
        echo,
        "work",
        steps=3,
        step_s=0.1,
        progress=lambda p: _say(f"    progress {p['done']}/{p['total']}"),
    )
    _heading("events")
    with bus.subscribe(f"{echo}.") as sub:
        sub.wait_ready()
        bus.call(echo, "emit", event="reading", count=3, data={"temp_c": 21.5})
        for _ in range(3):
            event = sub.next(5)
            if event is not None:
                _say(
                    f"  {event.topic} #{event.seq} {event.data} (gap detection: missed {event.missed})"
                )
    _heading("a crash, and the supervisor repairing it")
    old_pid = bus.call(echo, "ping")["pid"]
    job = bus.start(echo, "work", steps=100, step_s=0.1)
    next(iter(job.updates(timeout=5)), None)
    _say(
        f"  a 10-second job is running on {echo} (pid {old_pid}); killing that process with SIGKILL"
    )
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        job.result()
    except Unavailable as exc:
        _say(f"  the caller is told at once ({time.monotonic() - killed:.2f} s later): {exc}")
    new_pid = _wait(lambda: _new_pid(bus, echo, old_pid), 20, f"{echo} to restart")
    _say(
        f"  the supervisor restarted it as pid {new_pid}; next call: ping -> {bus.call(echo, 'ping')['kind']}"
    )


def _new_pid(bus: Client, name: str, old_pid: int) -> int | None:
    for row in bus.services(timeout=1.0):
        if row["name"] == name and row["state"] == "up" and row["pid"] != old_pid:
            return int(row["pid"])
    return None


def _tour_kind(bus: Client, name: str, kind: str) -> None:
    try:
        module = importlib.import_module(f"actors.{kind}.demo")
    except ModuleNotFoundError:
        _heading(f"{name} ({kind})")
        commands = sorted(bus.describe(name)["commands"])
        _say(f"  ping -> {bus.call(name, 'ping')}")
        _say(f"  {len(commands)} commands: {', '.join(commands)}")
        return
    _heading(f"{name} ({kind})")
    module.tour(bus, name, _say)


def run_demo(config_path: str) -> int:
    """Run the demo tour of ``config_path``; returns the exit code."""
    config = config_mod.load(config_path)
    # The tour's own lines tell the story; children log only warnings unless asked otherwise.
    os.environ.setdefault("LINEBUS_LOG_LEVEL", "warning")
    print(
        f"linebus demo: starting the line of {config_path} "
        f"({len(config.simulators)} simulators, {len(config.actors)} actors)",
        flush=True,
    )
    supervisor = Supervisor(config)
    stop = threading.Event()
    watcher = threading.Thread(target=supervisor.run, args=(stop,), name="supervisor", daemon=True)
    try:
        supervisor.start()
        watcher.start()
        names = [a.name for a in config.actors]
        with Client(
            config.broker.command, subscribe_endpoint=config.broker.subscribe, timeout=30
        ) as bus:
            _wait(lambda: _all_up(bus, names), 30, "every actor to come up")
            echo = next((a.name for a in config.actors if a.kind == "echo"), None)
            _tour_bus(bus, supervisor, echo)
            for actor in config.actors:
                if actor.kind != "echo":
                    _tour_kind(bus, actor.name, actor.kind)
            _heading("broker counters")
            stats = bus.stats()
            _say(f"  routed {stats['routed']}")
            _say(f"  dropped {stats['dropped']} (every drop is counted with its reason)")
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(timeout=30)
        else:
            supervisor.stop()
    print("\nlinebus demo: the line is shut down; every process has exited. Done.", flush=True)
    return 0
