"""``TelemetryActor``: the store-and-forward uplink on the bus; ``spotflow_device``'s operations are
its commands.

Options (the ``[actor.options]`` table, read into ``TelemetryConfig``)::

    [actor.options]
    db = "var/telemetry.db"                 # the SQLite store (must end in .db); parent dirs are created
    instance_url = "http://127.0.0.1:8080"  # the ingest service (docs/INGEST_PROTOCOL.md)
    provisioning_token = "factory-token"    # secret: never logged, never in describe/stats
    device_id = "line3-press"               # optional: the upstream may choose one
    quota_bytes = 104857600                 # optional bound on stored message bytes
    overflow = "reject_new"                 # or "evict_forwarded"
    # any other ForwarderConfig field: max_batch_messages, max_batch_bytes, linger_s,
    # request_timeout_s, backoff_initial_s, backoff_max_s, retry_after_max_s, desired_poll_s,
    # token_refresh_margin_s
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from actors.telemetry.config import TelemetryConfig
from actors.telemetry.driver import TelemetryDriver
from actors.telemetry.forwarder import Forwarder
from actors.telemetry.model import (
    DEFAULT_STREAM,
    DEFAULT_STREAM_GROUP,
    Ack,
    AckRun,
    Compression,
    DesiredProperties,
    MessageKind,
    OutgoingMessage,
    StoredMessage,
)
from actors.telemetry.store import TelemetryStore
from actors.telemetry.writer import StoreWriter
from bus.actor import Actor, CommandContext, command
from bus.errors import InvalidArguments, Unavailable
from bus.options import from_table

__all__ = ["ACTOR", "TelemetryActor"]

T = TypeVar("T")
A = TypeVar("A", list[Ack], AckRun)

_COMMIT_RING = 32  # commit events kept per stream for replay: each holds a whole batch
_DROP_POLL_S = 0.5  # how often the store's drop counters are compared for <service>.drop events
_WAIT_STEP_S = 0.5  # a waiting command reports progress (and notices cancellation) this often
_MESSAGE_KEYS = {
    "payload",
    "stream_group",
    "stream",
    "compression",
    "batch_id",
    "message_id",
    "batch_slice_id",
    "chunk_id",
}


def _ack(ack: Ack) -> dict[str, Any]:
    return {"seq": ack.seq, "stream_seq": ack.stream_seq, "duplicate": ack.duplicate}


def _ack_columns(acks: Sequence[Ack] | AckRun) -> dict[str, list[Any]]:
    """The ``enqueue_messages`` answer: the acks as three columns.

    An ``AckRun`` becomes columns without building an object per ack.
    """
    if isinstance(acks, AckRun):
        first, first_stream, n = acks.first_seq, acks.first_stream_seq, acks.count
        return {
            "seq": list(range(first, first + n)),
            "stream_seq": list(range(first_stream, first_stream + n)),
            "duplicate": [False] * n,
        }
    return {
        "seq": [a.seq for a in acks],
        "stream_seq": [a.stream_seq for a in acks],
        "duplicate": [a.duplicate for a in acks],
    }


def _event_fields(
    stream_group: str, stream: str, kind: MessageKind, timestamp: float, **ids: str | None
) -> dict[str, Any]:
    """A stored message's event without its numbers and payload (what a batch's events share)."""
    return {
        "stream_group": stream_group,
        "stream": stream,
        "kind": str(kind),
        "batch_id": ids.get("batch_id"),
        "message_id": ids.get("message_id"),
        "batch_slice_id": ids.get("batch_slice_id"),
        "chunk_id": ids.get("chunk_id"),
        "timestamp": timestamp,
    }


def _message_event(
    message: OutgoingMessage | StoredMessage, seq: int, stream_seq: int
) -> dict[str, Any]:
    ids = {
        "batch_id": message.batch_id,
        "message_id": message.message_id,
        "batch_slice_id": message.batch_slice_id,
        "chunk_id": message.chunk_id,
    }
    fields = _event_fields(
        message.stream_group, message.stream, message.kind, message.timestamp, **ids
    )
    return {**fields, "seq": seq, "stream_seq": stream_seq, "payload": message.payload}


#: The per-message event keys a commit event carries as columns (message ``i`` at position ``i``).
COMMIT_COLUMNS = (
    "seq",
    "stream_seq",
    "kind",
    "batch_id",
    "message_id",
    "batch_slice_id",
    "chunk_id",
    "timestamp",
    "payload",
)


def _run_commit_event(
    stream_group: str, stream: str, run: AckRun, payloads: list[bytes], timestamp: float
) -> dict[str, Any]:
    """The commit event of ``append_payloads``: plain readings, consecutive numbers, no ids."""
    n = run.count
    nothing: list[None] = [None] * n
    return {
        "stream_group": stream_group,
        "stream": stream,
        "seq": list(range(run.first_seq, run.first_seq + n)),
        "stream_seq": list(range(run.first_stream_seq, run.first_stream_seq + n)),
        "kind": [str(MessageKind.MESSAGE)] * n,
        "batch_id": nothing,
        "message_id": nothing,
        "batch_slice_id": nothing,
        "chunk_id": nothing,
        "timestamp": [timestamp] * n,
        "payload": payloads,
    }


def _commit_events(
    messages: Sequence[OutgoingMessage], acks: Sequence[Ack]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The commit events of one write, by stream: its newly stored messages as columns."""
    events: dict[tuple[str, str], dict[str, Any]] = {}
    for message, ack in zip(messages, acks, strict=True):
        if ack.duplicate:
            continue
        key = (message.stream_group, message.stream)
        event = events.get(key)
        if event is None:
            event = events[key] = {"stream_group": key[0], "stream": key[1]}
            event.update((column, []) for column in COMMIT_COLUMNS)
        row = _message_event(message, ack.seq, ack.stream_seq)
        for column in COMMIT_COLUMNS:
            event[column].append(row[column])
    return events


