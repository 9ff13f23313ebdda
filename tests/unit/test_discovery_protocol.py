"""Byte tables for FLUX discovery datagrams, the device table, and management messages."""

from __future__ import annotations

import struct
import uuid as uuidlib

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.discovery.table import DeviceTable
from actors.fluxfamily import crypto, manage_protocol
from actors.fluxfamily.datagram import (
    Announcement,
    Beacon,
    DatagramError,
    Poke,
    Status,
    TouchRequest,
    TouchResponse,
    build_announcement,
    build_beacon,
    build_poke,
    build_touch_request,
    build_touch_response,
    parse_datagram,
    parse_touch_response,
)

DEVICE = uuidlib.UUID("ffffffffffffffff0123456789abcdef")
SOURCE = ("127.0.0.2", 1901)
INFO = {"ver": "1.6.95", "model": "delta-1", "name": "p1", "pwd": "F", "time": "1700000000"}


@pytest.fixture(scope="module")
def master_key() -> rsa.RSAPrivateKey:
    return crypto.new_key(1024)


@pytest.fixture(scope="module")
def slave_key() -> rsa.RSAPrivateKey:
    return crypto.new_key(1024)


def announcement(
    master_key: rsa.RSAPrivateKey, status: Status | None = None, slave_ts: float = 1024.0
) -> bytes:
    return build_announcement(
        DEVICE,
        "XXXXXXXXXX",
        slave_ts,
        crypto.public_der(master_key),
        b"WAWASUREMONO",
        status or Status(),
    )


class TestDatagrams:
    """Header, announcement, poke, touch and beacon layouts (flux.md §2.2-2.8)."""

    def test_poke_and_touch_request(self) -> None:
        """22-byte headers: version 1, action 0 with a zero uuid, or action 2."""
        assert build_poke() == b"FLUX\x01\x00" + bytes(16)
        assert build_touch_request(DEVICE) == b"FLUX\x01\x02" + DEVICE.bytes
        assert parse_datagram(build_poke()) == Poke()
        assert parse_datagram(build_touch_request(DEVICE)) == TouchRequest(DEVICE)
        assert parse_datagram(build_beacon(DEVICE)) == Beacon(DEVICE)

    def test_status_block(self) -> None:
        """64 bytes ``<dif16s32s``, strings NUL padded."""
        status = Status(1700000000.5, 16, 0.25, "EXTRUDER", "HEAD_ERROR")
        packed = status.pack()
        assert len(packed) == 64
        assert packed[16:25] == b"EXTRUDER\x00"
        assert Status.unpack(packed) == status

    def test_announcement_layout(self, master_key: rsa.RSAPrivateKey) -> None:
        """Serial at 22, float32 slave_ts, key and identify lengths, then the status block."""
        data = announcement(master_key, Status(5.0, 64, 1.0, "LASER", ""))
        der = crypto.public_der(master_key)
        assert data[22:32] == b"XXXXXXXXXX"
        assert struct.unpack_from("<fHH", data, 32) == (1024.0, len(der), 12)
        parsed = parse_datagram(data)
        assert parsed == Announcement(
            DEVICE, "XXXXXXXXXX", 1024.0, der, b"WAWASUREMONO", Status(5.0, 64, 1.0, "LASER", "")
        )

    def test_touch_response_verified(
        self, master_key: rsa.RSAPrivateKey, slave_key: rsa.RSAPrivateKey
    ) -> None:
        """Both signatures check against the announced master key."""
        data = build_touch_response(DEVICE, 1024.0, master_key, slave_key, INFO)
        response = parse_touch_response(data, crypto.public_der(master_key))
        assert response.info == INFO and response.slave_der == crypto.public_der(slave_key)
        assert isinstance(parse_datagram(data), TouchResponse)

    def test_touch_response_forged(
        self, master_key: rsa.RSAPrivateKey, slave_key: rsa.RSAPrivateKey
    ) -> None:
        """A different master key, or changed info bytes, fail verification."""
        data = build_touch_response(DEVICE, 1024.0, master_key, slave_key, INFO)
        with pytest.raises(DatagramError, match="slave key signature"):
            parse_touch_response(data, crypto.public_der(slave_key))
        tampered = data.replace(b"name=p1", b"name=p2")
        with pytest.raises(DatagramError, match="info signature"):
            parse_touch_response(tampered, crypto.public_der(master_key))

    @pytest.mark.parametrize(
        "data",
        [
            b"FLUX\x01",
            b"XLUX\x01\x00" + bytes(16),
            b"FLUX\x03\x00" + DEVICE.bytes + bytes(100),
            b"FLUX\x01\x09" + DEVICE.bytes,
        ],
    )
    def test_ignored(self, data: bytes) -> None:
        """Short, foreign-magic, newer-version and unknown-action datagrams are ignored."""
        assert parse_datagram(data) is None

    @pytest.mark.parametrize("cut", [25, 40, 100])
    def test_truncated(self, master_key: rsa.RSAPrivateKey, cut: int) -> None:
        """A cut announcement is an error, not a crash."""
        with pytest.raises(DatagramError):
            parse_datagram(announcement(master_key)[:cut])


