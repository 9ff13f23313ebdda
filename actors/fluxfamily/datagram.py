"""Sans-io FLUX discovery datagrams on UDP 1901 (flux.md §2): build and parse, no sockets.

Every datagram starts with ``FLUX``, a version byte, an action byte and the 16-byte uuid.

* Version 1 (the default device profile, §2.3-2.5): the announcement with the serial, master
  key, identify and the 64-byte status block (action 0; all-zero uuid = a poke asking for one),
  the touch request (2) and the touch response (3), signed by the master and slave keys.
* Version 2 (a device set ``bare=Y``, §2.6): the announcement carries only an 8-byte session
  and the status block; the touch response carries the master key, identify and
  ``serial/ver/model/name/pwd``, and **no signatures** (nothing to verify).
* Version 0: the 22-byte broadcast beacon (§2.7), only the uuid.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.fluxfamily import crypto

__all__ = [
    "DEFAULT_GROUP",
    "DISCOVERY_PORT",
    "STATUS_LABELS",
    "Announcement",
    "AnnouncementV2",
    "Beacon",
    "DatagramError",
    "Poke",
    "Status",
    "TouchRequest",
    "TouchResponse",
    "TouchResponseV2",
    "build_announcement",
    "build_announcement_v2",
    "build_beacon",
    "build_poke",
    "build_touch_request",
    "build_touch_response",
    "build_touch_response_v2",
    "parse_datagram",
    "parse_touch_response",
]

DEFAULT_GROUP = "239.255.255.250"
DISCOVERY_PORT = 1901
MAGIC = b"FLUX"
ZERO_UUID = bytes(16)
ACTION_ANNOUNCE, ACTION_TOUCH, ACTION_TOUCH_RESPONSE = 0, 2, 3
_HEADER = struct.Struct("<4sBB16s")
_STATUS = struct.Struct("<dif16s32s")
_ANNOUNCE_FIXED = struct.Struct("<10sfHH")
_TOUCH_FIXED = struct.Struct("<fHH")
_U16 = struct.Struct("<H")
_V2_FIXED = struct.Struct("<HH")
SESSION_SIZE = 8

# st_id -> label, fluxclient's DEVICE_STATUS_CODE without the ST_ prefix (§2.11)
STATUS_LABELS = {
    -10: "OCCUPIED_RAW",
    -3: "OCCUPIED_SDK",
    -2: "OCCUPIED_SCAN",
    -1: "OCCUPIED_MAINTAIN",
    0: "IDLE",
    1: "INIT",
    4: "STARTING",
    6: "RESUMING",
    16: "RUNNING",
    18: "RESUMING",
    36: "PAUSED",
    38: "PAUSING",
    48: "PAUSED",
    50: "PAUSING",
    64: "COMPLETED",
    66: "COMPLETING",
    128: "ABORTED",
    130: "ABORTING",
}


class DatagramError(ValueError):
    """A datagram that is malformed or whose signatures do not verify."""


@dataclass(frozen=True, slots=True)
class Status:
    """The 64-byte status block (§2.4)."""

    st_ts: float = 0.0
    st_id: int = 0
    st_prog: float = 0.0
    head_module: str = "N/A"
    error_label: str = ""

    def pack(self) -> bytes:
        """Encode as the 64-byte block (strings NUL padded, truncated to fit)."""
        return _STATUS.pack(
            self.st_ts,
            self.st_id,
            self.st_prog,
            self.head_module.encode()[:16],
            self.error_label.encode()[:32],
        )

    @classmethod
    def unpack(cls, data: bytes) -> Status:
        """Decode the first 64 bytes of ``data``."""
        st_ts, st_id, st_prog, head, label = _STATUS.unpack_from(data)
        return cls(st_ts, st_id, st_prog, _cstr(head), _cstr(label))


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Announcement:
    """A v1 announcement (§2.3)."""

    uuid: uuidlib.UUID
    serial: str
    slave_ts: float
    master_der: bytes
    identify: bytes
    status: Status


@dataclass(frozen=True, slots=True)
class AnnouncementV2:
    """A v2 announcement (§2.6): a session id fixed per device daemon start, and the status."""

    uuid: uuidlib.UUID
    session: bytes
    status: Status


@dataclass(frozen=True, slots=True)
class Poke:
    """A discover request (announce with the zero uuid): answer with a full announcement.

    ``version`` is the datagram's: a device answers only its own (1, or 2 when bare).
    """

    version: int = 1


@dataclass(frozen=True, slots=True)
class TouchRequest:
    """A touch request for ``uuid`` (``version`` 1 or 2, as the announcement it follows)."""

    uuid: uuidlib.UUID
    version: int = 1


@dataclass(frozen=True, slots=True)
class Beacon:
    """The short version-0 broadcast beacon: only the uuid."""

    uuid: uuidlib.UUID


@dataclass(frozen=True, slots=True)
class TouchResponse:
    """A v1 touch response; ``info`` has ``ver``, ``model``, ``name``, ``pwd``, ``time``."""

    uuid: uuidlib.UUID
    slave_ts: float
    slave_der: bytes
    info: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class TouchResponseV2:
    """A v2 touch response; ``info`` has ``serial``, ``ver``, ``model``, ``name``, ``pwd``.

    Unsigned: it is taken as sent (the master key it carries is what a TLS pin checks later).
    """

    uuid: uuidlib.UUID
    master_der: bytes
    identify: bytes
    info: dict[str, str] = field(default_factory=dict)


Datagram = (
    Announcement | AnnouncementV2 | Poke | TouchRequest | Beacon | TouchResponse | TouchResponseV2
)


def _header(version: int, action: int, device: bytes) -> bytes:
    return _HEADER.pack(MAGIC, version, action, device)


def build_poke(version: int = 1) -> bytes:
    """The discover request: announce action with the all-zero uuid (a device answers only its
    own ``version``: 1, or 2 when bare)."""
    return _header(version, ACTION_ANNOUNCE, ZERO_UUID)


def build_touch_request(device: uuidlib.UUID, version: int = 1) -> bytes:
    """Ask the device for its name, model, version (and in v1 its slave key)."""
    return _header(version, ACTION_TOUCH, device.bytes)


def build_announcement_v2(device: uuidlib.UUID, session: bytes, status: Status) -> bytes:
    """A v2 announcement: header, the 8-byte session, the status block."""
    if len(session) != SESSION_SIZE:
        raise ValueError(f"session must be {SESSION_SIZE} bytes, not {len(session)}")
    return _header(2, ACTION_ANNOUNCE, device.bytes) + session + status.pack()


def build_touch_response_v2(
    device: uuidlib.UUID, master_der: bytes, identify: bytes, info: dict[str, str]
) -> bytes:
    """A v2 touch response (no signatures)."""
    raw = _info_bytes(info)
    return (
        _header(2, ACTION_TOUCH_RESPONSE, device.bytes)
        + _V2_FIXED.pack(len(master_der), len(identify))
        + master_der
        + identify
        + _U16.pack(len(raw))
        + raw
    )


def _info_bytes(info: dict[str, str]) -> bytes:
    return "\x00".join(f"{key}={value}" for key, value in info.items()).encode()


def _info_dict(raw: bytes) -> dict[str, str]:
    return dict(
        item.partition("=")[::2]
        for item in raw.decode("utf-8", errors="replace").split("\x00")
        if "=" in item
    )


def build_beacon(device: uuidlib.UUID) -> bytes:
    """The 22-byte version-0 broadcast beacon."""
    return _header(0, 1, device.bytes)


def build_announcement(
    device: uuidlib.UUID,
    serial: str,
    slave_ts: float,
    master_der: bytes,
    identify: bytes,
    status: Status,
) -> bytes:
    """A full v1 announcement."""
    fixed = _ANNOUNCE_FIXED.pack(serial.encode()[:10], slave_ts, len(master_der), len(identify))
    return _header(1, ACTION_ANNOUNCE, device.bytes) + fixed + master_der + identify + status.pack()


def build_touch_response(
    device: uuidlib.UUID,
    slave_ts: float,
    master_key: rsa.RSAPrivateKey,
    slave_key: rsa.RSAPrivateKey,
    info: dict[str, str],
) -> bytes:
    """A v1 touch response, signed by the master key (slave key) and the slave key (info)."""
    ts_bytes = struct.pack("<f", slave_ts)
    slave_der = crypto.public_der(slave_key)
    master_sig = crypto.sign(master_key, ts_bytes + slave_der)
    raw = _info_bytes(info)
    head = _header(1, ACTION_TOUCH_RESPONSE, device.bytes) + _TOUCH_FIXED.pack(
        slave_ts, len(slave_der), len(master_sig)
    )
    return head + slave_der + master_sig + _U16.pack(len(raw)) + raw + crypto.sign(slave_key, raw)


def parse_datagram(data: bytes) -> Datagram | None:
    """Decode one datagram; None for what a peer ignores (short, bad magic, version > 2,
    unknown action).

    Touch responses come back unverified; check them with ``parse_touch_response``.

    Raises:
        DatagramError: Right magic and version, but truncated or inconsistent.
    """
    if len(data) < _HEADER.size:
        return None
    magic, version, action, raw_uuid = _HEADER.unpack_from(data)
    if magic != MAGIC or version > 2:
        return None
    device = uuidlib.UUID(bytes=raw_uuid)
    if version == 0:
        return Beacon(device)
    if action == ACTION_ANNOUNCE:
        if raw_uuid == ZERO_UUID:
            return Poke(version)
        return (
            _parse_announcement(device, data)
            if version == 1
            else _parse_announcement_v2(device, data)
        )
    if action == ACTION_TOUCH:
        return TouchRequest(device, version)
    if action == ACTION_TOUCH_RESPONSE:
        return _parse_touch(device, data)[0] if version == 1 else _parse_touch_v2(device, data)
    return None


def _parse_announcement_v2(device: uuidlib.UUID, data: bytes) -> AnnouncementV2:
    offset = _HEADER.size
    if len(data) < offset + SESSION_SIZE + _STATUS.size:
        raise DatagramError("v2 announcement shorter than its session and status")
    session = data[offset : offset + SESSION_SIZE]
    return AnnouncementV2(device, session, Status.unpack(data[offset + SESSION_SIZE :]))


def _parse_touch_v2(device: uuidlib.UUID, data: bytes) -> TouchResponseV2:
    offset = _HEADER.size
    try:
        l1, l2 = _V2_FIXED.unpack_from(data, offset)
        offset += _V2_FIXED.size
        master = data[offset : offset + l1]
        identify = data[offset + l1 : offset + l1 + l2]
        offset += l1 + l2
        (l3,) = _U16.unpack_from(data, offset)
    except struct.error as exc:
        raise DatagramError("truncated v2 touch response") from exc
    offset += _U16.size
    raw = data[offset : offset + l3]
    if len(raw) != l3 or len(master) != l1 or len(identify) != l2:
        raise DatagramError("v2 touch response shorter than its fields")
    return TouchResponseV2(device, master, identify, _info_dict(raw))


def _parse_announcement(device: uuidlib.UUID, data: bytes) -> Announcement:
    offset = _HEADER.size
    try:
        serial, slave_ts, l1, l2 = _ANNOUNCE_FIXED.unpack_from(data, offset)
    except struct.error as exc:
        raise DatagramError("truncated announcement") from exc
    offset += _ANNOUNCE_FIXED.size
    if len(data) < offset + l1 + l2 + _STATUS.size:
        raise DatagramError("announcement shorter than its key, identify and status")
    master = data[offset : offset + l1]
    identify = data[offset + l1 : offset + l1 + l2]
    status = Status.unpack(data[offset + l1 + l2 :])
    return Announcement(device, _cstr(serial), slave_ts, master, identify, status)


def _parse_touch(device: uuidlib.UUID, data: bytes) -> tuple[TouchResponse, bytes, bytes]:
    offset = _HEADER.size
    try:
        slave_ts, l1, l2 = _TOUCH_FIXED.unpack_from(data, offset)
        offset += _TOUCH_FIXED.size
        slave_der = data[offset : offset + l1]
        master_sig = data[offset + l1 : offset + l1 + l2]
        offset += l1 + l2
        (l3,) = _U16.unpack_from(data, offset)
    except struct.error as exc:
        raise DatagramError("truncated touch response") from exc
    offset += _U16.size
    raw = data[offset : offset + l3]
    if len(raw) != l3 or len(slave_der) != l1 or len(master_sig) != l2:
        raise DatagramError("touch response shorter than its fields")
    response = TouchResponse(device, slave_ts, slave_der, _info_dict(raw), raw)
    return response, master_sig, data[offset + l3 :]


def parse_touch_response(data: bytes, master_der: bytes) -> TouchResponse:
    """Decode a touch response and check both signatures against the announced master key.

    Raises:
        DatagramError: Malformed, or a signature does not verify.
    """
    parsed = parse_datagram(data)
    if not isinstance(parsed, TouchResponse):
        raise DatagramError("not a touch response")
    response, master_sig, info_sig = _parse_touch(parsed.uuid, data)
    try:
        master = crypto.load_public_key(master_der)
        slave = crypto.load_public_key(response.slave_der)
    except ValueError as exc:
        raise DatagramError(f"bad key in touch: {exc}") from exc
    if not crypto.verify(
        master, master_sig, struct.pack("<f", response.slave_ts) + response.slave_der
    ):
        raise DatagramError("slave key signature does not verify")
    if not crypto.verify(slave, info_sig, response.raw):
        raise DatagramError("info signature does not verify")
    return response
