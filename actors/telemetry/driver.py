"""``TelemetryDriver``: every ``spotflow_device`` operation as one blocking, thread-safe method.

| spotflow_device                                   | driver                                  |
|---------------------------------------------------|-----------------------------------------|
| ``DeviceClient.start(device_id, token, db, ...)`` | ``TelemetryDriver.start(config, ...)``   |
| ``device_id`` / ``workspace_id``                  | ``device_id`` / ``workspace_id``         |
| ``create_stream_sender(group, stream, compr.)``   | (facade only: the sender passes them on) |
| ``StreamSender.enqueue_message(...)``             | ``enqueue_message``                      |
| ``StreamSender.send_message(...)``                | ``send_message`` (enqueue, then wait)    |
| ``StreamSender.enqueue_batch_completion``         | ``enqueue_batch_completion``             |
| ``StreamSender.enqueue_message_completion``       | ``enqueue_message_completion``           |
| ``pending_messages_count``                        | ``pending_messages_count()``             |
| ``wait_enqueued_messages_sent()``                 | ``wait_enqueued_messages_sent(timeout)`` |
| ``get_desired_properties[_if_newer]``             | the same names                           |
| ``update_reported_properties(dict)``              | ``update_reported_properties``           |
| ``any_pending_reported_properties_updates``       | ``any_pending_reported_properties_updates()`` |

Every method blocks on the disk (and the waits on the network), so the bus actor calls them
with ``asyncio.to_thread``. Errors are ``bus.errors`` classes: ``InvalidArguments``,
``StorageError`` (``QuotaExceeded``), ``DeadlineExceeded``, ``Unavailable``, ``PermissionDenied``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import structlog

from actors.telemetry.config import TelemetryConfig
from actors.telemetry.forwarder import Forwarder
from actors.telemetry.model import (
    Ack,
    AckRun,
    Compression,
    DesiredProperties,
    MessageKind,
    OutgoingMessage,
    StoredMessage,
    validate_properties,
)
from actors.telemetry.store import TelemetryStore
from bus.errors import DeadlineExceeded, InvalidArguments

__all__ = ["TelemetryDriver"]

log = structlog.get_logger()


class TelemetryDriver:
    """A started device: its store and its forwarder. Build it with ``TelemetryDriver.start``."""

    def __init__(self, store: TelemetryStore, forwarder: Forwarder) -> None:
        self.store = store
        self.forwarder = forwarder

    @classmethod
    def start(
        cls,
        config: TelemetryConfig,
        *,
        desired_properties_updated_callback: Callable[[DesiredProperties], None] | None = None,
    ) -> TelemetryDriver:
        """Open the store, make sure the device is registered, and start forwarding.

        With a valid stored registration this returns at once, even with no network; otherwise
        it provisions (blocking, up to the request timeout). The callback is called with the
        stored desired properties right away (if any), then with each newer version.

        Raises:
            InvalidArguments: ``config.db`` does not end in ``.db``.
            StorageError: The store cannot be opened (corrupt, newer schema, in use).
            PermissionDenied: The provisioning token was refused.
            Unavailable: Provisioning was needed and the upstream is unreachable.
        """
        if not config.db.endswith(".db"):
            raise InvalidArguments(
                f"db {config.db!r} must end with '.db'", details={"argument": "db"}
            )
        store = TelemetryStore.open(
            config.db, quota_bytes=config.quota_bytes, overflow=config.overflow
        )
        forwarder = Forwarder(
            store, config.forwarder, on_desired=desired_properties_updated_callback
        )
        try:
            registration = forwarder.ensure_registered()
        except BaseException:
            store.close()
            raise
        desired = store.desired_properties()
        if desired is not None and desired_properties_updated_callback is not None:
            desired_properties_updated_callback(desired)
        forwarder.start()
        log.info(
            "telemetry_started",
            device_id=registration.device_id,
            db=config.db,
            pending=store.pending_count(),
        )
        return cls(store, forwarder)

    def close(self, timeout: float = 10.0) -> None:
        """Stop forwarding and close the store; pending messages stay for the next start."""
        self.forwarder.stop(timeout)
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def device_id(self) -> str:
        """The device id the upstream registered (may differ from the requested one)."""
        registration = self.forwarder.registration
        return registration.device_id if registration else ""

    @property
    def workspace_id(self) -> str:
        """The workspace the device belongs to."""
        registration = self.forwarder.registration
        return registration.workspace_id if registration else ""

    # -- messages -----------------------------------------------------------------------------

    def enqueue_messages(self, messages: Sequence[OutgoingMessage]) -> list[Ack]:
        """Store several messages in one transaction (acked after commit) and wake the forwarder."""
        acks = self.store.append_many(messages)
        self.forwarder.notify()
        return acks

    def enqueue_payloads(
        self,
        stream_group: str,
        stream: str,
        payloads: Sequence[bytes],
        *,
        compression: Compression = Compression.UNCOMPRESSED,
        timestamp: float | None = None,
    ) -> AckRun:
        """Store plain readings of one stream in one transaction and wake the forwarder.

        The acks come after the commit.
        """
        acks = self.store.append_payloads(
            stream_group, stream, payloads, compression=compression, timestamp=timestamp
        )
        self.forwarder.notify()
        return acks

    def enqueue_message(
        self,
        payload: str | bytes,
        *,
        stream_group: str | None = None,
        stream: str | None = None,
        compression: Compression = Compression.UNCOMPRESSED,
        batch_id: str | None = None,
        message_id: str | None = None,
        batch_slice_id: str | None = None,
        chunk_id: str | None = None,
    ) -> Ack:
        """Store one message for sending and return once it is durable (``StreamSender.enqueue_message``)."""
        message = OutgoingMessage.create(
            payload,
            stream_group=stream_group,
            stream=stream,
            compression=compression,
            batch_id=batch_id,
            message_id=message_id,
            batch_slice_id=batch_slice_id,
            chunk_id=chunk_id,
        )
        return self.enqueue_messages([message])[0]

    def send_message(
        self, payload: str | bytes, *, timeout: float | None = None, **ids: Any
    ) -> Ack:
        """Enqueue one message, then wait until it and everything before it was forwarded.

        Raises:
            DeadlineExceeded: Not forwarded within ``timeout``; the message stays queued.
        """
        ack = self.enqueue_message(payload, **ids)
        self._wait(ack.seq, timeout)
        return ack

    def enqueue_batch_completion(
        self, batch_id: str, *, stream_group: str | None = None, stream: str | None = None
    ) -> Ack:
        """Queue the marker that completes batch ``batch_id`` of the stream."""
        message = OutgoingMessage.create(
            b"",
            stream_group=stream_group,
            stream=stream,
            batch_id=batch_id,
            kind=MessageKind.COMPLETE_BATCH,
        )
        return self.enqueue_messages([message])[0]

    def enqueue_message_completion(
        self,
        batch_id: str,
        message_id: str,
        *,
        stream_group: str | None = None,
        stream: str | None = None,
    ) -> Ack:
        """Queue the marker that completes the chunked message ``message_id`` of batch ``batch_id``."""
        message = OutgoingMessage.create(
            b"",
            stream_group=stream_group,
            stream=stream,
            batch_id=batch_id,
            message_id=message_id,
            kind=MessageKind.COMPLETE_MESSAGE,
        )
        return self.enqueue_messages([message])[0]

    def pending_messages_count(self) -> int:
        """Messages stored but not yet acknowledged by the upstream."""
        return self.store.pending_count()

    def wait_enqueued_messages_sent(self, timeout: float | None = None) -> None:
        """Wait until every message enqueued before this call was forwarded.

        Raises:
            DeadlineExceeded: They were not all forwarded within ``timeout``.
        """
        self._wait(None, timeout)

    def _wait(self, up_to_seq: int | None, timeout: float | None) -> None:
        if not self.forwarder.wait_sent(up_to_seq, timeout):
            pending = self.store.pending_count(up_to_seq)
            raise DeadlineExceeded(
                f"{pending} message(s) not forwarded within {timeout} s",
                details={"pending": pending},
            )

    def history(self, stream_group: str, stream: str, **query: Any) -> list[StoredMessage]:
        """Stored messages of one stream (see ``TelemetryStore.history`` for the query keys)."""
        return self.store.history(stream_group, stream, **query)

    def stats(self) -> dict[str, Any]:
        """Store and forwarder counters in one map."""
        return {**self.store.stats(), "forwarder": self.forwarder.stats()}

    # -- twin ---------------------------------------------------------------------------------

    def get_desired_properties(self) -> DesiredProperties:
        """The latest desired properties (version 0 and no values before the first are received)."""
        return self.store.desired_properties() or DesiredProperties(0, {})

    def get_desired_properties_if_newer(
        self, version: int | None = None
    ) -> DesiredProperties | None:
        """The latest desired properties if newer than ``version``, else None; with ``version``
        None, the current ones in any case (version 0 and no values before the first, as
        ``get_desired_properties``: the seed returns the current properties then, never None)."""
        desired = self.get_desired_properties()
        if version is not None and desired.version <= version:
            return None
        return desired

    def update_reported_properties(self, properties: Mapping[str, Any]) -> None:
        """Persist a reported-properties patch; the forwarder sends it when it can."""
        self.store.add_reported_update(validate_properties(properties))
        self.forwarder.notify()

    def any_pending_reported_properties_updates(self) -> bool:
        """Whether a reported-properties patch still waits to be acknowledged upstream."""
        return self.store.any_pending_reported_updates()
