"""Encode and decode linebus wire messages (protocol version 1); no sockets here.

docs/PROTOCOL.md is the contract; this module is its Python implementation and
tests/vectors/ holds golden bytes both must agree on.

Command channel (DEALER <-> broker ROUTER): every message is one *header frame*, a msgpack array
``[version, kind, ...]``, followed by zero or more raw *bulk frames*. Arguments, results and
progress data ride inside the header as an opaque ``bin`` holding a msgpack value, so the broker
routes on the header without decoding them. A ``bytes`` value larger than ``BULK_THRESHOLD`` is
lifted out into a bulk frame and replaced by an ext-type reference, so firmware images and JPEGs
pass through every hop without being re-encoded.

Receivers read a header with ``split`` (unpack once, check version and kind) and the decoder of
its kind (``request_header``, ``reply_header``, ``error_header``...), which return the elements
by name or raise the documented BadRequest / UnsupportedVersion: this module is the only one that
knows where an element sits in a header. ``decode`` builds a whole ``Message`` from the same checks.

Event channel (PUB -> broker XSUB/XPUB -> SUB): one frame, ``topic + b"\\0" + msgpack array``.
The topic comes first so ZeroMQ's prefix subscriptions filter events without any decoding.

This module imports only the standard library, msgpack and ``bus.errors``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, NamedTuple

import msgpack

from bus.errors import BadRequest, UnsupportedVersion

__all__ = [
    "BROKER_SERVICE",
    "BULK_EXT",
    "BULK_KINDS",
    "BULK_THRESHOLD",
    "DEFAULT_COMMAND_ENDPOINT",
    "DEFAULT_PUBLISH_ENDPOINT",
    "DEFAULT_SUBSCRIBE_ENDPOINT",
    "IPC_ROLES",
    "MAX_HEADER_BYTES",
    "REASON_BROKER_STOPPING",
    "REASON_NOT_REGISTERED",
    "REASON_REPLACED",
    "SUPPORTED_VERSIONS",
    "VERSION",
    "ErrorHeader",
    "Event",
    "HelloHeader",
    "Kind",
    "Message",
    "ReadyHeader",
    "ReplyHeader",
    "RequestHeader",
    "bulk_not_allowed",
    "cancel_header",
    "decode",
    "decode_event",
    "disconnect_header",
    "encode_cancel",
    "encode_disconnect",
    "encode_error",
    "encode_event",
    "encode_event_bodies",
    "encode_event_body",
    "encode_heartbeat",
    "encode_hello",
    "encode_progress",
    "encode_ready",
    "encode_reply",
    "encode_request",
    "error_header",
    "error_msg_id",
    "event_body_head",
    "event_fields_ok",
    "event_prefix",
    "has_timestamp",
    "hello_header",
    "new_epoch",
    "new_id_prefix",
    "no_bulk_ext_hook",
    "no_ext_hook",
    "pack_value",
    "peek_msg_id",
    "ready_header",
    "reply_header",
    "request_header",
    "request_route",
    "request_target",
    "request_ttl",
    "split",
    "unpack_small",
    "unpack_value",
    "validate_service_name",
]

VERSION: Final = 1
SUPPORTED_VERSIONS: Final = (1,)

DEFAULT_COMMAND_ENDPOINT: Final = "tcp://127.0.0.1:7750"
DEFAULT_PUBLISH_ENDPOINT: Final = "tcp://127.0.0.1:7751"
DEFAULT_SUBSCRIBE_ENDPOINT: Final = "tcp://127.0.0.1:7752"
#: The Unix sockets of a broker's ``ipc_dir`` (``bus.ipc``): ``ipc://DIR/<role>``, one a role.
IPC_ROLES: Final = ("command", "publish", "subscribe")


def subscribe_beside(command: str) -> str | None:
    """The subscribe endpoint of a broker's layout around ``command``, if it has one:
    ``tcp://host:P`` -> ``tcp://host:P+2`` (the default ports), ``ipc://DIR/command`` ->
    ``ipc://DIR/subscribe`` (``IPC_ROLES``)."""
    host, _, port = command.rpartition(":")
    if command.startswith("tcp://") and port.isdigit():
        return f"{host}:{int(port) + 2}"
    folder, _, name = command.rpartition("/")
    if command.startswith("ipc://") and name == IPC_ROLES[0]:
        return f"{folder}/{IPC_ROLES[2]}"
    return None


#: The broker answers requests addressed to this service name itself (introspection, stats).
BROKER_SERVICE: Final = "broker"

#: msgpack ext type code of a reference to a bulk frame; data is the 1-based frame index, uint32 BE.
BULK_EXT: Final = 1
#: bytes values at least this large travel as bulk frames instead of inline bin.
BULK_THRESHOLD: Final = 64 * 1024
#: A header frame larger than this is rejected: headers are small, bulk goes in bulk frames.
MAX_HEADER_BYTES: Final = 1024 * 1024