def _desired(desired: DesiredProperties) -> dict[str, Any]:
    return {"version": desired.version, "values": desired.values}


class TelemetryActor(Actor):
    """Store-and-forward telemetry with the Spotflow device SDK's semantics (``spotflow_device``).

    Every message is durable in the local SQLite store before its command answers; a background
    forwarder sends stored messages to the plant's ingest service (docs/INGEST_PROTOCOL.md) in
    idempotent uploads and marks only what the server acknowledged. The actor starts without
    network when a registration is stored; on a first start without network it still starts,
    stores everything, and provisions in the background once the upstream answers.

    Concurrency: writes (``enqueue_*``, ``update_reported_properties``) and queries never wait
    behind other commands, and writes are stored in the order the actor received them. The two
    waiting commands, ``send_message`` and ``wait_enqueued_messages_sent``, run one at a time;
    they report progress ``{"pending", "up_to_seq", "online"}`` and end when cancelled.

    Events: ``<service>.stream.<group>.<stream>`` for every newly stored message (``seq``,
    ``stream_seq`` gap-free per stream, ids, ``kind``, ``timestamp``, ``payload``);
    ``<service>.commit.<group>.<stream>`` once per write that stored messages on the stream: the
    same messages as columns (``stream_group``, ``stream``, and a list per key of the message
    event, ``COMMIT_COLUMNS``), for subscribers that want every reading at one event per batch;
    ``<service>.desired`` ``{"version", "values"}`` for each newer desired-properties version;
    ``<service>.drop`` ``{"reason", "count", "total"}`` whenever the store drops or refuses
    messages (quota refusals, evictions of forwarded rows, upstream rejections).
    """

    kind = "telemetry"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.config = from_table(TelemetryConfig, self.options, f"telemetry {name}", noun="option")
        self.driver: TelemetryDriver | None = None
        # One writer thread (started with the loop): appends are stored in the order their
        # commands arrived, and the events of stored messages are published in commit order.
        self._writer: StoreWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drops: dict[str, int] = {}
        self.limit_event_ring("commit.", _COMMIT_RING)

    # ------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        """Open the store, use the stored registration (or provision), start forwarding."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.driver = await asyncio.to_thread(self._open, loop)
        self._writer = StoreWriter(loop, f"telemetry-writer-{self.name}")
        self._drops = dict((await asyncio.to_thread(self.driver.store.stats))["drops"])
        task = loop.create_task(self._watch_drops(), name=f"telemetry {self.name} drops")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _open(self, loop: asyncio.AbstractEventLoop) -> TelemetryDriver:
        config = self.config
        Path(config.db).parent.mkdir(parents=True, exist_ok=True)

        def on_desired(desired: DesiredProperties) -> None:  # forwarder thread
            loop.call_soon_threadsafe(self.publish, "desired", _desired(desired))

        store = TelemetryStore.open(
            config.db, quota_bytes=config.quota_bytes, overflow=config.overflow
        )
        forwarder = Forwarder(store, config.forwarder, on_desired=on_desired)
        try:
            registration = forwarder.ensure_registered()
        except Unavailable as exc:
            # No stored registration and no upstream: take data now, provision when it answers.
            registration = None
            self.log.warning(
                "telemetry_unregistered_offline",
                error=str(exc),
                hint="provisioning in the background",
            )
        except BaseException:
            store.close()
            raise
        desired = store.desired_properties()
        if desired is not None:
            on_desired(desired)
        forwarder.start()
        self.log.info(
            "telemetry_started",
            db=config.db,
            upstream=config.forwarder.upstream_url,
            device_id=registration.device_id if registration else None,
            pending=store.pending_count(),
        )
        return TelemetryDriver(store, forwarder)

    async def on_stop(self) -> None:
        """Stop the watchers, finish the queued writes, stop forwarding, close the store."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
        if self.driver is not None:
            await asyncio.to_thread(self.driver.close)

    def describe_extra(self) -> dict[str, Any]:
        """Where the store and the upstream are (never the tokens)."""
        driver = self.driver
        return {
            "store": {
                "db": self.config.db,
                "quota_bytes": self.config.quota_bytes,
                "overflow": str(self.config.overflow),
            },
            "upstream": self.config.forwarder.upstream_url,
            "device_id": driver.device_id if driver else "",
        }

    @property
    def _driver(self) -> TelemetryDriver:
        if self.driver is None:
            raise Unavailable(f"{self.name}: the store is not open")
        return self.driver

    async def _watch_drops(self) -> None:
        while True:
            await asyncio.sleep(_DROP_POLL_S)
            try:
                drops = (await asyncio.to_thread(self._driver.store.stats))["drops"]
            except Exception as exc:
                self.log.warning("telemetry_drop_watch_failed", error=str(exc))
                continue
            for reason, total in sorted(drops.items()):
                count = total - self._drops.get(reason, 0)
                if count > 0:
                    self.publish("drop", {"reason": reason, "count": count, "total": total})
            self._drops = dict(drops)

    # ------------------------------------------------------------ helpers

    def _write(
        self, fn: Callable[[], T], then: Callable[[T], None] | None = None
    ) -> asyncio.Future[T]:
        """Run a store write on the writer thread (``StoreWriter.submit``). Call it before the
        command's first await, so writes are queued in the order the commands arrived."""
        if self._writer is None:
            raise Unavailable(f"{self.name}: the store is not open")
        return self._writer.submit(fn, then)

    def _store_messages(self, messages: Sequence[OutgoingMessage]) -> asyncio.Future[list[Ack]]:
        return self._store_then_publish(
            lambda driver: driver.enqueue_messages(messages),
            lambda acks: self._publish_stored(messages, acks),
        )

    def _store_payloads(
        self, stream_group: str, stream: str, payloads: Sequence[bytes], compression: Compression
    ) -> asyncio.Future[AckRun]:
        timestamp = time.time()  # one enqueue time for the batch, in the rows and in their events

        def append(driver: TelemetryDriver) -> AckRun:
            return driver.enqueue_payloads(
                stream_group, stream, payloads, compression=compression, timestamp=timestamp
            )

        def publish(run: AckRun) -> None:
            common = _event_fields(stream_group, stream, MessageKind.MESSAGE, timestamp)
            seq, stream_seq = run.first_seq, run.first_stream_seq
            items = (
                {"seq": seq + i, "stream_seq": stream_seq + i, "payload": payload}
                for i, payload in enumerate(payloads)
            )
            self.publish_many(
                f"stream.{stream_group}.{stream}", items, count=run.count, common=common
            )
            if run.count:
                self.publish(
                    f"commit.{stream_group}.{stream}",
                    _run_commit_event(stream_group, stream, run, list(payloads), timestamp),
                )

        return self._store_then_publish(append, publish)

    def _store_then_publish(
        self, append: Callable[[TelemetryDriver], A], publish: Callable[[A], None]
    ) -> asyncio.Future[A]:
        """Append on the writer thread; once committed, publish the stored messages' events from
        the loop (then the command answers)."""
        driver = self._driver
        return self._write(lambda: append(driver), publish)  # append returns after COMMIT

    def _publish_stored(self, messages: Sequence[OutgoingMessage], acks: Sequence[Ack]) -> None:
        for message, ack in zip(messages, acks, strict=True):
            if not ack.duplicate:
                self.publish(
                    f"stream.{message.stream_group}.{message.stream}",
                    _message_event(message, ack.seq, ack.stream_seq),
                )
        for (stream_group, stream), event in _commit_events(messages, acks).items():
            self.publish(f"commit.{stream_group}.{stream}", event)

    async def _wait_sent(self, up_to_seq: int | None, ctx: CommandContext) -> None:
        driver = self._driver
        target = (
            up_to_seq if up_to_seq is not None else await asyncio.to_thread(driver.store.last_seq)
        )

        def step() -> int:
            started = time.monotonic()
            if driver.forwarder.wait_sent(target, _WAIT_STEP_S):
                return 0
            elapsed = time.monotonic() - started
            if elapsed < _WAIT_STEP_S:  # the forwarder stopped: do not spin
                time.sleep(_WAIT_STEP_S - elapsed)
            return driver.store.pending_count(target)

        pending = await asyncio.to_thread(driver.store.pending_count, target)
        ctx.progress({"pending": pending, "up_to_seq": target, "online": driver.forwarder.online})
        while pending:
            pending = await asyncio.to_thread(step)
            ctx.progress(
                {"pending": pending, "up_to_seq": target, "online": driver.forwarder.online}
            )

    # ------------------------------------------------------------ DeviceClient

    @command(concurrent=True)
    def device_id(self) -> str:
        """``DeviceClient.device_id``: the id the upstream registered ("" before the first provisioning)."""
        return self._driver.device_id

    @command(concurrent=True)
    def workspace_id(self) -> str:
        """``DeviceClient.workspace_id``: the workspace the device belongs to ("" before provisioning)."""
        return self._driver.workspace_id

    @command(concurrent=True)
    def create_stream_sender(
        self,
        stream_group: str | None = None,
        stream: str | None = None,
        compression: Compression = Compression.UNCOMPRESSED,
    ) -> dict[str, Any]:
        """``DeviceClient.create_stream_sender``: check and complete a stream's names (no state on the actor).

        Returns ``{"stream_group", "stream", "compression"}`` with the defaults filled in; the
        sender passes them with every message.
        """
        for argument, value in (("stream_group", stream_group), ("stream", stream)):
            if value is not None and not value:
                raise InvalidArguments(
                    f"{argument} must be a non-empty string or nil", details={"argument": argument}
                )
        return {
            "stream_group": stream_group or DEFAULT_STREAM_GROUP,
            "stream": stream or DEFAULT_STREAM,
            "compression": int(compression),
        }

    @command(concurrent=True)
    async def pending_messages_count(self) -> int:
        """``DeviceClient.pending_messages_count``: messages stored but not yet acknowledged upstream."""
        return await asyncio.to_thread(self._driver.pending_messages_count)

    @command
    async def wait_enqueued_messages_sent(self, ctx: CommandContext) -> None:
        """``DeviceClient.wait_enqueued_messages_sent``: wait until every message stored so far is forwarded.

        Progress ``{"pending", "up_to_seq", "online"}`` at once and then every half second; runs
        until done, cancelled or past its deadline (the messages stay queued either way).
        """
        await self._wait_sent(None, ctx)

    @command(concurrent=True)
    async def get_desired_properties(self) -> dict[str, Any]:
        """``DeviceClient.get_desired_properties``: the latest ``{"version", "values"}``.

        Version 0 before any.
        """
        return _desired(await asyncio.to_thread(self._driver.get_desired_properties))

    @command(concurrent=True)
    async def get_desired_properties_if_newer(
        self, version: int | None = None
    ) -> dict[str, Any] | None:
        """``DeviceClient.get_desired_properties_if_newer``: the latest version if newer, else nil.

        Newer than ``version``; with ``version`` nil, the latest in any case (version 0 and no
        values before the first, never nil).
        """
        desired = await asyncio.to_thread(self._driver.get_desired_properties_if_newer, version)
        return None if desired is None else _desired(desired)

    @command(privileged=True, concurrent=True)
    async def update_reported_properties(self, properties: dict[str, Any]) -> None:
        """``DeviceClient.update_reported_properties``: persist a reported-properties patch.

        ``null`` removes a key. Returns once the patch is durable; the forwarder sends it when it
        can.
        """
        driver = self._driver
        await self._write(lambda: driver.update_reported_properties(properties))

    @command(concurrent=True)
    async def any_pending_reported_properties_updates(self) -> bool:
        """``DeviceClient.any_pending_reported_properties_updates``: whether a patch waits.

        True while a reported-properties patch is stored but not yet sent.
        """
        return await asyncio.to_thread(self._driver.any_pending_reported_properties_updates)

    # ------------------------------------------------------------ StreamSender

    @command(privileged=True)
    async def send_message(
        self,
        payload: bytes | str,
        ctx: CommandContext,
        stream_group: str | None = None,
        stream: str | None = None,
        compression: Compression = Compression.UNCOMPRESSED,
        batch_id: str | None = None,
        message_id: str | None = None,
        batch_slice_id: str | None = None,
        chunk_id: str | None = None,
    ) -> dict[str, Any]:
        """``StreamSender.send_message``: store one message, then wait until it is forwarded.

        It returns once this message and every one stored before it are forwarded, with
        ``{"seq", "stream_seq", "duplicate"}``. Progress ``{"pending", "up_to_seq", "online"}``
        while waiting; on cancel or deadline the message stays stored and is forwarded later.
        """
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
        (ack,) = await self._store_messages([message])
        await self._wait_sent(ack.seq, ctx)
        return _ack(ack)

    @command(privileged=True, concurrent=True)
    async def enqueue_message(
        self,
        payload: bytes | str,
        stream_group: str | None = None,
        stream: str | None = None,
        compression: Compression = Compression.UNCOMPRESSED,
        batch_id: str | None = None,
        message_id: str | None = None,
        batch_slice_id: str | None = None,
        chunk_id: str | None = None,
    ) -> dict[str, Any]:
        """``StreamSender.enqueue_message``: store one message for forwarding; answers after the commit.

        Returns ``{"seq", "stream_seq", "duplicate"}`` (a repeated message id of the stream is
        stored once: ``duplicate`` true and the first copy's numbers). Fails with
        ``storage_error`` (``details.reason``) when the store's quota refuses it.
        """
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
        (ack,) = await self._store_messages([message])
        return _ack(ack)

    @command(privileged=True, concurrent=True)
    async def enqueue_messages(
        self,
        messages: list[Any],
        stream_group: str | None = None,
        stream: str | None = None,
        compression: Compression = Compression.UNCOMPRESSED,
    ) -> dict[str, list[Any]]:
        """Store a batch of messages in one transaction; answers with their acks after the commit.

        Each item is a payload (bytes or str) or a map with ``payload`` and any of
        ``stream_group``, ``stream``, ``compression``, ``batch_id``, ``message_id``,
        ``batch_slice_id``, ``chunk_id`` (the command's ``stream_group``/``stream``/``compression``
        are the defaults). All or nothing: a quota refusal stores none of them. Producers may
        pipeline several batches; they are stored in the order they arrive.

        Returns the acks as columns, message ``i`` in position ``i`` of each:
        ``{"seq": [int], "stream_seq": [int], "duplicate": [bool]}`` (a duplicate's numbers are
        those of the copy stored first). Columns, not a map per message: a batch of a thousand
        readings answers in a few kilobytes that decode without building a thousand maps.
        """
        if not messages:
            return _ack_columns([])
        types = set(map(type, messages))
        if types <= {bytes, str}:
            # Plain readings of the command's stream, the bulk case: no per-message objects
            # (str as UTF-8, as OutgoingMessage.create stores it).
            payloads = (
                messages
                if str not in types
                else [item if type(item) is bytes else item.encode() for item in messages]
            )
            names = self.create_stream_sender(stream_group, stream, compression)
            return _ack_columns(
                await self._store_payloads(
                    names["stream_group"], names["stream"], payloads, Compression(compression)
                )
            )
        defaults = {"stream_group": stream_group, "stream": stream, "compression": compression}
        outgoing = [_outgoing(item, i, defaults) for i, item in enumerate(messages)]
        return _ack_columns(await self._store_messages(outgoing))

    @command(privileged=True, concurrent=True)
    async def enqueue_batch_completion(
        self, batch_id: str, stream_group: str | None = None, stream: str | None = None
    ) -> dict[str, Any]:
        """``StreamSender.enqueue_batch_completion``: queue the marker that completes a batch.

        The marker completes batch ``batch_id`` of the stream.
        """
        message = OutgoingMessage.create(
            b"",
            stream_group=stream_group,
            stream=stream,
            batch_id=batch_id,
            kind=MessageKind.COMPLETE_BATCH,
        )
        (ack,) = await self._store_messages([message])
        return _ack(ack)

    @command(privileged=True, concurrent=True)
    async def enqueue_message_completion(
        self,
        batch_id: str,
        message_id: str,
        stream_group: str | None = None,
        stream: str | None = None,
    ) -> dict[str, Any]:
        """``StreamSender.enqueue_message_completion``: queue the marker of a chunked message.

        The upstream assembles the chunks of message ``message_id`` when it arrives.
        """
        message = OutgoingMessage.create(
            b"",
            stream_group=stream_group,
            stream=stream,
            batch_id=batch_id,
            message_id=message_id,
            kind=MessageKind.COMPLETE_MESSAGE,
        )
        (ack,) = await self._store_messages([message])
        return _ack(ack)

    # ------------------------------------------------------------ linebus extensions

    @command(concurrent=True)
    async def history(
        self,
        stream_group: str | None = None,
        stream: str | None = None,
        from_seq: int | None = None,
        to_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Messages of one stream still in the store, lowest ``stream_seq`` first (for backfill after a gap).

        Bounds are inclusive: ``from_seq``/``to_seq`` on ``stream_seq``, ``since``/``until`` on the
        enqueue time (epoch seconds); at most ``limit`` (1-10000) rows. Each row is the live
        event's data plus ``state`` (``pending``, ``forwarded``, ``rejected``). Forwarded rows
        stay until the quota needs their room.
        """
        if not 1 <= limit <= 10000:
            raise InvalidArguments("limit must be 1-10000", details={"argument": "limit"})
        rows = await asyncio.to_thread(
            self._driver.history,
            stream_group or DEFAULT_STREAM_GROUP,
            stream or DEFAULT_STREAM,
            from_seq=from_seq,
            to_seq=to_seq,
            since=since,
            until=until,
            limit=limit,
        )
        return [
            {**_message_event(row, row.seq, row.stream_seq), "state": row.state} for row in rows
        ]

    @command(concurrent=True)
    async def stats(self) -> dict[str, Any]:
        """Store and forwarder counters.

        Pending, forwarded and rejected messages, bytes and quota, drops by reason, uploads,
        failures, and whether the upstream is online.
        """
        driver = self._driver
        stats = await asyncio.to_thread(driver.stats)
        return {
            **stats,
            "device_id": driver.device_id,
            "upstream": self.config.forwarder.upstream_url,
            "events_dropped": self.events_dropped,
        }


def _outgoing(item: Any, index: int, defaults: dict[str, Any]) -> OutgoingMessage:
    where = f"messages[{index}]"
    if isinstance(item, bytes | str):
        fields: dict[str, Any] = {"payload": item}
    elif isinstance(item, dict):
        unknown = sorted(set(item) - _MESSAGE_KEYS)
        if unknown or "payload" not in item:
            problem = f"unknown key {unknown[0]!r}" if unknown else "no 'payload'"
            raise InvalidArguments(f"{where}: {problem}", details={"argument": where})
        fields = dict(item)
    else:
        raise InvalidArguments(
            f"{where} must be bytes, str or a map with 'payload'", details={"argument": where}
        )
    for key, value in defaults.items():
        if fields.get(key) is None:
            fields[key] = value
    for key in ("stream_group", "stream"):
        if fields[key] is not None and (not isinstance(fields[key], str) or not fields[key]):
            raise InvalidArguments(
                f"{where}.{key} must be a non-empty string", details={"argument": where}
            )
    try:
        fields["compression"] = Compression(fields["compression"])
    except ValueError:
        raise InvalidArguments(
            f"{where}.compression must be 0, 1 or 2", details={"argument": where}
        ) from None
    payload = fields.pop("payload")
    try:
        return OutgoingMessage.create(payload, **fields)
    except InvalidArguments as exc:
        raise InvalidArguments(
            f"{where}: {exc.message}", details={**exc.details, "argument": where}
        ) from None


ACTOR = TelemetryActor