class TestDeviceTable:
    """Appear after touch, status changes, identity changes, silence (§2.3, §2.10)."""

    def _touch(
        self,
        table: DeviceTable,
        master_key: rsa.RSAPrivateKey,
        slave_key: rsa.RSAPrivateKey,
        now: float,
        **info: str,
    ) -> list[str]:
        data = build_touch_response(DEVICE, 1024.0, master_key, slave_key, {**INFO, **info})
        return [
            event.kind
            for event in table.touched(
                parse_touch_response(data, crypto.public_der(master_key)), now
            )
        ]

    def test_lifecycle(self, master_key: rsa.RSAPrivateKey, slave_key: rsa.RSAPrivateKey) -> None:
        """New device → touch → appeared; status → status; rename → changed; silence → gone."""
        table = DeviceTable()
        first = parse_datagram(announcement(master_key))
        assert isinstance(first, Announcement)
        assert table.announced(first, SOURCE, 0.0) == ([], True)
        assert table.devices() == []
        assert self._touch(table, master_key, slave_key, 0.1) == ["appeared"]
        (device,) = table.devices()
        expected = {
            "uuid": DEVICE.hex,
            "name": "p1",
            "serial": "XXXXXXXXXX",
            "model_id": "delta-1",
            "version": "1.6.95",
            "ipaddr": "127.0.0.2",
            "endpoint": ["127.0.0.2", 1901],
        }
        assert {key: device[key] for key in expected} == expected
        assert table.announced(first, SOURCE, 1.0) == ([], False)
        running = parse_datagram(announcement(master_key, Status(2.0, 16, 0.5, "EXTRUDER", "")))
        assert isinstance(running, Announcement)
        events, _ = table.announced(running, SOURCE, 2.0)
        assert [
            (e.kind, e.device["st_id"], e.device["st_label"], e.device["st_prog"]) for e in events
        ] == [("status", 16, "RUNNING", 0.5)]
        bumped = parse_datagram(
            announcement(master_key, Status(3.0, 16, 0.5, "EXTRUDER", ""), slave_ts=2048.0)
        )
        assert isinstance(bumped, Announcement)
        assert table.announced(bumped, SOURCE, 3.0) == ([], True)
        assert self._touch(table, master_key, slave_key, 3.1, name="renamed") == ["changed"]
        assert table.expire(5.0, timeout_s=10.0) == []
        gone = table.expire(13.2, timeout_s=10.0)
        assert [(e.kind, e.device["name"]) for e in gone] == [("gone", "renamed")]
        assert table.devices() == [] and len(table) == 0

    def test_touch_without_announcement(
        self, master_key: rsa.RSAPrivateKey, slave_key: rsa.RSAPrivateKey
    ) -> None:
        """A touch for an unknown (expired) device is ignored."""
        assert self._touch(DeviceTable(), master_key, slave_key, 0.0) == []


class TestManagement:
    """Management answers, requests and identity (§3.2)."""

    @pytest.mark.parametrize(
        ("text", "kind", "symbols", "data"),
        [
            ("ok", "ok", (), {}),
            ("sign", "sign", (), {}),
            ("password", "password", (), {}),
            ("error AUTH_ERROR", "error", ("AUTH_ERROR",), {}),
            ("er BAD_PARAMS method", "error", ("BAD_PARAMS", "method"), {}),
            ('data {"ssid": "a", "rssi": -40}', "data", (), {"ssid": "a", "rssi": -40}),
            ("data nope", "data", (), {"raw": "nope"}),
            ("hello", "unknown", (), {}),
        ],
    )
    def test_parse_answer(
        self, text: str, kind: str, symbols: tuple[str, ...], data: dict[str, object]
    ) -> None:
        """Each answer frame is classified."""
        answer = manage_protocol.parse_answer(text)
        assert (answer.kind, answer.symbols, answer.data) == (kind, symbols, data)

    def test_requests(self) -> None:
        """Fields are NUL-joined in one client frame; network options get an ifname."""
        assert manage_protocol.encode_request("rename", "p 2") == b"\x0c\x00rename\x00p 2"
        assert manage_protocol.network_fields({"method": "dhcp"}) == ["ifname=wlan0", "method=dhcp"]
        with pytest.raises(ValueError, match="unknown network keys"):
            manage_protocol.network_fields({"colour": "red"})

    def test_identity(self, master_key: rsa.RSAPrivateKey, slave_key: rsa.RSAPrivateKey) -> None:
        """The CN carries the uuid; the client signs HMAC-SHA1(uuid, challenge)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        pem = manage_protocol.build_certificate(master_key, DEVICE, "XXXXXXXXXX")
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        assert manage_protocol.uuid_from_certificate(der) == DEVICE
        signature = manage_protocol.sign_challenge(slave_key, DEVICE, b"r" * 64)
        assert crypto.verify(
            slave_key.public_key(),
            bytes.fromhex(signature),
            crypto.hmac_sha1(DEVICE.bytes, b"r" * 64),
        )