#: DISCONNECT reasons an actor acts on (the text after them is for people).
REASON_NOT_REGISTERED = "not registered"
REASON_REPLACED = "replaced"
REASON_BROKER_STOPPING = "broker stopping"

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class Kind(IntEnum):
    """Message kinds; the integer is what travels on the wire."""

    REQUEST = 1
    PROGRESS = 2
    REPLY = 3
    ERROR = 4
    CANCEL = 5
    READY = 6
    HEARTBEAT = 7
    DISCONNECT = 8
    EVENT = 9
    HELLO = 10


@dataclass(slots=True)
class Message:
    """A decoded command-channel message.

    Only the fields of its kind are set; ``payload`` holds the still-encoded ``bin`` (arguments,
    result or progress data) and ``frames`` the bulk frames, so a router can forward both untouched.
    """

    kind: Kind
    msg_id: str = ""
    service: str = ""
    command: str = ""
    ttl_s: float | None = None
    payload: bytes = b""
    code: str = ""
    text: str = ""
    details: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    versions: list[int] | None = None
    frames: list[Any] | None = None

    def value(self) -> Any:
        """Decode ``payload`` (arguments, result or progress data), resolving bulk references."""
        return unpack_value(self.payload, self.frames or ())


class Event(NamedTuple):
    """A decoded event: who published it, its per-(publisher, topic) sequence and its data."""

    topic: str
    src: str
    epoch: int
    seq: int
    ts: float
    data: Any


# --- values and bulk frames ---------------------------------------------------------------


