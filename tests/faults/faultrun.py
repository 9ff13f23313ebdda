"""A fault run: the faults, in a seeded random order at seeded random moments, against a loaded
demo line, each followed by the checks; then the report table.

``plan`` says which faults: every supervised process killed (SIGKILL) ``rounds`` times, and some
processes stopped (SIGSTOP) for longer than the broker's heartbeat timeout (a frozen actor must
be listed down by the broker meanwhile), then continued (SIGCONT). ``FaultRun.inject`` performs
one fault and waits, with a generous bound, until the process is back (another pid, for a kill)
and serving (``DemoLine.probe``), then until every telemetry reading acknowledged so far is at
the ingest server exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.demoline import DemoLine
from bench.mixedload import MixedLoad
from bus.testing import wait_until

#: How long a process may take to serve again after a fault before the run fails: generous, as
#: the assertions are on correctness, not on timing (issue 14 item 2 is about making it fast).
RECOVERY_BOUND_S = 30.0
#: How long acknowledged readings may take to reach the ingest server after a fault.
FORWARD_BOUND_S = 45.0


@dataclass(frozen=True)
class Fault:
    """One fault to inject: ``kill`` (SIGKILL) or ``stop`` (SIGSTOP, then SIGCONT) of ``name``."""

    kind: str
    name: str

    @property
    def row(self) -> str:
        """Its row in the recovery table: the process, marked when it was frozen."""
        return self.name if self.kind == "kill" else f"{self.name} (stop)"


@dataclass
class FaultRun:
    """The faults of one run and what was measured (see the module docstring)."""

    line: DemoLine
    load: MixedLoad
    rng: random.Random
    #: The largest pause before a fault (its moment is random within it).
    max_pause_s: float = 1.0
    #: Seconds to recover, by process, from each fault.
    recovery: dict[str, list[float]] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)

    def inject(self, fault: Fault) -> None:
        """Inject ``fault``, wait until the process serves again and the readings are through."""
        self.load.stopping.wait(self.rng.uniform(0.1, self.max_pause_s))  # a random moment
        pid = self.line.pid(fault.name)
        assert pid is not None, f"{fault.name} is not running before its fault"
        factor = self.line.factor
        if fault.kind == "kill":
            started = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            back = self.line.wait_serving(fault.name, RECOVERY_BOUND_S, not_pid=pid)
        else:
            os.kill(pid, signal.SIGSTOP)
            try:
                # Frozen past the heartbeat timeout: the broker must declare an actor down.
                timeout_s = self.line.config.broker.heartbeat_timeout_s
                self.load.stopping.wait((timeout_s + 1.0) * factor)
                if self.line.role(fault.name) == "actor":
                    self.wait_down(fault.name, 5.0 * factor)
            finally:
                os.kill(pid, signal.SIGCONT)
            started = time.monotonic()
            back = self.line.wait_serving(fault.name, RECOVERY_BOUND_S)
        self.faults[fault.kind] += 1
        self.recovery.setdefault(fault.row, []).append(back - started)
        self.check_forwarded(FORWARD_BOUND_S * factor, f"after {fault.kind} of {fault.name}")

    def wait_down(self, name: str, timeout: float) -> None:
        """Wait until the broker lists service ``name`` as down (its heartbeats stopped)."""
        with self.line.client(timeout=2.0) as client:

            def down() -> bool:
                rows = client.services(timeout=2.0)
                return any(r["name"] == name and r["state"] != "up" for r in rows)

            wait_until(down, timeout, f"the broker to see frozen {name} down", interval=0.1)

    def check_forwarded(self, timeout: float, when: str) -> dict[str, int]:
        """Wait until every reading acknowledged so far is at the ingest server; fail at once on
        a reading forwarded twice. Returns the server's counts by id."""
        with self.load.ledger.lock:
            acked = list(self.load.ledger.acked)
        seen: dict[str, int] = {}

        def through() -> bool:
            seen.clear()
            seen.update(self.line.forwarded())
            twice = sorted(i for i, n in seen.items() if n > 1)
            assert not twice, f"{when}: forwarded more than once: {twice[:10]}"
            return all(i in seen for i in acked)

        wait_until(
            through,
            timeout,
            lambda: (
                f"{when}: acknowledged readings at the ingest server "
                f"(missing {sum(1 for i in acked if i not in seen)} of {len(acked)})"
            ),
            interval=0.2,
        )
        return seen


def plan(names: list[str], actors: list[str], rounds: int, rng: random.Random) -> list[Fault]:
    """Every process killed ``rounds`` times, rounds one after the other, each round in a random
    order; then a SIGSTOP of one random actor per round (of every actor in turn if rounds
    allow), and of the broker from the second round."""
    faults: list[Fault] = []
    stopped = rng.sample(actors, len(actors))
    for round_ in range(rounds):
        order = rng.sample(names, len(names))
        faults += [Fault("kill", name) for name in order]
        faults.append(Fault("stop", stopped[round_ % len(stopped)]))
        if round_ >= 1:
            faults.append(Fault("stop", "broker"))
    return faults


def table(run: FaultRun, stored: dict[str, int], forwarded: dict[str, int], seed: int) -> str:
    """The report: faults, calls, failures by code, recovery per process, readings."""
    ledger = run.load.ledger
    records = ledger.snapshot()
    failed = ledger.failures()
    acked = set(ledger.acked)
    lines = [
        f"fault run (seed {seed}): "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(run.faults.items())),
        f"calls made: {len(records)}, ok {len(records) - sum(failed.values())}, failed "
        + (", ".join(f"{code} {n}" for code, n in failed.most_common()) or "none"),
        f"calls past their deadline (hangs): {len(ledger.hangs())}; events received: "
        f"{ledger.events}",
        "",
        f"{'process':<20} {'faults':>6} {'recovery p50 s':>15} {'max s':>7}",
    ]
    rows = [f.row for name in run.line.names for f in (Fault("kill", name), Fault("stop", name))]
    for name in rows:
        times = run.recovery.get(name, [])
        if times:
            lines.append(
                f"{name:<20} {len(times):>6} {statistics.median(times):>15.2f} {max(times):>7.2f}"
            )
    every = [t for times in run.recovery.values() for t in times]
    if every:
        lines.append(
            f"{'all':<20} {len(every):>6} {statistics.median(every):>15.2f} {max(every):>7.2f}"
        )
    lost = sorted(i for i in acked if stored.get(i, 0) == 0 or forwarded.get(i, 0) == 0)
    dup = sorted(
        i for i in set(stored) | set(forwarded) if stored.get(i, 0) > 1 or forwarded.get(i, 0) > 1
    )
    lines += [
        "",
        f"readings acknowledged {len(acked)}, stored {sum(1 for i in acked if i in stored)}, "
        f"forwarded {sum(1 for i in acked if i in forwarded)}, lost {len(lost)}, "
        f"duplicated {len(dup)}",
    ]
    return "\n".join(lines)
