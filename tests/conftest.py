"""Shared fixtures: free loopback ports, child processes that are always cleaned up, and a
running line (broker + actors as real processes) built from a generated config.

Timing knob: ``LINEBUS_TEST_TIME_FACTOR`` scales every timeout (not sleeps) for slow machines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bus.testing import free_port, wait_until

__all__ = ["free_port", "wait_until"]  # re-exported: tests import them from here

ROOT = Path(__file__).resolve().parent.parent
FACTOR = float(os.environ.get("LINEBUS_TEST_TIME_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """A timeout scaled for slow machines."""
    return seconds * FACTOR


@dataclass
class Endpoints:
    """The three broker endpoints of one test line."""

    command: str
    publish: str
    subscribe: str

    @classmethod
    def fresh(cls) -> Endpoints:
        """Three free ports on loopback."""
        return cls(*(f"tcp://127.0.0.1:{free_port()}" for _ in range(3)))


class Processes:
    """Starts child processes and guarantees they are gone at teardown (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(
        self, *argv: str, env: dict[str, str] | None = None, stdout: Any = None, stderr: Any = None
    ) -> subprocess.Popen[bytes]:
        """Run ``python argv...`` from the repository root."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, env=full_env, stdout=stdout, stderr=stderr
        )
        self.children.append(proc)
        return proc

    def cleanup(self) -> None:
        """Stop every child still running."""
        for proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.children:
            try:
                proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for proc in self.children:
            # Pipes a test asked for are closed here, not left to the garbage collector
            # (which would raise ResourceWarning: warnings are errors in this suite).
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """A process launcher whose children cannot outlive the test."""
    launcher = Processes()
    try:
        yield launcher
    finally:
        launcher.cleanup()


def write_config(
    path: Path,
    endpoints: Endpoints,
    actors: list[dict[str, Any]],
    *,
    heartbeat_s: float = 0.5,
    extra: str = "",
) -> Path:
    """Write a line config: the given endpoints, fast supervisor back-off, and ``actors``."""
    lines = [
        "[broker]",
        f'command = "{endpoints.command}"',
        f'publish = "{endpoints.publish}"',
        f'subscribe = "{endpoints.subscribe}"',
        f"heartbeat_s = {heartbeat_s}",
        f"heartbeat_timeout_s = {heartbeat_s * 2.5}",
        "",
        "[supervisor]",
        "backoff_initial_s = 0.1",
        "backoff_max_s = 0.5",
        "flap_window_s = 30.0",
        "flap_max_restarts = 3",
        "stop_timeout_s = 5.0",
        "",
    ]
    for actor in actors:
        lines.append("[[actor]]")
        for key, value in actor.items():
            if key != "options":
                lines.append(f"{key} = {json.dumps(value)}")
        if actor.get("options"):
            lines.append("[actor.options]")
            for key, value in actor["options"].items():
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines) + extra)
    return path


ECHO = {"kind": "echo", "class": "bus.testing:EchoActor"}


@dataclass
class Line:
    """A running test line: its config, endpoints and processes."""

    config: Path
    endpoints: Endpoints
    processes: Processes
    broker: subprocess.Popen[bytes] | None = None
    actors: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self, timeout: float = 5.0) -> Any:
        """A sync client of this line."""
        from bus.client import Client

        return Client(
            self.endpoints.command,
            subscribe_endpoint=self.endpoints.subscribe,
            timeout=scaled(timeout),
        )

    def start_broker(self) -> subprocess.Popen[bytes]:
        """Start (or restart) the broker process and wait until it answers."""
        self.broker = self.processes.start("-m", "bus.cli", "broker", "--config", str(self.config))
        with self.client(timeout=0.5) as client:
            wait_until(lambda: _pings(client), scaled(15), "broker to answer")
        return self.broker

    def start_actor(self, name: str) -> subprocess.Popen[bytes]:
        """Start the actor ``name`` of the config as its own process and wait until it is up."""
        proc = self.processes.start("-m", "bus.cli", "actor", str(self.config), name)
        self.actors[name] = proc
        self.wait_up(name, pid=proc.pid)
        return proc

    def wait_up(self, name: str, pid: int | None = None, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until ``name`` is up (and, if given, served by process ``pid``)."""
        with self.client(timeout=1.0) as client:

            def up() -> dict[str, Any] | None:
                for row in client.services():
                    if (
                        row["name"] == name
                        and row["state"] == "up"
                        and (pid is None or row["pid"] == pid)
                    ):
                        return dict(row)
                return None

            return wait_until(up, scaled(timeout), f"{name} up")


def _pings(client: Any) -> bool:
    try:
        client.ping(timeout=0.5)
        return True
    except Exception:  # not up yet
        return False


def wait_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Read a child's stdout until its ``{"event": "ready", ...}`` line (simulators print one)."""
    import selectors

    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < end:
        if not selector.select(timeout=max(0.0, end - time.monotonic())):
            break
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buffered += chunk
        for line in buffered.split(b"\n"):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("event") == "ready":
                return message
    pytest.fail(f"no ready line from {proc.args} within {timeout:.1f} s; got {buffered[-500:]!r}")


@pytest.fixture
def line(tmp_path: Path, processes: Processes) -> Line:
    """A line config with two echo actors (``echo1``, ``echo2``); nothing started yet."""
    endpoints = Endpoints.fresh()
    config = write_config(
        tmp_path / "line.toml", endpoints, [{"name": "echo1", **ECHO}, {"name": "echo2", **ECHO}]
    )
    return Line(config, endpoints, processes)


@pytest.fixture
def running_line(line: Line) -> Line:
    """The ``line`` with its broker and ``echo1`` running as separate processes."""
    line.start_broker()
    line.start_actor("echo1")
    return line
