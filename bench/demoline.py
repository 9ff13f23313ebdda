"""The demo line as a harness for the fault suite (tests/faults/) and the soak (bench/soak.py).

``DemoLine`` runs configs/demo.toml (or demo-secure.toml, with CURVE) under ``linebus up`` on free
loopback ports (its printers on loopback addresses of their own) in a folder of its own, finds
each supervised process (broker, simulators, actors) by its command line among the supervisor's
children, and knows how to tell that each one
serves: ``probe(name)`` makes one real call through it (an actor answers ``ping``; a simulator is
serving when the actor that drives it gets an answer from the device; the broker when every
service is registered again).

``proc_sample`` reads a process's resident memory, open file descriptors and threads from /proc
(Linux only, as the line's supervisor is).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.flux.testing import random_loopback
from bus.client import Client, KeysArg
from bus.config import LineConfig, load
from bus.errors import BusError
from bus.supervisor import LineKeys
from bus.testing import DemoConfig, wait_until

ROOT = Path(__file__).resolve().parent.parent
#: The identity the harness calls as on the secured line (an operator of demo-secure.toml:
#: enqueueing telemetry and sending files are privileged commands).
OPERATOR = "operator"
#: Each simulator and the actor whose device call shows it serves.
SIMULATOR_PROBES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "flashrunner-sim": ("fr1", "FR_GetPublicKey", {}),
    "flux-p1-sim": ("p1", "deviceinfo", {}),
    "flux-p2-sim": ("p2", "deviceinfo", {}),
    "remotelab-sim": ("lab", "get_wtypes", {}),
}
#: The telemetry stream the harness writes (readings of its own, counted by payload).
STREAM = "faults"


@dataclass(frozen=True)
class ProcSample:
    """One process's resources at one moment."""

    rss_kib: int
    fds: int
    threads: int


