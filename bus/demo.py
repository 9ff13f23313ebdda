"""``linebus demo``: bring up a line, walk through what it does in plain words, shut it down.

This is the runner: it starts the line of a config under a supervisor, waits for every actor,
and hands each part to its tour in ``bus.tours``: first the bus itself (``bus.tours.line``),
then every actor of the config through the module named after its kind
(``bus.tours.<kind>``, with ``tour(bus, service, say)``; kinds without one get the generic part,
ping and describe), and last the broker's counters.

``run_tour`` is the same tour against a line that is already up (a compose stack, or a line
spread over hosts): it starts nothing and takes its endpoints from the config (or
``LINEBUS_ENDPOINT``/``LINEBUS_SUBSCRIBE``) and its keys from the environment.
"""

from __future__ import annotations

import importlib
import os
import threading

from bus import config as config_mod
from bus.client import Client, KeysArg
from bus.errors import BusError
from bus.supervisor import SUPERVISOR_IDENTITY, Supervisor
from bus.testing import wait_until
from bus.tours import line

__all__ = ["run_demo", "run_tour", "web_url"]


def _say(text: str) -> None:
    print(text, flush=True)


def _all_up(bus: Client, names: list[str]) -> bool:
    states = {row["name"]: row["state"] for row in bus.services(timeout=1.0)}
    return all(states.get(name) == "up" for name in names)


def _tour_kind(bus: Client, name: str, kind: str) -> None:
    _say(f"\n== {name} ({kind}) ==")
    try:
        module = importlib.import_module(f"bus.tours.{kind}")
    except ModuleNotFoundError:
        line.generic(bus, name, _say)
        return
    module.tour(bus, name, _say)


def tour_identity(config: config_mod.LineConfig) -> str:
    """Who the tour calls as on a secured line: the first operator with a key in the keys
    directory (the tour calls privileged commands), else the supervisor's identity."""
    security = config.security
    for name in security.acl.get("operators", []):
        if isinstance(name, str) and name not in security.known:
            return name
    return SUPERVISOR_IDENTITY


def web_url(listen: str) -> str:
    """The dashboard's URL for a ``[web] listen`` address (a wildcard host shown as loopback).

    >>> web_url("127.0.0.1:8750"), web_url("0.0.0.0:8750")
    ('http://127.0.0.1:8750/', 'http://127.0.0.1:8750/')
    """
    host, port = config_mod.parse_listen(listen)
    if host in ("0.0.0.0", "::", "*"):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


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
        if config.web is not None:
            print(f"linebus demo: the dashboard is at {web_url(config.web.listen)}", flush=True)
        keys: KeysArg = False
        if supervisor.keys is not None:
            identity = tour_identity(config)
            keys = supervisor.keys.client_keys(identity)
            print(
                f"linebus demo: the line is secured (CURVE); the tour calls as {identity!r}"
                f" (key {keys.source})",
                flush=True,
            )
        _tour(config, keys)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(timeout=30)
        else:
            supervisor.stop()
    print("\nlinebus demo: the line is shut down; every process has exited. Done.", flush=True)
    return 0


def run_tour(config_path: str) -> int:
    """Run the demo tour of ``config_path`` against its line, already up; returns the exit code.

    Keys come from the environment (``LINEBUS_KEY_FILE``, ``LINEBUS_BROKER_KEY_FILE``); on a
    secured line they must be an operator's, as the tour calls privileged commands.
    """
    config = config_mod.load(config_path)
    print(f"linebus tour: touring the running line of {config_path}", flush=True)
    _tour(config, None)
    print("\nlinebus tour: done.", flush=True)
    return 0


def _tour(config: config_mod.LineConfig, keys: KeysArg) -> None:
    """Wait for every actor of ``config`` to be up, then tour them all."""
    names = [a.name for a in config.actors]
    here = config.broker.endpoints_from_here()
    with Client(
        here["command"],
        subscribe_endpoint=here["subscribe"],
        timeout=30,
        keys=keys,
    ) as bus:
        wait_until(lambda: _all_up(bus, names), 30, "every actor to come up", ignore=(BusError,))
        echo = next((a.name for a in config.actors if a.kind == "echo"), None)
        line.tour(bus, echo, _say)
        for actor in config.actors:
            if actor.kind != "echo":
                _tour_kind(bus, actor.name, actor.kind)
        line.counters(bus, _say)
        if config.broker.metrics is not None:
            line.metrics(web_url(config.broker.metrics) + "metrics", _say)
