"""Run a line: the broker, the simulators and one OS process per actor, restarted on crash.

``Supervisor(config).start()`` launches, in order, the broker (and waits until it answers), each
simulator (and waits for its ``{"event": "ready"}`` line), then each actor. ``poll()`` restarts
any process that exited, with exponential back-off capped at ``backoff_max_s``, and gives up on a
process restarted more than ``flap_max_restarts`` times within ``flap_window_s``. ``stop()`` stops
actors first (so they can finish and disconnect), then simulators, then the broker, each with
SIGTERM and, past ``stop_timeout_s``, SIGKILL. Children get SIGTERM if the supervisor itself dies
(Linux ``PR_SET_PDEATHSIG``), so no process is left behind even after ``kill -9``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any

import structlog

from bus.backoff import Backoff
from bus.config import LineConfig
from bus.errors import ConfigError, DeadlineExceeded

__all__ = ["ManagedProcess", "Supervisor"]

log = structlog.get_logger()

RUNNING = "running"
BACKOFF = "backoff"
FAILED = "failed"
STOPPED = "stopped"


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the supervisor dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass(slots=True, eq=False)
class ManagedProcess:
    """One supervised child: its command line, current process, and restart history."""

    name: str
    role: str
    argv: list[str]
    backoff: Backoff
    wait_ready: bool = False
    proc: subprocess.Popen[bytes] | None = None
    state: str = STOPPED
    restarts: deque[float] = field(default_factory=deque)
    restart_at: float = 0.0
    started_at: float = 0.0
    ready_info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        """The current process id, if running."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class Supervisor:
    """Start, watch and stop the processes of one line.

    Args:
        config: The line (from ``bus.config.load``).
        python: Interpreter for the children; this one by default.
    """

    def __init__(self, config: LineConfig, *, python: str | None = None) -> None:
        self.config = config
        self.python = python or sys.executable
        self.processes: list[ManagedProcess] = []
        self._lock = threading.Lock()
        self._stopping = False
        cfg_path = config.path
        if not cfg_path:
            raise ConfigError("the supervisor needs a config loaded from a file (children read it)")
        self._add("broker", "broker", ["-m", "bus.cli", "broker", "--config", cfg_path])
        for sim in config.simulators:
            self._add(sim.name, "simulator", ["-m", sim.module, *sim.args], sim.wait_ready)
        for actor in config.actors:
            self._add(actor.name, "actor", ["-m", "bus.cli", "actor", cfg_path, actor.name])

    def _add(self, name: str, role: str, args: list[str], wait_ready: bool = False) -> None:
        policy = self.config.supervisor
        backoff = Backoff(policy.backoff_initial_s, policy.backoff_max_s)
        self.processes.append(
            ManagedProcess(name, role, [self.python, *args], backoff, wait_ready=wait_ready)
        )

    def process(self, name: str) -> ManagedProcess:
        """The managed process called ``name``."""
        for managed in self.processes:
            if managed.name == name:
                return managed
        raise KeyError(name)

    # --- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every process in order; raise if the broker or a simulator does not come up."""
        for managed in self.processes:
            self._spawn(managed)
            if managed.role == "broker":
                self._wait_broker()
            elif managed.wait_ready:
                self._wait_ready_line(managed)
        log.info("line_up", processes=len(self.processes), config=self.config.path)

    def _spawn(self, managed: ManagedProcess) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        managed.proc = subprocess.Popen(
            managed.argv,
            stdout=subprocess.PIPE if managed.wait_ready else None,
            env=env,
            preexec_fn=_die_with_parent,
        )
        managed.state = RUNNING
        managed.started_at = time.monotonic()
        log.info("process_started", name=managed.name, role=managed.role, pid=managed.proc.pid)

    def _wait_broker(self) -> None:
        from bus.client import Client

        deadline = time.monotonic() + self.config.supervisor.ready_timeout_s
        with Client(self.config.broker.command, timeout=0.5) as client:
            while True:
                broker = self.process("broker")
                if broker.proc is not None and broker.proc.poll() is not None:
                    raise ConfigError(
                        f"the broker exited at start-up with code {broker.proc.returncode}"
                        f" (is {self.config.broker.command} in use?)"
                    )
                try:
                    client.ping(timeout=0.5)
                    return
                except Exception:  # not up yet; keep asking until the deadline
                    if time.monotonic() > deadline:
                        raise DeadlineExceeded(
                            "the broker did not answer within ready_timeout_s"
                        ) from None

    def _wait_ready_line(self, managed: ManagedProcess) -> None:
        """Read the child's stdout until its ready line, then keep draining it to our stderr."""
        assert managed.proc is not None and managed.proc.stdout is not None
        stdout = managed.proc.stdout
        found: dict[str, Any] = {}
        done = threading.Event()

        def reader() -> None:
            for raw in iter(stdout.readline, b""):
                if not done.is_set():
                    with contextlib.suppress(ValueError):
                        message = json.loads(raw)
                        if isinstance(message, dict) and message.get("event") == "ready":
                            found.update(message)
                            done.set()
                            continue
                sys.stderr.buffer.write(raw)
                sys.stderr.flush()
            done.set()

        threading.Thread(target=reader, name=f"stdout-{managed.name}", daemon=True).start()
        if not done.wait(self.config.supervisor.ready_timeout_s) or not found:
            raise DeadlineExceeded(f"simulator {managed.name!r} did not print its ready line")
        managed.ready_info = found
        # Passed as one field: a simulator's keys (e.g. "logger") could clash with structlog's own.
        log.info(
            "simulator_ready",
            name=managed.name,
            endpoints={k: v for k, v in found.items() if k != "event"},
        )

    # --- watch ------------------------------------------------------------------------------

    def poll(self) -> None:
        """Restart exited processes whose back-off has elapsed; give up on flapping ones."""
        now = time.monotonic()
        cfg = self.config.supervisor
        with self._lock:
            if self._stopping:
                return
            for managed in self.processes:
                if (
                    managed.state == RUNNING
                    and managed.proc is not None
                    and managed.proc.poll() is not None
                ):
                    code = managed.proc.returncode
                    managed.restarts.append(now)
                    while managed.restarts and now - managed.restarts[0] > cfg.flap_window_s:
                        managed.restarts.popleft()
                    if len(managed.restarts) > cfg.flap_max_restarts:
                        managed.state = FAILED
                        log.error(
                            "process_given_up",
                            name=managed.name,
                            exit_code=code,
                            restarts=len(managed.restarts) - 1,
                            window_s=cfg.flap_window_s,
                            hint="it keeps crashing; fix the cause and run `linebus up` again",
                        )
                        continue
                    # Back-off grows while a process keeps dying and resets once it ran a while.
                    if now - managed.started_at > max(cfg.backoff_max_s, 10.0):
                        managed.backoff.reset()
                    delay = managed.backoff.next_delay()
                    managed.restart_at = now + delay
                    managed.state = BACKOFF
                    log.warning(
                        "process_exited", name=managed.name, exit_code=code, restart_in_s=delay
                    )
                elif managed.state == BACKOFF and now >= managed.restart_at:
                    self._spawn(managed)
                    if managed.wait_ready:
                        with contextlib.suppress(DeadlineExceeded):
                            self._wait_ready_line(managed)

    def run(self, stop: threading.Event, interval_s: float = 0.1) -> None:
        """Poll until ``stop`` is set, then stop everything."""
        try:
            while not stop.wait(interval_s):
                self.poll()
        finally:
            self.stop()

    def status(self) -> list[dict[str, Any]]:
        """One row per process: name, role, state, pid, restarts in the flap window."""
        return [
            {
                "name": m.name,
                "role": m.role,
                "state": m.state,
                "pid": m.pid,
                "restarts": len(m.restarts),
            }
            for m in self.processes
        ]

    # --- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop actors, then simulators, then the broker; SIGKILL whatever outlives the timeout."""
        with self._lock:
            self._stopping = True
            for role in ("actor", "simulator", "broker"):
                group = [
                    (m, m.proc)
                    for m in self.processes
                    if m.role == role and m.proc is not None and m.proc.poll() is None
                ]
                for _, proc in group:
                    proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + self.config.supervisor.stop_timeout_s
                for managed, proc in group:
                    try:
                        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        log.warning(
                            "process_killed", name=managed.name, reason="did not stop in time"
                        )
                        proc.kill()
                        proc.wait(timeout=5)
                    managed.state = STOPPED
                    _close_pipe(proc.stdout)
            log.info("line_down")


def _close_pipe(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        with contextlib.suppress(OSError):
            pipe.close()