def _lift_bulk(value: Any, frames: list[Any], depth: int) -> Any:
    """Replace large bytes inside ``value`` by ext references, appending them to ``frames``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) >= BULK_THRESHOLD:
            frames.append(value)
            return msgpack.ExtType(BULK_EXT, len(frames).to_bytes(4, "big"))
        return value
    if depth <= 0:
        return value
    if isinstance(value, dict):
        if any(
            isinstance(v, (bytes, bytearray, memoryview, dict, list, tuple)) for v in value.values()
        ):
            return {k: _lift_bulk(v, frames, depth - 1) for k, v in value.items()}
        return value
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (bytes, bytearray, memoryview, dict, list, tuple)) for v in value):
            return [_lift_bulk(v, frames, depth - 1) for v in value]
        return value
    return value


def _default(obj: Any) -> Any:
    if isinstance(obj, memoryview):
        return obj.tobytes()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(
        f"cannot encode {type(obj).__name__} on the bus (use None, bool, int, float, str, bytes, list, dict)"
    )


def _has_large_bytes(value: Any) -> bool:
    """Cheap top-level look for bulk-sized bytes (the common place for firmware, files, JPEGs)."""
    if type(value) is dict:
        # A plain loop: any() over a generator costs twice as much on this per-message path.
        for item in value.values():
            if type(item) in _BYTES_TYPES and len(item) >= BULK_THRESHOLD:
                break
        else:
            return False
        return True
    return type(value) in _BYTES_TYPES and len(value) >= BULK_THRESHOLD


_BYTES_TYPES = frozenset({bytes, bytearray, memoryview})
# One packer per thread would cost a lookup per message; instead the shared packer has no
# `default` hook, so packing runs entirely in C under the GIL and cannot interleave between
# threads. Values that need the hook (memoryview, set) take the slow path.
_fast_packer = msgpack.Packer()


def _pack(value: Any) -> bytes:
    try:
        return _fast_packer.pack(value)
    except TypeError:
        return msgpack.packb(value, default=_default)


def pack_value(value: Any) -> tuple[bytes, list[Any]]:
    """Encode a value as msgpack, lifting large bytes into bulk frames; returns (bin, frames)."""
    if not _has_large_bytes(value):
        data = _pack(value)
        # Nothing inside can be bulk-sized if the whole encoding is smaller than the threshold.
        if len(data) < BULK_THRESHOLD:
            return data, []
    frames: list[Any] = []
    lifted = _lift_bulk(value, frames, 4)
    return _pack(lifted), frames


def no_bulk_ext_hook(code: int, raw: bytes) -> Any:
    """ext_hook for payloads of messages without bulk frames: any reference is an error."""
    if code == BULK_EXT:
        raise _payload_error(
            "bulk_reference", "a bulk reference (ext type 1) but the message has no bulk frames"
        )
    raise _payload_error("ext_type", f"ext type {code}; only type 1 is defined")


#: Bytes every msgpack timestamp (ext type -1: fixext 4, fixext 8, ext 8 of 12 bytes) starts
#: with. msgpack-python decodes timestamps itself, never through ``ext_hook``, so a decoder that
#: must refuse them looks for these first and walks the value only when one is there.
_TIMESTAMP_MARKS: Final = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def has_timestamp(data: bytes, value: Any) -> bool:
    """Whether ``value`` (what msgpack made of ``data``) holds a msgpack timestamp anywhere.

    Cheap when it does not: the value is walked only if ``data`` holds a timestamp's first bytes.
    """
    # An int operand: ``b"\xff" in data`` costs five times as much (CPython first tries it as
    # an integer and handles the TypeError), and this runs for every header.
    if 0xFF not in data or not any(mark in data for mark in _TIMESTAMP_MARKS):
        return False
    stack = [value]
    while stack:  # a loop, not recursion: msgpack nests up to 1024 levels
        item = stack.pop()
        if type(item) is msgpack.Timestamp:
            return True
        if type(item) is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


def _msgpack_problem(exc: BaseException) -> tuple[str, str]:
    """``(problem, text)``: why msgpack refused some bytes, as a fixed word and for people."""
    if isinstance(exc, msgpack.ExtraData):
        return "trailing_bytes", "bytes left over after the value"
    if isinstance(exc, msgpack.FormatError):
        return "invalid_byte", "a byte that begins no msgpack value (0xc1)"
    if isinstance(exc, UnicodeDecodeError):
        return "invalid_utf8", f"a str is not valid UTF-8 ({exc.reason}, byte {exc.start})"
    if isinstance(exc, msgpack.StackError):
        return "too_deep", "nested deeper than msgpack's limit"
    text = str(exc)
    if "incomplete input" in text:
        return "truncated", "it ends in the middle of a value"
    if "map key" in text:  # msgpack: "int is not allowed for map key when strict_map_key=True"
        return "map_key_not_str", f"a map key is not a str ({text.split()[0]})"
    return "invalid", text or type(exc).__name__


def _payload_error(problem: str, text: str) -> BadRequest:
    return BadRequest(
        f"payload is not valid msgpack: {text}",
        details={"reason": "invalid_payload", "problem": problem},
    )


def _timestamp_error() -> BadRequest:
    return _payload_error("ext_type", "ext type -1 (msgpack timestamp); only type 1 is defined")


def unpack_small(data: bytes) -> Any:
    """Decode the payload of a message that has no bulk frames (the hot path).

    Raises:
        BadRequest: not exactly one msgpack value, a map key that is not a str, or an ext value;
            details ``{"reason": "invalid_payload", "problem": ...}`` (docs/PROTOCOL.md §4).
    """
    if not data:
        return None
    try:
        value = _unpackb_raw(data, strict_map_key=True, ext_hook=no_bulk_ext_hook)
    except BadRequest:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise _payload_error(*_msgpack_problem(exc)) from exc
    if has_timestamp(data, value):
        raise _timestamp_error()
    return value


_unpackb_raw = msgpack.unpackb


def unpack_value(data: bytes, frames: Any = ()) -> Any:
    """Decode a msgpack value, replacing bulk references by the bytes of the referenced frame.

    Raises:
        BadRequest: what ``unpack_small`` refuses, an ext type other than 1, or a bulk
            reference that is not 4 bytes or names no frame (``problem`` ``bulk_reference``).
    """
    if not data:
        return None

    def ext_hook(code: int, raw: bytes) -> Any:
        if code != BULK_EXT:
            raise _payload_error("ext_type", f"ext type {code}; only type 1 is defined")
        if len(raw) != 4:
            raise _payload_error(
                "bulk_reference", f"a bulk reference (ext type 1) holds {len(raw)} bytes, not 4"
            )
        index = int.from_bytes(raw, "big")
        if not 1 <= index <= len(frames):
            raise _payload_error(
                "bulk_reference",
                f"bulk reference {index} but the message has {len(frames)} bulk frames",
            )
        frame = frames[index - 1]
        return frame if isinstance(frame, bytes) else bytes(frame)

    try:
        value = msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=True)
    except BadRequest:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise _payload_error(*_msgpack_problem(exc)) from exc
    if has_timestamp(data, value):
        raise _timestamp_error()
    return value


# --- command channel: encoding ------------------------------------------------------------

_packb = _pack
_unpackb = msgpack.unpackb
_HEARTBEAT = _pack([VERSION, Kind.HEARTBEAT])


def encode_request(
    msg_id: str, service: str, command: str, ttl_s: float | None, args: dict[str, Any] | None
) -> list[Any]:
    """Build a REQUEST: header ``[1, 1, msg_id, service, command, ttl_s, args_bin]`` + bulk."""
    payload, frames = pack_value(args or {})
    return [_packb([VERSION, Kind.REQUEST, msg_id, service, command, ttl_s, payload]), *frames]


def encode_progress(msg_id: str, data: Any) -> list[Any]:
    """Build a PROGRESS: header ``[1, 2, msg_id, data_bin]`` + bulk."""
    payload, frames = pack_value(data)
    return [_packb([VERSION, Kind.PROGRESS, msg_id, payload]), *frames]


def encode_reply(msg_id: str, result: Any) -> list[Any]:
    """Build a REPLY: header ``[1, 3, msg_id, result_bin]`` + bulk."""
    payload, frames = pack_value(result)
    return [_packb([VERSION, Kind.REPLY, msg_id, payload]), *frames]


def encode_error(
    msg_id: str, code: str, message: str, details: dict[str, Any] | None = None
) -> list[Any]:
    """Build an ERROR: header ``[1, 4, msg_id, code, message, details]``."""
    return [_packb([VERSION, Kind.ERROR, msg_id, code, message, details or {}])]


def encode_cancel(msg_id: str) -> list[Any]:
    """Build a CANCEL: header ``[1, 5, msg_id]``."""
    return [_packb([VERSION, Kind.CANCEL, msg_id])]


def encode_ready(service: str, info: dict[str, Any]) -> list[Any]:
    """Build a READY: header ``[1, 6, service, info]``; info has kind, pid, commands, heartbeat_s."""
    return [_packb([VERSION, Kind.READY, service, info])]


def encode_heartbeat() -> list[Any]:
    """Build a HEARTBEAT: header ``[1, 7]``."""
    return [_HEARTBEAT]


def encode_disconnect(reason: str) -> list[Any]:
    """Build a DISCONNECT: header ``[1, 8, reason]``."""
    return [_packb([VERSION, Kind.DISCONNECT, reason])]


def encode_hello(versions: list[int], info: dict[str, Any]) -> list[Any]:
    """Build a HELLO: header ``[1, 10, versions, info]`` (the broker answers with one version)."""
    return [_packb([VERSION, Kind.HELLO, versions, info])]


# --- command channel: decoding ------------------------------------------------------------
#
# This is the only place that knows where each element sits in a header (docs/PROTOCOL.md §5).
# A receiver unpacks the header frame once with ``split`` and passes the array to the decoder
# of its kind, which returns the elements by name. The fast checks are plain type tests; only
# when one fails is the precise error worked out, walking the checks in the documented order,
# so every decoder raises exactly the BadRequest / UnsupportedVersion that ``decode`` raises.


class RequestHeader(NamedTuple):
    """REQUEST ``[1, 1, msg_id, service, command, ttl_s, args]``; ``payload`` is the args bin.

    ``ttl_s`` is the number as sent (an int stays an int), or None.
    """

    msg_id: str
    service: str
    command: str
    ttl_s: float | None
    payload: bytes


class ReplyHeader(NamedTuple):
    """REPLY ``[1, 3, msg_id, result]`` or PROGRESS ``[1, 2, msg_id, data]`` (one layout)."""

    msg_id: str
    payload: bytes


class ErrorHeader(NamedTuple):
    """ERROR ``[1, 4, msg_id, code, message, details]``."""

    msg_id: str
    code: str
    message: str
    details: dict[str, Any]


class ReadyHeader(NamedTuple):
    """READY ``[1, 6, service, info]``."""

    service: str
    info: dict[str, Any]


class HelloHeader(NamedTuple):
    """HELLO ``[1, 10, versions, info]``."""

    versions: list[int]
    info: dict[str, Any]


_KIND_VALUES: Final = frozenset(int(k) for k in Kind)
#: Kinds valid on the command channel: every kind but EVENT.
_COMMAND_KINDS: Final = _KIND_VALUES - {int(Kind.EVENT)}
_REQUEST: Final = int(Kind.REQUEST)
_CANCEL: Final = int(Kind.CANCEL)
_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__ (hot path)


def _bad(reason: str) -> BadRequest:
    return BadRequest(f"malformed message: {reason}", details={"reason": reason})


def _too_large(size: int) -> BadRequest:
    return BadRequest(
        f"header frame of {size} bytes exceeds {MAX_HEADER_BYTES}; send large data as bulk frames",
        details={"reason": "header_too_large", "size": size},
    )


def _type_error(value: Any, name: str, expected: str) -> BadRequest:
    return _bad(f"{name} {expected}, got {type(value).__name__}")


def _short(kind: Kind, header: list[Any]) -> BadRequest:
    return _bad(f"{kind.name} header needs {_ARITY[kind]} elements, got {len(header)}")


def _ttl_ok(ttl: Any) -> bool:
    return ttl is None or (type(ttl) in (int, float) and math.isfinite(ttl))


def _header_error(frame: Any, header: Any) -> BadRequest:
    """The error of a header ``split`` refused (``header`` is what msgpack made of ``frame``).

    The checks, in the documented order (docs/PROTOCOL.md §12): an array with a first element;
    the version an integer, then 1 (so ``[2]`` is ``unsupported_version``: what follows the
    version is the version's business); a kind; a command-channel kind.
    """
    if len(frame) > MAX_HEADER_BYTES:
        return _too_large(len(frame))
    if not isinstance(header, list) or not header:
        return _bad("header must be a msgpack array [version, kind, ...]")
    version = header[0]
    if type(version) is not int:  # msgpack true and 1.0 are not version 1
        return _bad("header[0] must be the protocol version (an integer)")
    if version != VERSION:
        return UnsupportedVersion(
            f"protocol version {version} is not supported (supported: {list(SUPPORTED_VERSIONS)})",
            details={"supported": list(SUPPORTED_VERSIONS)},
        )
    if len(header) < 2:
        return _bad("header must be a msgpack array [version, kind, ...]")
    kind = header[1]
    if type(kind) is not int or kind not in _KIND_VALUES:
        return _bad(f"unknown message kind {kind!r}")
    return _bad("events go to the publish endpoint, not the command endpoint")


class _ExtInHeader(ValueError):
    """An ext value in a header or event body (only payloads may hold one, a bulk reference)."""


def no_ext_hook(code: int, raw: bytes) -> Any:
    """ext_hook for headers and event bodies, which hold no ext value (docs/PROTOCOL.md §4)."""
    raise _ExtInHeader(f"an ext value (type {code}); only payloads may hold one")


def _unpack_header(frame: bytes, what: str = "header") -> Any:
    """Unpack a header frame (or, ``what`` = "event body", an event's body): exactly one msgpack
    value, every map key a str, no ext value.

    Raises:
        BadRequest: the bytes are not that, with the problem named.
    """
    try:
        header = _unpackb(frame, strict_map_key=True, ext_hook=no_ext_hook)
    except _ExtInHeader as exc:
        raise _bad(f"{what} holds {exc}") from exc
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        if what == "header" and len(frame) > MAX_HEADER_BYTES:
            raise _too_large(len(frame)) from exc
        raise _bad(f"{what} is not msgpack: {_msgpack_problem(exc)[1]}") from exc
    if has_timestamp(frame, header):
        raise _bad(f"{what} holds an ext value (type -1, a timestamp); only payloads may hold one")
    return header


def split(frame: bytes) -> tuple[int, list[Any]]:
    """Unpack a command-channel header frame into ``(kind, header)``.

    Checks what every kind shares: a msgpack array whose version is 1 and whose kind is a
    command-channel kind (the returned ``kind`` is a plain int, equal to its ``Kind``). The
    elements after the kind are not checked: pass ``header`` to the decoder of its kind
    (``request_header``, ``reply_header``...), or read only the request id with ``peek_msg_id``
    where a message is routed, not consumed. The header size limit is not checked here either
    (``request_header``, ``ready_header`` and ``hello_header`` check it, as does ``decode``).

    Raises:
        BadRequest: not exactly one msgpack value (trailing bytes, invalid UTF-8, a map key that
            is not a str, an ext value), not an array of a version and a kind, a version that is
            not an integer, an unknown or EVENT kind.
        UnsupportedVersion: another integer version (checked before the array's length).
    """
    header = _unpack_header(frame)
    if type(header) is list and len(header) > 1:
        version = header[0]
        kind = header[1]
        if (
            version == VERSION
            and type(version) is int
            and type(kind) is int
            and kind in _COMMAND_KINDS
        ):
            return kind, header
    raise _header_error(frame, header)


def peek_msg_id(header: list[Any]) -> str | None:
    """The request id (element 2) of a header from ``split``, if it has a string there.

    For routing PROGRESS, REPLY, ERROR and CANCEL by id without checking the rest.
    """
    if len(header) > 2:
        msg_id = header[2]
        if type(msg_id) is str:
            return msg_id
    return None


def error_msg_id(frame: bytes) -> str:
    """The ``msg_id`` to put in an ERROR about ``frame`` (any frame, however malformed).

    Element 2 if the frame unpacks as ``split`` unpacks it, the header is a REQUEST or CANCEL
    (the kinds whose element 2 is the sender's request id) and element 2 is a string, else ``""``
    (docs/PROTOCOL.md §6).
    """
    try:
        header = _unpack_header(frame)
    except BadRequest:  # the frame is the problem being reported; nothing more to learn
        return ""
    if (
        type(header) is list
        and len(header) > 2
        and type(header[1]) is int
        and header[1] in (_REQUEST, _CANCEL)
        and type(header[2]) is str
    ):
        return header[2]
    return ""


def _request_error(header: list[Any], frame: bytes) -> BadRequest:
    if len(frame) > MAX_HEADER_BYTES:
        return _too_large(len(frame))
    if len(header) < 7:
        return _short(Kind.REQUEST, header)
    if not _ttl_ok(header[5]):
        return _bad("ttl_s must be a finite number or nil")
    for value, name in ((header[2], "msg_id"), (header[3], "service"), (header[4], "command")):
        if type(value) is not str:
            return _type_error(value, name, "must be a string")
    return _type_error(header[6], "args", "must be msgpack bin")


def request_route(header: list[Any], frame: bytes) -> tuple[str, str]:
    """``(msg_id, service)`` of a REQUEST header from ``split``, for routing it.

    Checks everything ``request_header`` checks except ``ttl_s``, which the broker checks only
    once it knows the service is up (``unknown_service`` and ``unavailable`` come first, §6):
    then ``request_ttl`` gives it.

    Raises:
        BadRequest: header over ``MAX_HEADER_BYTES``, too short, or an element of the wrong type.
    """
    if len(header) > 6 and len(frame) <= MAX_HEADER_BYTES:
        msg_id = header[2]
        service = header[3]
        if (
            type(msg_id) is str
            and type(service) is str
            and type(header[4]) is str
            and type(header[6]) is bytes
        ):
            return msg_id, service
    raise _request_error(header, frame)


def request_target(header: list[Any], frame: bytes) -> tuple[str, str, str]:
    """``(msg_id, service, command)`` of a REQUEST header from ``split``, for an access check.

    Checks what ``request_route`` checks.

    Raises:
        BadRequest: header over ``MAX_HEADER_BYTES``, too short, or an element of the wrong type.
    """
    msg_id, service = request_route(header, frame)
    command: str = header[4]  # request_route checked it is a str
    return msg_id, service, command


def request_ttl(header: list[Any], frame: bytes) -> float | None:
    """``ttl_s`` of a REQUEST header that ``request_route`` accepted.

    Raises:
        BadRequest: ``ttl_s`` is not a finite int or float, nor nil.
    """
    if len(header) > 6:
        ttl: float | None = header[5]
        if ttl is None or (type(ttl) is float and math.isfinite(ttl)) or type(ttl) is int:
            return ttl
    raise _request_error(header, frame)


def request_header(header: list[Any], frame: bytes) -> RequestHeader:
    """The elements of a REQUEST header from ``split`` (``frame`` is the header frame).

    Raises:
        BadRequest: header over ``MAX_HEADER_BYTES``, too short, or an element of the wrong type.
    """
    if len(header) > 6 and len(frame) <= MAX_HEADER_BYTES:
        msg_id, service, command, ttl, payload = header[2:7]
        if (
            type(msg_id) is str
            and type(service) is str
            and type(command) is str
            and type(payload) is bytes
            and (ttl is None or (type(ttl) is float and math.isfinite(ttl)) or type(ttl) is int)
        ):
            return _tuple_new(RequestHeader, (msg_id, service, command, ttl, payload))
    raise _request_error(header, frame)


def reply_header(header: list[Any]) -> ReplyHeader:
    """The elements of a REPLY or PROGRESS header from ``split``.

    Raises:
        BadRequest: too short, or an element of the wrong type.
    """
    if len(header) > 3:
        msg_id = header[2]
        payload = header[3]
        if type(msg_id) is str and type(payload) is bytes:
            return _tuple_new(ReplyHeader, (msg_id, payload))
    kind = Kind(header[1])
    if len(header) < 4:
        raise _short(kind, header)
    if type(header[2]) is not str:
        raise _type_error(header[2], "msg_id", "must be a string")
    raise _type_error(header[3], "data", "must be msgpack bin")


def error_header(header: list[Any]) -> ErrorHeader:
    """The elements of an ERROR header from ``split``.

    Raises:
        BadRequest: too short, or an element of the wrong type.
    """
    if len(header) > 5:
        msg_id, code, message, details = header[2:6]
        if (
            type(msg_id) is str
            and type(code) is str
            and type(message) is str
            and type(details) is dict
        ):
            return _tuple_new(ErrorHeader, (msg_id, code, message, details))
        for value, name in ((msg_id, "msg_id"), (code, "code"), (message, "message")):
            if type(value) is not str:
                raise _type_error(value, name, "must be a string")
        raise _type_error(details, "details", "must be a map")
    raise _short(Kind.ERROR, header)


def cancel_header(header: list[Any]) -> str:
    """The ``msg_id`` of a CANCEL header from ``split``.

    Raises:
        BadRequest: too short, or ``msg_id`` is not a string.
    """
    if len(header) < 3:
        raise _short(Kind.CANCEL, header)
    msg_id = header[2]
    if type(msg_id) is not str:
        raise _type_error(msg_id, "msg_id", "must be a string")
    return msg_id


def disconnect_header(header: list[Any]) -> str:
    """The ``reason`` of a DISCONNECT header from ``split``.

    Raises:
        BadRequest: too short, or ``reason`` is not a string.
    """
    if len(header) < 3:
        raise _short(Kind.DISCONNECT, header)
    reason = header[2]
    if type(reason) is not str:
        raise _type_error(reason, "reason", "must be a string")
    return reason


def ready_header(header: list[Any], frame: bytes) -> ReadyHeader:
    """The elements of a READY header from ``split`` (``frame`` is the header frame).

    Raises:
        BadRequest: header over ``MAX_HEADER_BYTES``, too short, or an element of the wrong type.
    """
    if len(frame) > MAX_HEADER_BYTES:
        raise _too_large(len(frame))
    if len(header) < 4:
        raise _short(Kind.READY, header)
    service = header[2]
    info = header[3]
    if type(service) is not str:
        raise _type_error(service, "service", "must be a string")
    if type(info) is not dict:
        raise _type_error(info, "info", "must be a map")
    return ReadyHeader(service, info)


def hello_header(header: list[Any], frame: bytes) -> HelloHeader:
    """The elements of a HELLO header from ``split`` (``frame`` is the header frame).

    Raises:
        BadRequest: header over ``MAX_HEADER_BYTES``, too short, or an element of the wrong type.
    """
    if len(frame) > MAX_HEADER_BYTES:
        raise _too_large(len(frame))
    if len(header) < 4:
        raise _short(Kind.HELLO, header)
    versions = header[2]
    if type(versions) is not list or not all(type(v) is int for v in versions):
        raise _bad("HELLO versions must be an array of integers")
    info = header[3]
    if type(info) is not dict:
        raise _type_error(info, "info", "must be a map")
    return HelloHeader(versions, info)


#: The kinds that may carry bulk frames (docs/PROTOCOL.md §3); after any other, bulk frames
#: make the message malformed.
BULK_KINDS: Final = frozenset({int(Kind.REQUEST), int(Kind.PROGRESS), int(Kind.REPLY)})


def bulk_not_allowed(kind: int, count: int) -> BadRequest:
    """The error of a message of ``kind`` (not in ``BULK_KINDS``) followed by ``count`` frames."""
    return _bad(f"{Kind(kind).name} carries no bulk frames, got {count}")


_ARITY = {
    Kind.REQUEST: 7,
    Kind.PROGRESS: 4,
    Kind.REPLY: 4,
    Kind.ERROR: 6,
    Kind.CANCEL: 3,
    Kind.READY: 4,
    Kind.HEARTBEAT: 2,
    Kind.DISCONNECT: 3,
    Kind.HELLO: 4,
}


def decode(frames: list[Any]) -> Message:
    """Decode a whole command-channel message (without routing-id frames) into a ``Message``.

    The checks are those of ``split`` and the decoder of the kind, the header size limit first.
    Convenient where speed does not matter (tools, tests); receivers use the fast decoders.

    Raises:
        BadRequest: the header is not a well-formed message of a known kind, or bulk frames
            follow a kind other than REQUEST, PROGRESS and REPLY (checked after the header).
        UnsupportedVersion: the header names a protocol version this side does not speak.
    """
    if not frames:
        raise _bad("empty message")
    frame = frames[0]
    if len(frame) > MAX_HEADER_BYTES:
        raise _too_large(len(frame))
    number, header = split(frame)
    kind = Kind(number)
    bulk = frames[1:] or None
    if bulk and number not in BULK_KINDS:
        _decode_fields(kind, header, frame)  # a malformed header is reported first
        raise bulk_not_allowed(number, len(bulk))
    return _decode_fields(kind, header, frame, bulk)


def _decode_fields(kind: Kind, header: list[Any], frame: bytes, bulk: Any = None) -> Message:
    if kind is Kind.REQUEST:
        request = request_header(header, frame)
        ttl = request.ttl_s
        return Message(
            kind,
            msg_id=request.msg_id,
            service=request.service,
            command=request.command,
            ttl_s=None if ttl is None else float(ttl),
            payload=request.payload,
            frames=bulk,
        )
    if kind is Kind.PROGRESS or kind is Kind.REPLY:
        reply = reply_header(header)
        return Message(kind, msg_id=reply.msg_id, payload=reply.payload, frames=bulk)
    if kind is Kind.ERROR:
        error = error_header(header)
        return Message(
            kind, msg_id=error.msg_id, code=error.code, text=error.message, details=error.details
        )
    if kind is Kind.CANCEL:
        return Message(kind, msg_id=cancel_header(header))
    if kind is Kind.READY:
        ready = ready_header(header, frame)
        return Message(kind, service=ready.service, info=ready.info)
    if kind is Kind.DISCONNECT:
        return Message(kind, text=disconnect_header(header))
    if kind is Kind.HELLO:
        hello = hello_header(header, frame)
        return Message(kind, versions=hello.versions, info=hello.info)
    return Message(kind)  # HEARTBEAT


# --- event channel ------------------------------------------------------------------------


_EVENT: Final = int(Kind.EVENT)


def encode_event(topic: str, src: str, epoch: int, seq: int, ts: float, data: Any) -> bytes:
    """Build an event frame: ``topic \\0 msgpack([1, 9, src, epoch, seq, ts, data])``."""
    return event_prefix(topic) + encode_event_body(src, epoch, seq, ts, data)


def event_prefix(topic: str) -> bytes:
    """The bytes an event frame of ``topic`` starts with (publishers cache it per topic)."""
    return topic.encode() + b"\0"


def encode_event_body(src: str, epoch: int, seq: int, ts: float, data: Any) -> bytes:
    """The msgpack part of an event frame, to append to ``event_prefix(topic)``."""
    # A plain int for the kind: msgpack packs an IntEnum member by a slower path.
    return _pack([VERSION, _EVENT, src, epoch, seq, ts, data])


def event_body_head(src: str, epoch: int) -> bytes:
    """The bytes every event body of publisher ``src`` in its incarnation ``epoch`` starts
    with: the array header and ``1, 9, src, epoch``, each in msgpack's shortest form."""
    return b"\x97" + _pack(VERSION) + _pack(_EVENT) + _pack(src) + _pack(epoch)


def encode_event_bodies(
    src: str,
    epoch: int,
    first_seq: int,
    ts: float,
    items: Iterable[Mapping[str, Any]],
    common: Mapping[str, Any],
) -> Iterator[bytes]:
    """The msgpack parts of consecutive events whose data maps share ``common`` entries.

    Event ``i`` has sequence ``first_seq + i`` and data ``{**common, **item}``; the bytes are
    exactly what ``encode_event_body`` would give for that map (entries of ``common`` first),
    but ``common``, ``src``, ``epoch`` and ``ts`` are encoded once for all of them. For actors
    that publish one event per record of a batch.

    Raises:
        ValueError: An item repeats a key of ``common`` (the map would hold the key twice).
    """
    head = event_body_head(src, epoch)
    packed_ts = _pack(ts)
    common_entries = _pack(dict(common))[_map_header_size(len(common)) :]
    seq = first_seq
    keys = common.keys()
    for item in items:
        if not keys.isdisjoint(item):
            raise ValueError(
                f"event item repeats common keys {sorted(common.keys() & item.keys())}"
            )
        entries = _pack(item)[_map_header_size(len(item)) :]
        yield (
            head
            + _pack(seq)
            + packed_ts
            + _map_header(len(common) + len(item))
            + common_entries
            + entries
        )
        seq += 1


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    return b"\xde" + n.to_bytes(2, "big") if n < 0x10000 else b"\xdf" + n.to_bytes(4, "big")


def _map_header_size(n: int) -> int:
    return 1 if n < 16 else 3 if n < 0x10000 else 5


def decode_event(frame: bytes) -> Event:
    """Decode an event frame.

    The checks, in order (docs/PROTOCOL.md §9): a NUL; the topic before the first NUL valid
    UTF-8; the rest exactly one msgpack value (no trailing bytes, str map keys, no ext value);
    an array of at least 7 elements, version 1, kind 9; ``src`` a str, ``epoch`` and ``seq``
    unsigned integers, ``ts`` an integer or a float. Elements after ``data`` are ignored.

    Raises:
        BadRequest: the frame is not a well-formed version-1 event.
    """
    sep = frame.find(b"\0")
    if sep < 0:
        raise _bad("event frame has no NUL after the topic")
    try:
        topic = frame[:sep].decode()
    except UnicodeDecodeError as exc:
        raise _bad(f"event topic is not valid UTF-8 ({exc.reason}, byte {exc.start})") from exc
    body = _unpack_header(frame[sep + 1 :], "event body")
    if (
        type(body) is not list
        or len(body) < 7
        or type(body[0]) is not int
        or body[0] != VERSION
        or type(body[1]) is not int
        or body[1] != Kind.EVENT
    ):
        raise _bad("event body must be [1, 9, src, epoch, seq, ts, data]")
    src, epoch, seq, ts = body[2:6]
    if not event_fields_ok(src, epoch, seq, ts):
        raise _bad(
            "event src must be a str, epoch and seq unsigned integers, ts a number; got "
            f"{type(src).__name__}, {type(epoch).__name__}, {type(seq).__name__}, "
            f"{type(ts).__name__}"
        )
    return Event(topic, src, epoch, seq, ts, body[6])


def event_fields_ok(src: Any, epoch: Any, seq: Any, ts: Any) -> bool:
    """Whether an event body's ``src``, ``epoch``, ``seq`` and ``ts`` have their types (§9)."""
    return (
        type(src) is str
        and type(epoch) is int
        and type(seq) is int
        and epoch >= 0
        and seq >= 0
        and (type(ts) is float or type(ts) is int)
    )


# --- names and ids ------------------------------------------------------------------------


def validate_service_name(name: str) -> str:
    """Return ``name`` if it is a valid service name, else raise BadRequest naming the rule."""
    if not isinstance(name, str) or not _SERVICE_NAME.match(name):
        raise BadRequest(
            f"invalid service name {name!r}: use 1-128 of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return name


def new_epoch() -> int:
    """A random epoch for a publisher's event sequences, chosen once per publisher start.

    53 bits, so it is exact in every language's number type (JavaScript doubles included).
    """
    return int.from_bytes(os.urandom(8), "big") >> 11


def new_id_prefix() -> str:
    """Return a random prefix that makes a peer's message ids unique on the bus."""
    return os.urandom(6).hex()
