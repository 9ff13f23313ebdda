"""The values the telemetry store and forwarder exchange: messages, acks, properties, registration.

Pure data and validation; no I/O. Names follow the Spotflow device SDK (reference/spotflow.md §3, §6).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from bus.errors import InvalidArguments

__all__ = [
    "DEFAULT_STREAM",
    "DEFAULT_STREAM_GROUP",
    "Ack",
    "AckRun",
    "Compression",
    "DesiredProperties",
    "MessageKind",
    "OutgoingMessage",
    "OverflowPolicy",
    "Registration",
    "ReportedUpdate",
    "StoredMessage",
    "Upload",
    "merge_patch",
    "validate_properties",
]

# Spotflow lets the platform pick the default group and stream; our upstream needs a name.
DEFAULT_STREAM_GROUP = "default"
DEFAULT_STREAM = "default"
_MAX_PROPERTY_DEPTH = 10  # reference/spotflow.md §9.3


class Compression(IntEnum):
    """How a stream's uploads are compressed (values as in ``spotflow_device.Compression``)."""

    UNCOMPRESSED = 0
    FASTEST = 1
    SMALLEST_SIZE = 2


class MessageKind(StrEnum):
    """What a queued row is: data, or one of the two completion markers of the seed."""

    MESSAGE = "message"
    COMPLETE_BATCH = "complete_batch"  # enqueue_batch_completion(batch_id)
    COMPLETE_MESSAGE = "complete_message"  # enqueue_message_completion(batch_id, message_id)


class OverflowPolicy(StrEnum):
    """What the store does when an append would exceed its byte quota."""

    REJECT_NEW = "reject_new"  # keep everything stored, refuse the new messages
    EVICT_FORWARDED = "evict_forwarded"  # drop the oldest already-forwarded rows, then refuse


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingMessage:
    """One message to append; ``OutgoingMessage.create`` validates and fills the defaults."""

    stream_group: str
    stream: str
    payload: bytes
    message_id: str | None = None
    batch_id: str | None = None
    batch_slice_id: str | None = None
    chunk_id: str | None = None
    kind: MessageKind = MessageKind.MESSAGE
    compression: Compression = Compression.UNCOMPRESSED
    timestamp: float = field(default_factory=time.time)

    @classmethod
    def create(
        cls,
        payload: str | bytes,
        *,
        stream_group: str | None = None,
        stream: str | None = None,
        message_id: str | None = None,
        batch_id: str | None = None,
        batch_slice_id: str | None = None,
        chunk_id: str | None = None,
        kind: MessageKind = MessageKind.MESSAGE,
        compression: Compression = Compression.UNCOMPRESSED,
        timestamp: float | None = None,
    ) -> OutgoingMessage:
        """Build a message the way ``StreamSender.enqueue_message`` takes it (str payloads are UTF-8).

        Raises:
            InvalidArguments: A completion marker lacks the ids it completes, or an id is not a
                non-empty string.
        """
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InvalidArguments("payload must be str or bytes", details={"argument": "payload"})
        ids = {
            "message_id": message_id,
            "batch_id": batch_id,
            "batch_slice_id": batch_slice_id,
            "chunk_id": chunk_id,
        }
        for name, value in ids.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidArguments(
                    f"{name} must be a non-empty string or None", details={"argument": name}
                )
        if kind is not MessageKind.MESSAGE and batch_id is None:
            raise InvalidArguments(f"{kind} needs a batch_id", details={"argument": "batch_id"})
        if kind is MessageKind.COMPLETE_MESSAGE and message_id is None:
            raise InvalidArguments(
                "complete_message needs a message_id", details={"argument": "message_id"}
            )
        return cls(
            stream_group=stream_group or DEFAULT_STREAM_GROUP,
            stream=stream or DEFAULT_STREAM,
            payload=bytes(payload),
            message_id=message_id,
            batch_id=batch_id,
            batch_slice_id=batch_slice_id,
            chunk_id=chunk_id,
            kind=MessageKind(kind),
            compression=Compression(compression),
            timestamp=time.time() if timestamp is None else timestamp,
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """The store's answer for one appended message, given only after the transaction committed.

    Attributes:
        seq: The device-wide sequence number (send order) of the stored row.
        stream_seq: Its sequence number within its (stream group, stream).
        duplicate: True when an identical (stream, ids) message was already stored; ``seq`` and
            ``stream_seq`` then name the row stored first.
    """

    seq: int
    stream_seq: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class AckRun:
    """The acks of ``count`` messages stored one after another in one stream, none a duplicate:
    message ``i`` got ``seq = first_seq + i`` and ``stream_seq = first_stream_seq + i``.

    What ``TelemetryStore.append_payloads`` returns: a batch of readings needs no object per ack.
    """

    first_seq: int
    first_stream_seq: int
    count: int

    def acks(self) -> list[Ack]:
        """One ``Ack`` per message, in order."""
        return [Ack(self.first_seq + i, self.first_stream_seq + i) for i in range(self.count)]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMessage:
    """A message as the store holds it (history queries, uploads)."""

    seq: int
    stream_group: str
    stream: str
    stream_seq: int
    message_id: str | None
    batch_id: str | None
    batch_slice_id: str | None
    chunk_id: str | None
    kind: MessageKind
    compression: Compression
    timestamp: float
    payload: bytes
    state: str  # "pending", "forwarded" or "rejected"


@dataclass(frozen=True, slots=True)
class Upload:
    """A group of pending messages of one stream, claimed under an idempotent upload id."""

    upload_id: str
    stream_group: str
    stream: str
    compression: Compression
    messages: tuple[StoredMessage, ...]


@dataclass(frozen=True, slots=True)
class DesiredProperties:
    """Desired properties of one version (``spotflow_device.DesiredProperties``)."""

    version: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReportedUpdate:
    """One persisted reported-properties patch waiting to be forwarded."""

    update_id: int
    patch: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """The device's credentials at one upstream, kept in the store so start works offline."""

    instance_url: str
    device_id: str
    workspace_id: str
    registration_token: str
    expires_at: float
    provisioning_token: str

    def valid_at(self, now: float) -> bool:
        """Whether the registration token is still usable at ``now`` (epoch seconds)."""
        return now < self.expires_at


def validate_properties(
    properties: Mapping[str, Any], argument: str = "properties"
) -> dict[str, Any]:
    """Check a properties document against the twin rules (reference/spotflow.md §9.3).

    Keys are strings without ``.`` or ``$``; values are JSON types; ``None`` means remove; nesting
    is at most 10 levels deep.

    Raises:
        InvalidArguments: The document breaks one of the rules; the message names the key.
    """
    if not isinstance(properties, Mapping):
        raise InvalidArguments(f"{argument} must be a dict", details={"argument": argument})
    _check_level(properties, argument, depth=1)
    return dict(properties)


def _check_level(value: Any, path: str, depth: int) -> None:
    if depth > _MAX_PROPERTY_DEPTH:
        raise InvalidArguments(
            f"{path}: nested deeper than {_MAX_PROPERTY_DEPTH}", details={"argument": path}
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key or "." in key or "$" in key:
                raise InvalidArguments(
                    f"{path}: bad key {key!r} (no '.' or '$')", details={"argument": path}
                )
            _check_level(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_level(item, f"{path}[{index}]", depth + 1)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise InvalidArguments(
            f"{path}: {type(value).__name__} is not a JSON value", details={"argument": path}
        )


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a JSON merge patch (RFC 7396): ``None`` removes a key, dicts merge recursively."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = value
    return result
