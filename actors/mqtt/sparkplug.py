"""Sparkplug B 3.0, sans-io: payloads in the protobuf wire format of its schema
(``org.eclipse.tahu.protobuf.Payload``), metric typing, topics and the edge node's counters.

The encoder is written out by hand (varints and length-delimited fields, ~50 lines) rather than
generated: the bridge needs ``Payload`` and ``Metric`` with scalar values only, and a generated
module ties the protobuf runtime to the generator's exact version. The tests decode what it
writes with the protobuf runtime from a descriptor of the schema, independently of this code.

Field numbers (Sparkplug B 3.0 schema): ``Payload{timestamp=1 uint64, metrics=2 Metric,
seq=3 uint64, uuid=4, body=5}``; ``Metric{name=1, alias=2, timestamp=3 uint64, datatype=4
uint32, is_null=7 bool, int_value=10 uint32, long_value=11 uint64, float_value=12,
double_value=13 double, boolean_value=14, string_value=15, bytes_value=16}``.
"""

from __future__ import annotations

import enum
import struct
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NAMESPACE",
    "REBIRTH",
    "DataType",
    "EdgeSequence",
    "Metric",
    "Payload",
    "decode_payload",
    "encode_payload",
    "metric_for",
    "topic",
]

#: The first level of every Sparkplug B topic.
NAMESPACE = "spBv1.0"
#: The node-control metric whose ``true`` asks the edge node for a new NBIRTH and DBIRTHs.
REBIRTH = "Node Control/Rebirth"


class DataType(enum.IntEnum):
    """Sparkplug B data types (the scalar ones the bridge uses, numbered as in the schema)."""

    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    Bytes = 17


