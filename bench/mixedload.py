"""Steady mixed load on the demo line, every call's outcome recorded (fault suite and soak).

``MixedLoad(line).start()`` runs, each in a thread with a client of its own:

- ``commands-N``: ``clients`` callers cycling through short commands of every actor (echo's
  ``add`` and ``emit``, a FlashRunner key, printer info, discovery's list, the remote lab's
  workspace types, telemetry's pending count), each with a deadline of ``CALL_DEADLINE_S``;
- ``events``: a subscriber to the echo actor's events (its ``emit`` calls publish them);
- ``telemetry``: ``enqueue_messages`` of small batches of readings whose payload is a unique id,
  each acknowledged id kept (``acked``);
- ``flashrunner``: a firmware image sent again and again (``FR_SendFile``, a long command);
- ``flux``: a file uploaded to printer p2 again and again (``upload_file``, a long command).

A call ends in a reply or a typed error (``BusError.code``); either is a ``CallRecord`` with its
duration. A call that outlives its deadline by more than ``HANG_SLACK_S`` is a hang. The load is
steady, not a stress: each caller pauses between calls, so that on a shared 2-core machine the
line's own processes (and their restarts) keep the CPU they need.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from bench.demoline import STREAM, DemoLine
from bus.client import Client
from bus.errors import BusError

#: Deadline of each short command.
CALL_DEADLINE_S = 3.0
#: Deadline of each transfer (a 64 KiB image, a 32 KiB upload).
TRANSFER_DEADLINE_S = 30.0
#: How far past its deadline a call may end before it counts as a hang (scheduling on a loaded
#: machine; the client enforces the deadline itself).
HANG_SLACK_S = 2.0
#: Readings per telemetry batch.
BATCH = 10


@dataclass(frozen=True)
class CallRecord:
    """One call: what, when it started (monotonic), how long it took, how it ended."""

    worker: str
    what: str
    started: float
    elapsed: float
    deadline: float
    code: str  # "ok" or the typed error's code

    @property
    def hung(self) -> bool:
        """Whether it ended later than its deadline allows."""
        return self.elapsed > self.deadline + HANG_SLACK_S


@dataclass
class Ledger:
    """Every call's record, the acknowledged telemetry ids, the events received."""

    records: list[CallRecord] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    events: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: CallRecord) -> None:
        """Record one call."""
        with self.lock:
            self.records.append(record)

    def snapshot(self) -> list[CallRecord]:
        """Every call recorded so far, in the order they ended."""
        with self.lock:
            return list(self.records)

    def failures(self) -> Counter[str]:
        """Failed calls by error code."""
        return Counter(r.code for r in self.snapshot() if r.code != "ok")

    def hangs(self) -> list[CallRecord]:
        """The calls that outlived their deadline."""
        return [r for r in self.snapshot() if r.hung]


#: The short commands the callers cycle through: (service, command, args).
COMMANDS: list[tuple[str, str, dict[str, Any]]] = [
    ("echo", "add", {"a": 2, "b": 40}),
    ("echo", "emit", {"event": "reading", "count": 5, "data": {"temp_c": 21.5}}),
    ("fr1", "FR_GetPublicKey", {}),
    ("p1", "deviceinfo", {}),
    ("discovery", "list", {}),
    ("lab", "get_wtypes", {}),
    ("telemetry", "pending_messages_count", {}),
]


class MixedLoad:
    """The load's threads on ``line`` (see the module docstring).

    Args:
        line: A started ``DemoLine``.
        clients: How many command callers.
        pause_s: Pause of each caller between two calls.
        run_id: Prefix of the telemetry ids (unique per run: the store outlives a run).
    """

    def __init__(
        self, line: DemoLine, *, clients: int = 3, pause_s: float = 0.05, run_id: str = ""
    ) -> None:
        self.line = line
        self.clients = clients
        self.pause_s = pause_s
        self.run_id = run_id or f"r{os.getpid()}-{int(time.time())}"
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ids = count()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start every caller's thread."""
        workers: list[tuple[str, Callable[[str], None]]] = [
            *((f"commands-{i}", self._commands) for i in range(self.clients)),
            ("events", self._events),
            ("telemetry", self._telemetry),
            ("flashrunner", self._flashrunner),
            ("flux", self._flux),
        ]
        for name, target in workers:
            thread = threading.Thread(target=target, args=(name,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 60.0) -> list[str]:
        """Stop the callers; return the names of those still running after ``timeout`` (a hang:
        a call that never returned)."""
        self.stopping.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    # --- the callers ------------------------------------------------------------------------

    def _call(
        self,
        client: Client,
        worker: str,
        service: str,
        command: str,
        args: dict[str, Any],
        deadline: float,
    ) -> Any:
        """One call, recorded; its result, or None when it failed with a typed error."""
        started = time.monotonic()
        try:
            result = client.call(service, command, args, timeout=deadline)
            code = "ok"
        except BusError as exc:
            result, code = None, exc.code
        self.ledger.add(
            CallRecord(
                worker, f"{service}.{command}", started, time.monotonic() - started, deadline, code
            )
        )
        return result

    def _loop(self, worker: str, step: Callable[[Client], None], pause_s: float) -> None:
        with self.line.client(timeout=CALL_DEADLINE_S) as client:
            while not self.stopping.is_set():
                step(client)
                self.stopping.wait(pause_s)

    def _commands(self, worker: str) -> None:
        cycle = _cycle(COMMANDS)

        def step(client: Client) -> None:
            service, command, args = next(cycle)
            self._call(client, worker, service, command, args, CALL_DEADLINE_S)

        self._loop(worker, step, self.pause_s)

    def _events(self, worker: str) -> None:
        # One subscription throughout: its socket reconnects by itself after a broker restart.
        with self.line.client() as client, client.subscribe("echo.") as events:
            while not self.stopping.is_set():
                if events.next(timeout=0.5) is not None:
                    with self.ledger.lock:
                        self.ledger.events += 1

    def _telemetry(self, worker: str) -> None:
        def step(client: Client) -> None:
            ids = [f"{self.run_id}-{next(self._ids)}" for _ in range(BATCH)]
            acks = self._call(
                client,
                worker,
                "telemetry",
                "enqueue_messages",
                {"messages": ids, "stream": STREAM},
                CALL_DEADLINE_S,
            )
            if acks is not None:
                with self.ledger.lock:
                    self.ledger.acked.extend(ids)

        self._loop(worker, step, self.pause_s * 2)

    def _flashrunner(self, worker: str) -> None:
        image = os.urandom(64 * 1024)
        args = {"name": "faults.frb", "data": image, "file_type": "FRB"}

        def step(client: Client) -> None:
            self._call(client, worker, "fr1", "FR_SendFile", args, TRANSFER_DEADLINE_S)

        self._loop(worker, step, 0.5)

    def _flux(self, worker: str) -> None:
        args = {"data": b"G28\n" * 8192, "upload_to": "/SD/faults.gcode"}

        def step(client: Client) -> None:
            self._call(client, worker, "p2", "upload_file", args, TRANSFER_DEADLINE_S)

        self._loop(worker, step, 0.5)


def _cycle(
    items: list[tuple[str, str, dict[str, Any]]],
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    while True:
        yield from items
