"""The broker's table of services: who is registered, on which connection, and in what state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bus import protocol
from bus.addresses import normalize_all

__all__ = ["Directory", "Pending", "ServiceEntry"]

UP = "up"
DOWN = "down"

#: Upper bounds (seconds) of the request-latency buckets each service keeps (``ServiceEntry.
#: latency``): the ``le`` of the ``linebus_request_duration_seconds`` histogram (bus.metrics).
#: Commands run from a millisecond (a ping) to minutes (a flash run), hence the wide range.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip


@dataclass(slots=True, eq=False)
class Pending:
    """A request the broker forwarded and has not yet seen the end of."""

    msg_id: str
    client: bytes
    service: ServiceEntry
    deadline: float
    #: The broker clock's reading when it was forwarded, for the service's latency buckets.
    started: float = 0.0


@dataclass(slots=True, eq=False)
class ServiceEntry:
    """One service name, which outlives the processes that serve it."""

    name: str
    kind: str = ""
    identity: bytes | None = None
    state: str = DOWN
    since: float = field(default_factory=time.time)
    last_seen: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    #: The READY header as received: the full self-description, decoded only for ``describe``
    #: (200 actors' descriptions as Python objects would cost the broker several MB).
    ready_frame: bytes = b""
    inflight: dict[str, Pending] = field(default_factory=dict)
    registrations: int = 0
    #: Times the name came back: registered again after it had been down, or by another process
    #: (a new pid) while up (a restarted process that registered before its predecessor's
    #: connection was noticed gone). A READY again from the same process while up is no restart.
    restarts: int = 0
    #: When the current run came up (Unix s): the registration that made it up or restarted it,
    #: unchanged by a READY again from the same process. None while down.
    up_since: float | None = None
    down_reason: str = ""
    #: The identity (key name) that registered it; empty on a line without security.
    owner: str = ""
    #: The commands the actor declares privileged (READY info ``privileged``).
    privileged: frozenset[str] = frozenset()
    #: The normal forms (``bus.addresses``) of the device addresses the actor advertises (READY
    #: info ``devices``), for the ``lookup`` command.
    devices: tuple[str, ...] = ()
    #: Requests the actor answered (REPLY or ERROR), counted per latency bucket: ``latency[i]``
    #: those that took at most ``LATENCY_BOUNDS[i]`` (and more than the bound before), the last
    #: one those beyond every bound; ``latency_sum`` their total seconds. The broker adds one int
    #: per answer (no allocation); bus.metrics turns them into a histogram when scraped.
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_sum: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The row ``services`` returns for this service."""
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "since": self.since,
            "pid": self.info.get("pid"),
            "host": self.info.get("host"),
            "inflight": len(self.inflight),
            "registrations": self.registrations,
            "restarts": self.restarts,
            "up_since": self.up_since,
            "reason": self.down_reason,
        }


class Directory:
    """Service name -> entry, and connection identity -> the entry registered on it."""

    def __init__(self) -> None:
        self.by_name: dict[str, ServiceEntry] = {}
        self.by_identity: dict[bytes, ServiceEntry] = {}

    def register(
        self,
        name: str,
        identity: bytes,
        info: dict[str, Any],
        now: float,
        ready_frame: bytes = b"",
        owner: str = "",
    ) -> ServiceEntry:
        """Mark ``name`` up on ``identity`` (a connection of ``owner``) and return its entry; a
        connection it held before is forgotten (the caller tells that connection)."""
        entry = self.by_name.get(name)
        if entry is None:
            entry = self.by_name[name] = ServiceEntry(name)
        if entry.state == UP and entry.identity not in (None, identity):
            self.by_identity.pop(entry.identity, None)
        pid, old_pid = info.get("pid"), entry.info.get("pid")
        if entry.state != UP or (pid is not None and old_pid is not None and pid != old_pid):
            # Came up, or another process took the name over (None: the first registration).
            if entry.registrations:
                entry.restarts += 1
            entry.up_since = time.time()
        entry.identity = identity
        entry.kind = str(info.get("kind", ""))
        entry.info = {k: info[k] for k in ("kind", "pid", "host", "heartbeat_s") if k in info}
        entry.ready_frame = ready_frame
        entry.owner = owner
        declared = info.get("privileged")
        entry.privileged = (
            frozenset(c for c in declared if isinstance(c, str))
            if isinstance(declared, list)
            else frozenset()
        )
        entry.devices = normalize_all(info.get("devices"))
        entry.state = UP
        entry.since = time.time()
        entry.last_seen = now
        entry.registrations += 1
        entry.down_reason = ""
        self.by_identity[identity] = entry
        return entry

    def mark_down(self, entry: ServiceEntry, reason: str) -> list[Pending]:
        """Mark ``entry`` down and return the requests it held, which the caller must fail."""
        if entry.identity is not None:
            self.by_identity.pop(entry.identity, None)
        entry.identity = None
        entry.state = DOWN
        entry.since = time.time()
        entry.up_since = None
        entry.down_reason = reason
        failed = list(entry.inflight.values())
        entry.inflight.clear()
        return failed

    def description(self, entry: ServiceEntry) -> dict[str, Any]:
        """The self-description the actor sent in its READY (doc, commands)."""
        frame = entry.ready_frame
        if not frame:
            return {}
        # The frame was checked when the actor registered; it decodes the same way again.
        return protocol.ready_header(protocol.split(frame)[1], frame).info

    def up(self) -> list[ServiceEntry]:
        """Entries currently up."""
        return [e for e in self.by_name.values() if e.state == UP]
