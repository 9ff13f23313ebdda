"""Discovery metadata exactly as the seed types it (fluxclient-upnp.txt, "Device metadata").

The table's row crosses the bus (msgpack, ``bus.protocol``) and the facade's ``metadata`` turns
it into fluxclient's shape; each seed field is checked at that end, one test per field.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import pytest

from actors.discovery.table import DeviceTable
from actors.fluxfamily.datagram import Announcement, Status, TouchResponse
from bus.protocol import pack_value, unpack_value
from clients.discovery import metadata

DEVICE = uuidlib.UUID(hex="ffffffffffffffff0011223344556677")
SOURCE = ("127.80.1.2", 1901)


def seen(status: Status) -> dict[str, Any]:
    """A device announced with ``status`` and touched, as the facade returns it."""
    table = DeviceTable()
    announcement = Announcement(DEVICE, "XXXXXXXXXX", 1.7e9, b"der", b"id", Status())
    table.announced(announcement, SOURCE, now=1.0)
    info = {"ver": "1.6.95", "model": "delta-1", "name": "alpha", "pwd": "F", "time": "1"}
    table.touched(TouchResponse(DEVICE, 1.7e9, b"slave", info), now=1.0)
    table.announced(Announcement(DEVICE, "XXXXXXXXXX", 1.7e9, b"der", b"id", status), SOURCE, 2.0)
    row = table.devices()[0]
    packed, frames = pack_value(row)
    return metadata(unpack_value(packed, frames))


RUNNING = Status(1733400000.75, 16, 0.25, "EXTRUDER", "")
IDLE = Status(1733400000.75, 0, 0.0, "EXTRUDER", "")

# The seed's list: name, type (and the value the table above gives)
SEED_FIELDS = [
    ("uuid", uuidlib.UUID, DEVICE),
    ("name", str, "alpha"),
    ("serial", str, "XXXXXXXXXX"),
    ("model_id", str, "delta-1"),
    ("version", str, "1.6.95"),
    ("ipaddr", str, "127.80.1.2"),
    ("endpoint", tuple, ("127.80.1.2", 1901)),
    ("st_id", int, 16),
    ("st_ts", int, 1733400000),
    ("st_prog", float, 0.25),
    ("head_module", str, "EXTRUDER"),
]


@pytest.mark.parametrize(("field", "kind", "value"), SEED_FIELDS, ids=[f[0] for f in SEED_FIELDS])
def test_seed_field_type(field: str, kind: type, value: object) -> None:
    data = seen(RUNNING)
    assert type(data[field]) is kind  # exactly: an int st_ts is not a float, nor a bool
    assert data[field] == value


def test_endpoint_parts_are_str_and_int() -> None:
    host, port = seen(RUNNING)["endpoint"]
    assert type(host) is str and type(port) is int


def test_head_module_only_while_a_task_runs() -> None:
    assert "head_module" not in seen(IDLE)


def test_error_label_only_when_present() -> None:
    assert "error_label" not in seen(RUNNING)
    data = seen(Status(1.0, 16, 0.5, "EXTRUDER", "HEAD_ERROR FAN_FAILURE"))
    assert type(data["error_label"]) is str and data["error_label"] == "HEAD_ERROR FAN_FAILURE"