def proc_sample(pid: int) -> ProcSample | None:
    """``pid``'s resident set (KiB), open descriptors and threads; None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    return ProcSample(rss, fds, int(fields["Threads"]))


def children_of(pid: int) -> dict[int, list[str]]:
    """The live children of ``pid``: their pids and command lines (from /proc)."""
    found: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            # The command name (2nd field) may hold spaces: the fields after its ")" are fixed.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # gone meanwhile
        found[int(entry)] = [arg.decode(errors="replace") for arg in argv]
    return found


class DemoLine:
    """The demo line under ``linebus up``, relocated into ``folder``.

    Args:
        folder: Where its config, databases, keys and the supervisor's log go.
        secure: Run configs/demo-secure.toml (CURVE on every socket) instead of demo.toml.
        timeout_factor: Scales every wait (slow machines).
    """

    def __init__(self, folder: Path, *, secure: bool = False, timeout_factor: float = 1.0) -> None:
        self.folder = folder
        self.secure = secure
        self.factor = timeout_factor
        # The printers move to loopback addresses of their own (ports kept): a simulator binds
        # ports beside its robot port (the camera's), which two lines on one address would share.
        printers = {"127.0.0.2": random_loopback(), "127.0.0.3": random_loopback()}
        name = "demo-secure.toml" if secure else "demo.toml"
        self.demo = DemoConfig.write(name, folder, hosts=printers)
        self.config: LineConfig = load(self.demo.path)
        self.keys: KeysArg = False
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "line.log"
        #: Why the last probe failed (for a timeout's message).
        self.last_probe_error = ""
        telemetry = next(a for a in self.config.actors if a.kind == "telemetry")
        self.ingest_url = str(telemetry.options["instance_url"])
        self.device_id = str(telemetry.options["device_id"])

    # --- the processes ----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Every supervised process: the broker, the simulators, the actors (start order)."""
        return [
            "broker",
            *(s.name for s in self.config.simulators),
            *(a.name for a in self.config.actors),
        ]

    def role(self, name: str) -> str:
        """``broker``, ``simulator`` or ``actor``."""
        if name == "broker":
            return "broker"
        return "simulator" if any(s.name == name for s in self.config.simulators) else "actor"

    def start(self) -> None:
        """Start ``linebus up`` and wait until every process serves."""
        if self.secure:
            # The keys `linebus up` would make, made first so that this process holds the
            # operator's (up finds them and makes no others).
            keys = LineKeys.prepare(self.config)
            assert keys is not None
            self.keys = keys.client_keys(OPERATOR)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEBUS_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.supervisor = subprocess.Popen(
                [sys.executable, "-m", "bus.cli", "up", str(self.demo.path)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for name in self.names:
            self.wait_serving(name, timeout=60)

    def stop(self) -> None:
        """Stop the line (SIGTERM to the supervisor, which stops its children), SIGKILL late."""
        proc = self.supervisor
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30 * self.factor)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def pids(self) -> dict[str, int]:
        """The current pid of each supervised process that is running."""
        assert self.supervisor is not None
        found: dict[str, int] = {}
        by_args = {tuple(s.args): s.name for s in self.config.simulators}
        for pid, argv in children_of(self.supervisor.pid).items():
            if argv[1:3] != ["-m", "bus.cli"]:
                name = by_args.get(tuple(argv[3:]))
            elif argv[3] == "actor":
                name = argv[-1]
            else:
                name = "broker" if argv[3] == "broker" else None
            if name is not None:
                found[name] = pid
        return found

    def pid(self, name: str) -> int | None:
        """The pid of process ``name``, if it runs."""
        return self.pids().get(name)

    # --- calls ------------------------------------------------------------------------------

    def client(self, timeout: float = 5.0) -> Client:
        """A client of the line (the operator's, on the secured line)."""
        command, _, subscribe = self.endpoints
        return Client(
            command, subscribe_endpoint=subscribe, timeout=timeout * self.factor, keys=self.keys
        )

    @property
    def endpoints(self) -> tuple[str, str, str]:
        """The broker's command, publish and subscribe endpoints."""
        broker = self.config.broker
        return broker.command, broker.publish, broker.subscribe

    def probe(self, name: str, client: Client) -> bool:
        """Whether ``name`` serves now: one real call through it (see the module docstring)."""
        try:
            if name == "broker":
                up = {row["name"] for row in client.services(timeout=1.0) if row["state"] == "up"}
                return {a.name for a in self.config.actors} <= up
            if name == "ingest":
                return bool(self.ingest("/v1/operator/stats", timeout=1.0))
            if name in SIMULATOR_PROBES:
                service, command, args = SIMULATOR_PROBES[name]
                client.call(service, command, args, timeout=2.0)
                return True
            client.call(name, "ping", timeout=1.0)
            return True
        except (BusError, OSError) as exc:
            self.last_probe_error = repr(exc)
            return False

    def wait_serving(self, name: str, timeout: float, not_pid: int | None = None) -> float:
        """Wait until ``name`` runs (as another process than ``not_pid``) and serves; return
        when that was (``time.monotonic()``)."""

        seen = ["no process yet"]

        def serving() -> float | None:
            pid = self.pid(name)
            if pid is None or pid == not_pid:
                seen[0] = f"pid {pid}, the faulted one {not_pid}"
                return None
            if self.probe(name, client):
                return time.monotonic()
            seen[0] = f"pid {pid}, not serving: {self.last_probe_error}"
            return None

        with self.client(timeout=2.0) as client:
            return wait_until(
                serving,
                timeout * self.factor,
                lambda: f"{name} to serve again ({seen[0]})",
                interval=0.05,
            )

    def ingest(self, path: str, timeout: float = 10.0) -> dict[str, Any]:
        """GET ``path`` of the ingest server's operator API (JSON)."""
        with urllib.request.urlopen(self.ingest_url + path, timeout=timeout) as answer:
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def forwarded(self) -> dict[str, int]:
        """How many times the ingest server stored each payload of ``STREAM`` (by message id:
        the payload is the harness's own id; they carry no ``message_id``, so the server's unique
        index would not hide a message forwarded twice)."""
        rows = self.ingest(f"/v1/operator/devices/{self.device_id}/messages")["messages"]
        counts: dict[str, int] = {}
        for row in rows:
            if row["stream"] == STREAM:
                counts[row["payload"]] = counts.get(row["payload"], 0) + 1
        return counts

    def stored(self, client: Client) -> dict[str, int]:
        """How many times the telemetry actor's store holds each payload of ``STREAM``."""
        counts: dict[str, int] = {}
        from_seq = 0
        while True:
            rows = client.call(
                "telemetry", "history", stream=STREAM, from_seq=from_seq, limit=5000, timeout=10
            )
            for row in rows:
                payload = row["payload"]
                key = payload.decode() if isinstance(payload, bytes) else str(payload)
                counts[key] = counts.get(key, 0) + 1
            if len(rows) < 5000:
                return counts
            from_seq = rows[-1]["stream_seq"] + 1
