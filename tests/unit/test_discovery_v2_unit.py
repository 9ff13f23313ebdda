"""Byte layouts of discovery v2 and the beacon (flux.md §2.6-2.8), and the table's v2 rules."""

from __future__ import annotations

import struct
import uuid as uuidlib

import pytest

from actors.discovery.table import DeviceTable
from actors.fluxfamily.datagram import (
    AnnouncementV2,
    Beacon,
    DatagramError,
    Poke,
    Status,
    TouchRequest,
    TouchResponseV2,
    build_announcement_v2,
    build_beacon,
    build_poke,
    build_touch_request,
    build_touch_response_v2,
    parse_datagram,
)

DEVICE = uuidlib.UUID("ffffffffffffffff0123456789abcdef")
SOURCE = ("127.0.0.3", 1901)
INFO = {"serial": "XXXXXXXXXX", "ver": "1.6.95", "model": "delta-1", "name": "b", "pwd": "T"}
STATUS = Status(7.5, 16, 0.5, "EXTRUDER", "")


def test_v2_headers_and_beacon() -> None:
    """Pokes and touches carry the version byte; the beacon is version 0, byte 5 = 1, 22 bytes."""
    assert build_poke(2) == b"FLUX\x02\x00" + bytes(16)
    assert parse_datagram(build_poke(2)) == Poke(2)
    assert build_touch_request(DEVICE, 2) == b"FLUX\x02\x02" + DEVICE.bytes
    assert parse_datagram(build_touch_request(DEVICE, 2)) == TouchRequest(DEVICE, 2)
    assert build_beacon(DEVICE) == b"FLUX\x00\x01" + DEVICE.bytes
    assert parse_datagram(build_beacon(DEVICE)) == Beacon(DEVICE)


def test_v2_announcement_layout() -> None:
    """Header, 8-byte session, the 64-byte status block."""
    data = build_announcement_v2(DEVICE, b"S" * 8, STATUS)
    assert len(data) == 22 + 8 + 64 and data[22:30] == b"S" * 8
    assert parse_datagram(data) == AnnouncementV2(DEVICE, b"S" * 8, STATUS)
    with pytest.raises(ValueError, match="8 bytes"):
        build_announcement_v2(DEVICE, b"short", STATUS)


def test_v2_touch_response_layout() -> None:
    """u16 L1, u16 L2, master DER, identify, u16 L3, ``k=v`` NUL separated; no signatures."""
    data = build_touch_response_v2(DEVICE, b"DER!", b"IDENT", INFO)
    assert struct.unpack_from("<HH", data, 22) == (4, 5) and data[26:35] == b"DER!IDENT"
    assert parse_datagram(data) == TouchResponseV2(DEVICE, b"DER!", b"IDENT", INFO)


@pytest.mark.parametrize("cut", [23, 30, 60])
def test_v2_truncated(cut: int) -> None:
    with pytest.raises(DatagramError):
        parse_datagram(build_announcement_v2(DEVICE, b"S" * 8, STATUS)[:cut])
    with pytest.raises(DatagramError):
        parse_datagram(build_touch_response_v2(DEVICE, b"D" * 40, b"I", INFO)[:cut])


def test_table_touches_v2_again_when_the_session_changes() -> None:
    """fluxclient touches a v2 device on a new session; serial and master key come with it."""
    table = DeviceTable()
    first = AnnouncementV2(DEVICE, b"A" * 8, STATUS)
    assert table.announced(first, SOURCE, 0.0) == ([], True)
    assert table.needs_poke(DEVICE, 0.0)  # known but not touched yet
    events = table.touched(TouchResponseV2(DEVICE, b"DER", b"ID", INFO), 0.1)
    assert [e.kind for e in events] == ["appeared"]
    record = table.get(DEVICE)
    assert record is not None and (record.serial, record.master_der) == ("XXXXXXXXXX", b"DER")
    assert events[0].device["has_password"] is True
    assert table.announced(first, SOURCE, 1.0) == ([], False)
    assert not table.needs_poke(DEVICE, 2.0) and table.needs_poke(DEVICE, 4.2)  # 3.15 s rule
    restarted = AnnouncementV2(DEVICE, b"B" * 8, STATUS)
    assert table.announced(restarted, SOURCE, 5.0)[1] is True
    changed = table.touched(TouchResponseV2(DEVICE, b"DER", b"ID", {**INFO, "name": "c"}), 5.1)
    assert [(e.kind, e.device["name"]) for e in changed] == [("changed", "c")]
    assert table.announced(restarted, SOURCE, 6.0)[1] is False
