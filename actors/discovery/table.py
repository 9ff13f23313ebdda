"""The table of FLUX devices seen on the network, and the changes it reports.

Pure bookkeeping, fed with parsed datagrams and a clock: like fluxclient, a device *appears*
once its touch response arrived (so its name, model and version are known); after that each
announcement that changes its status fields reports ``status``, a new name/model/version reports
``changed``, and a device silent for longer than the timeout is removed and reported ``gone``.

Both discovery versions feed it (flux.md §2.3-2.6): v1 devices are touched again when their
announced ``slave_ts`` grows, v2 (``bare=Y``) devices when their announced session changes.

The metadata (``DeviceRecord.as_dict``) follows the seed (fluxclient-upnp.txt): ``st_ts`` an int,
``head_module`` only while a task runs, ``error_label`` only when the device reports one.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Literal

from actors.fluxfamily.datagram import (
    STATUS_LABELS,
    Announcement,
    AnnouncementV2,
    TouchResponse,
    TouchResponseV2,
)

__all__ = ["DeviceEvent", "DeviceRecord", "DeviceTable"]

EventKind = Literal["appeared", "status", "changed", "gone"]


@dataclass(slots=True)
class DeviceRecord:
    """Everything known about one device (the seed's metadata plus bookkeeping)."""

    uuid: uuidlib.UUID
    serial: str
    master_der: bytes
    ipaddr: str
    endpoint: tuple[str, int]
    slave_ts: float = -1.0
    name: str = ""
    model_id: str = ""
    version: str = ""
    has_password: bool = False
    slave_der: bytes = b""
    st_id: int = 0
    st_ts: float = 0.0
    st_prog: float = 0.0
    head_module: str = ""
    error_label: str = ""
    last_update: float = 0.0
    touched: bool = False
    discovery_version: int = 1
    session: bytes = b""  # v2: the session of the last touch
    pending_session: bytes = b""  # v2: the session announced when a touch was asked for

    def status_key(self) -> tuple[int, float, str, str]:
        """The status fields whose change is reported (``st_ts`` moves on every announcement)."""
        return (self.st_id, round(self.st_prog, 4), self.head_module, self.error_label)

    def as_dict(self) -> dict[str, Any]:
        """The seed's metadata, msgpack-friendly (uuid as hex, endpoint as ``[host, port]``).

        ``st_ts`` is whole seconds of the device clock (an int, as the seed types it);
        ``head_module`` appears only while a task runs (``st_id > 0``) and ``error_label`` only
        when not empty, as the seed says.
        """
        data: dict[str, Any] = {
            "uuid": self.uuid.hex,
            "name": self.name,
            "serial": self.serial,
            "model_id": self.model_id,
            "version": self.version,
            "ipaddr": self.ipaddr,
            "endpoint": [self.endpoint[0], self.endpoint[1]],
            "has_password": self.has_password,
            "st_id": self.st_id,
            "st_label": STATUS_LABELS.get(self.st_id, "UNKNOWN"),
            "st_ts": int(self.st_ts),
            "st_prog": float(self.st_prog),
        }
        if self.st_id > 0 and self.head_module:
            data["head_module"] = self.head_module
        if self.error_label:
            data["error_label"] = self.error_label
        return data


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One change of the table: ``kind`` and the device's metadata after it."""

    kind: EventKind
    device: dict[str, Any]


class DeviceTable:
    """Devices by uuid."""

    def __init__(self) -> None:
        self._records: dict[uuidlib.UUID, DeviceRecord] = {}

    def __len__(self) -> int:
        return sum(1 for record in self._records.values() if record.touched)

    def devices(self) -> list[dict[str, Any]]:
        """Metadata of every device that has appeared."""
        return [record.as_dict() for record in self._records.values() if record.touched]

    def get(self, device: uuidlib.UUID) -> DeviceRecord | None:
        """The record of ``device`` (also before it appeared)."""
        return self._records.get(device)

    def announced(
        self, message: Announcement | AnnouncementV2, source: tuple[str, int], now: float
    ) -> tuple[list[DeviceEvent], bool]:
        """Take an announcement (v1 or v2); return the events and whether to touch the device."""
        record = self._records.get(message.uuid)
        if record is None:
            record = DeviceRecord(message.uuid, "", b"", source[0], source)
            self._records[message.uuid] = record
        before = record.status_key()
        if isinstance(message, Announcement):
            record.discovery_version = 1
            record.serial, record.master_der = message.serial, message.master_der
            needs_touch = not record.touched or message.slave_ts > record.slave_ts
        else:  # v2: serial and master key come with the touch answer
            record.discovery_version = 2
            record.pending_session = message.session
            needs_touch = not record.touched or message.session != record.session
        record.ipaddr, record.endpoint = source[0], source
        status = message.status
        record.st_id, record.st_ts, record.st_prog = status.st_id, status.st_ts, status.st_prog
        record.head_module, record.error_label = status.head_module, status.error_label
        record.last_update = now
        if record.touched and record.status_key() != before:
            return [DeviceEvent("status", record.as_dict())], needs_touch
        return [], needs_touch

    def touched(self, message: TouchResponse | TouchResponseV2, now: float) -> list[DeviceEvent]:
        """Take a touch response (v1: verified); the device appears, or reports a changed identity."""
        record = self._records.get(message.uuid)
        if record is None:
            return []  # touched, then expired meanwhile: wait for its next announcement
        before = (record.name, record.model_id, record.version, record.has_password)
        info = message.info
        record.name, record.model_id, record.version = (
            info.get("name", ""),
            info.get("model", ""),
            info.get("ver", ""),
        )
        record.has_password = info.get("pwd") == "T"
        if isinstance(message, TouchResponse):
            record.slave_der, record.slave_ts = message.slave_der, message.slave_ts
        else:
            record.serial = info.get("serial", record.serial)
            record.master_der = message.master_der
            record.session = record.pending_session
        record.last_update = now
        if not record.touched:
            record.touched = True
            return [DeviceEvent("appeared", record.as_dict())]
        if before != (record.name, record.model_id, record.version, record.has_password):
            return [DeviceEvent("changed", record.as_dict())]
        return []

    def needs_poke(self, device: uuidlib.UUID, now: float, stale_s: float = 3.15) -> bool:
        """After a broadcast beacon: poke a device not seen yet or not heard for ``stale_s``
        (fluxclient's rule, §2.7)."""
        record = self._records.get(device)
        return record is None or not record.touched or now - record.last_update > stale_s

    def expire(self, now: float, timeout_s: float) -> list[DeviceEvent]:
        """Remove devices silent for more than ``timeout_s``; report those that had appeared."""
        stale = [
            uuid for uuid, record in self._records.items() if now - record.last_update > timeout_s
        ]
        events = []
        for uuid in stale:
            record = self._records.pop(uuid)
            if record.touched:
                events.append(DeviceEvent("gone", record.as_dict()))
        return events
