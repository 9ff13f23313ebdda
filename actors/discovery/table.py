"""The table of FLUX devices seen on the network, and the changes it reports.

Pure bookkeeping, fed with parsed datagrams and a clock: like fluxclient, a device *appears*
once its touch response arrived (so its name, model and version are known); after that each
announcement that changes its status fields reports ``status``, a new name/model/version reports
``changed``, and a device silent for longer than the timeout is removed and reported ``gone``.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Literal

from actors.fluxfamily.datagram import STATUS_LABELS, Announcement, TouchResponse

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

    def status_key(self) -> tuple[int, float, str, str]:
        """The status fields whose change is reported (``st_ts`` moves on every announcement)."""
        return (self.st_id, round(self.st_prog, 4), self.head_module, self.error_label)

    def as_dict(self) -> dict[str, Any]:
        """The seed's metadata, msgpack-friendly (uuid as hex, endpoint as ``[host, port]``)."""
        return {
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
            "st_ts": self.st_ts,
            "st_prog": self.st_prog,
            "head_module": self.head_module,
            "error_label": self.error_label,
        }


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
        self, message: Announcement, source: tuple[str, int], now: float
    ) -> tuple[list[DeviceEvent], bool]:
        """Take an announcement; return the events and whether the device must be touched."""
        record = self._records.get(message.uuid)
        if record is None:
            record = DeviceRecord(
                message.uuid, message.serial, message.master_der, source[0], source
            )
            self._records[message.uuid] = record
        before = record.status_key()
        record.serial, record.master_der = message.serial, message.master_der
        record.ipaddr, record.endpoint = source[0], source
        status = message.status
        record.st_id, record.st_ts, record.st_prog = status.st_id, status.st_ts, status.st_prog
        record.head_module, record.error_label = status.head_module, status.error_label
        record.last_update = now
        needs_touch = not record.touched or message.slave_ts > record.slave_ts
        if record.touched and record.status_key() != before:
            return [DeviceEvent("status", record.as_dict())], needs_touch
        return [], needs_touch

    def touched(self, message: TouchResponse, now: float) -> list[DeviceEvent]:
        """Take a verified touch response; the device appears, or reports a changed identity."""
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
        record.slave_der, record.slave_ts = message.slave_der, message.slave_ts
        record.last_update = now
        if not record.touched:
            record.touched = True
            return [DeviceEvent("appeared", record.as_dict())]
        if before != (record.name, record.model_id, record.version, record.has_password):
            return [DeviceEvent("changed", record.as_dict())]
        return []

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