_INT_VALUE = {DataType.Int8, DataType.Int16, DataType.Int32}
_INT_VALUE |= {DataType.UInt8, DataType.UInt16, DataType.UInt32}
_LONG_VALUE = {DataType.Int64, DataType.UInt64, DataType.DateTime}


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: name, type and value (None: ``is_null``); ``timestamp`` in ms."""

    name: str
    datatype: DataType
    value: Any
    timestamp: int | None = None
    alias: int | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    """A Sparkplug payload: timestamp (ms since the epoch, UTC), metrics, ``seq`` (None for
    NDEATH and commands)."""

    timestamp: int
    metrics: tuple[Metric, ...]
    seq: int | None = None


def now_ms() -> int:
    """Now, in ms since the epoch (Sparkplug's timestamps)."""
    return int(time.time() * 1000)


def topic(group: str, message_type: str, node: str, device: str | None = None) -> str:
    """``spBv1.0/<group>/<message_type>/<node>[/<device>]``."""
    base = f"{NAMESPACE}/{group}/{message_type}/{node}"
    return f"{base}/{device}" if device is not None else base


def metric_for(name: str, value: Any, timestamp: int | None = None) -> Metric | None:
    """A metric typed from a Python value (bool Boolean, int Int64, float Double, str String,
    bytes Bytes, None a null String); None for values Sparkplug has no scalar for (maps,
    arrays: flatten them first)."""
    if isinstance(value, bool):
        return Metric(name, DataType.Boolean, value, timestamp)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return Metric(name, DataType.Int64, value, timestamp)
        return Metric(name, DataType.Double, float(value), timestamp)
    if isinstance(value, float):
        return Metric(name, DataType.Double, value, timestamp)
    if isinstance(value, str):
        return Metric(name, DataType.String, value, timestamp)
    if isinstance(value, (bytes, bytearray)):
        return Metric(name, DataType.Bytes, bytes(value), timestamp)
    if value is None:
        return Metric(name, DataType.String, None, timestamp)
    return None


def flatten(prefix: str, value: Any, depth: int = 4) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"<prefix>/a/b": 1}`` (metric names use ``/`` for folders)."""
    if isinstance(value, dict) and depth > 0:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}/{key}" if prefix else str(key), item, depth - 1))
        return out
    return {prefix: value}


class EdgeSequence:
    """The edge node's two counters: ``seq`` (0-255, per message, NBIRTH is 0) and ``bdSeq``
    (0-255, per MQTT connection; the will's NDEATH and the next NBIRTH carry the same)."""

    def __init__(self) -> None:
        self._seq = 0
        self.bd_seq = -1

    def new_connection(self) -> int:
        """The ``bdSeq`` of a new MQTT connection (its will and its NBIRTH)."""
        self.bd_seq = (self.bd_seq + 1) % 256
        return self.bd_seq

    def birth(self) -> int:
        """The ``seq`` of an NBIRTH: 0, and the count starts again."""
        self._seq = 0
        return 0

    def next(self) -> int:
        """The ``seq`` of the next DBIRTH/NDATA/DDATA/DDEATH."""
        self._seq = (self._seq + 1) % 256
        return self._seq


# --- protobuf wire format -------------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers as their 64-bit two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _len_field(field: int, data: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(data)) + data


def _encode_metric(metric: Metric) -> bytes:
    out = bytearray()
    if metric.name:
        out += _len_field(1, metric.name.encode())
    if metric.alias is not None:
        out += _key(2, _VARINT) + _varint(metric.alias)
    if metric.timestamp is not None:
        out += _key(3, _VARINT) + _varint(metric.timestamp)
    out += _key(4, _VARINT) + _varint(int(metric.datatype))
    value, kind = metric.value, metric.datatype
    if value is None:
        out += _key(7, _VARINT) + _varint(1)
    elif kind in _INT_VALUE:
        out += _key(10, _VARINT) + _varint(int(value) & 0xFFFFFFFF)
    elif kind in _LONG_VALUE:
        out += _key(11, _VARINT) + _varint(int(value))
    elif kind is DataType.Float:
        out += _key(12, _I32) + struct.pack("<f", value)
    elif kind is DataType.Double:
        out += _key(13, _I64) + struct.pack("<d", value)
    elif kind is DataType.Boolean:
        out += _key(14, _VARINT) + _varint(1 if value else 0)
    elif kind in (DataType.String, DataType.Text):
        out += _len_field(15, str(value).encode())
    elif kind is DataType.Bytes:
        out += _len_field(16, bytes(value))
    else:  # pragma: no cover - every DataType member is handled above
        raise ValueError(f"metric {metric.name!r}: no encoding for {kind!r}")
    return bytes(out)


def encode_payload(payload: Payload) -> bytes:
    """``payload`` in the protobuf wire format of Sparkplug B's ``Payload``."""
    out = bytearray(_key(1, _VARINT) + _varint(payload.timestamp))
    for metric in payload.metrics:
        out += _len_field(2, _encode_metric(metric))
    if payload.seq is not None:
        out += _key(3, _VARINT) + _varint(payload.seq)
    return bytes(out)


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """The ``(field, wire type, value)`` of a protobuf message (varints as int, I64/I32 as
    raw bytes, LEN as bytes)."""
    fields: list[tuple[int, int, Any]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= len(data):
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        value: Any
        if wire == _VARINT:
            value = varint()
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            value, pos = data[pos : pos + size], pos + size
        elif wire == _LEN:
            size = varint()
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        fields.append((number, wire, value))
    return fields


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def _decode_metric(data: bytes) -> Metric:
    name, alias, ts, kind, value = "", None, None, 0, None
    for number, _, raw in _fields(data):
        if number == 1:
            name = bytes(raw).decode()
        elif number == 2:
            alias = raw
        elif number == 3:
            ts = raw
        elif number == 4:
            kind = raw
        elif number == 10:
            value = _signed(raw, 32) if kind in (1, 2, 3) else raw
        elif number == 11:
            value = _signed(raw, 64) if kind == 4 else raw
        elif number == 12:
            value = struct.unpack("<f", raw)[0]
        elif number == 13:
            value = struct.unpack("<d", raw)[0]
        elif number == 14:
            value = bool(raw)
        elif number == 15:
            value = bytes(raw).decode()
        elif number == 16:
            value = bytes(raw)
    try:
        datatype = DataType(kind)
    except ValueError:
        raise ValueError(f"metric {name!r}: unsupported datatype {kind}") from None
    return Metric(name, datatype, value, ts, alias)


def decode_payload(data: bytes) -> Payload:
    """A Sparkplug payload (NCMD/DCMD) read back; scalar metrics only.

    Raises:
        ValueError: not a well-formed payload, or a metric of a type the bridge does not take.
    """
    timestamp, seq, metrics = 0, None, []
    for number, _, raw in _fields(data):
        if number == 1:
            timestamp = raw
        elif number == 2:
            metrics.append(_decode_metric(bytes(raw)))
        elif number == 3:
            seq = raw
    return Payload(timestamp, tuple(metrics), seq)
