"""``TelemetryStore``: the device's durable outbox, twin cache and credentials in one SQLite file.

Threading: the store owns **one** ``sqlite3`` connection (WAL mode, ``synchronous=FULL``) and a
lock; every public method is synchronous, thread-safe and holds the lock for one short
transaction. The forwarder thread calls it directly; asyncio code (the actor) calls it through
``asyncio.to_thread`` so the event loop never waits on the disk. One process at a time may open a
store file (``<db>.lock``).

Acknowledge after commit: ``append_many`` returns its acks only after ``COMMIT`` returned, so an
acked message survives a crash (kill -9) and, with ``synchronous=FULL``, a power cut.

Quota: ``quota_bytes`` bounds the bytes of stored messages (payload, ids and a fixed per-row
overhead). Forwarded messages stay as history until the quota needs their room. When an append
does not fit, ``OverflowPolicy.REJECT_NEW`` refuses the whole append; ``EVICT_FORWARDED`` first
deletes the oldest forwarded (or upstream-rejected) rows, and refuses only if that is not
enough. Pending messages are never evicted. Every eviction and refusal is counted by reason
(``stats()["drops"]``) and logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import structlog

from actors.telemetry.model import (
    Ack,
    Compression,
    DesiredProperties,
    MessageKind,
    OutgoingMessage,
    OverflowPolicy,
    Registration,
    ReportedUpdate,
    StoredMessage,
    Upload,
)
from actors.telemetry.schema import SCHEMA_VERSION, Database, open_database
from bus.errors import StorageError

__all__ = ["QuotaExceeded", "TelemetryStore"]

log = structlog.get_logger()

ROW_OVERHEAD_BYTES = 64  # rough cost of a row's fixed columns and index entries
_PENDING, _FORWARDED, _REJECTED = 0, 1, 2
_STATE_NAMES = {_PENDING: "pending", _FORWARDED: "forwarded", _REJECTED: "rejected"}
_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(StoredMessage))  # = column names
_COLUMNS = ", ".join(_MESSAGE_FIELDS)
_REGISTRATION_FIELDS = tuple(f.name for f in dataclasses.fields(Registration))
# ON CONFLICT DO NOTHING: a duplicate identity (messages_identity) is skipped, not an error.
_INSERT = (
    "INSERT INTO messages (stream_group, stream, stream_seq, message_id, batch_id, batch_slice_id, chunk_id, kind, "
    "compression, timestamp, payload, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# Drop and refusal reasons, the keys of stats()["drops"].
EVICTED_FOR_QUOTA = "evicted_forwarded_for_quota"
REJECTED_QUOTA = "rejected_quota_full"
REJECTED_UPSTREAM = "rejected_by_upstream"


class QuotaExceeded(StorageError):
    """An append did not fit in the store's byte quota; nothing of it was stored.

    Travels as ``storage_error``; ``details`` holds ``reason``, ``needed``, ``available``, ``policy``.
    """


def _row_size(message: OutgoingMessage) -> int:
    ids = (message.stream_group, message.stream, message.message_id, message.batch_id, message.batch_slice_id, message.chunk_id)
    return ROW_OVERHEAD_BYTES + len(message.payload) + sum(len(i) for i in ids if i)


def _stored(row: tuple[Any, ...]) -> StoredMessage:
    fields = dict(zip(_MESSAGE_FIELDS, row, strict=True))
    fields.update(kind=MessageKind(fields["kind"]), compression=Compression(fields["compression"]))
    fields.update(payload=bytes(fields["payload"]), state=_STATE_NAMES[fields["state"]])
    return StoredMessage(**fields)


class TelemetryStore:
    """The durable outbox of one device (see the module docstring for threading and quota).

    Args:
        db: An open database from ``schema.open_database``; the store owns and closes it.
        quota_bytes: Upper bound of stored message bytes, or None for no bound.
        overflow: What to do when an append does not fit.
    """

    def __init__(self, db: Database, *, quota_bytes: int | None = None, overflow: OverflowPolicy = OverflowPolicy.REJECT_NEW) -> None:
        self._db = db
        self._conn = db.conn
        self._lock = threading.RLock()
        self.quota_bytes = quota_bytes
        self.overflow = OverflowPolicy(overflow)
        self._stream_seqs: dict[tuple[str, str], int] = {}
        with self._reading() as conn:
            self._used_bytes: int = conn.execute("SELECT coalesce(sum(size), 0) FROM messages").fetchone()[0]

    @classmethod
    def open(
        cls,
        path: str,
        *,
        quota_bytes: int | None = None,
        overflow: OverflowPolicy = OverflowPolicy.REJECT_NEW,
        check: bool = True,
    ) -> TelemetryStore:
        """Open (creating and migrating as needed) the store file at ``path``.

        Raises:
            StorageError: Corrupt file, not a store, newer schema, or locked by another process.
        """
        return cls(open_database(path, check=check), quota_bytes=quota_bytes, overflow=overflow)

    def close(self) -> None:
        """Close the database (idempotent); later calls raise ``StorageError``."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def path(self) -> str:
        """The database file."""
        return str(self._db.path)

    # -- transactions -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StorageError(f"{self._db.path}: {exc}") from exc

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; commits on success, rolls back on any error."""
        with self._reading() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _count(self, conn: sqlite3.Connection, reason: str, n: int) -> None:
        if n:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (reason, n),
            )

    # -- messages -----------------------------------------------------------------------------

    def append(self, message: OutgoingMessage) -> Ack:
        """Append one message; see ``append_many``."""
        return self.append_many([message])[0]

    def append_many(self, messages: Sequence[OutgoingMessage]) -> list[Ack]:
        """Store ``messages`` in one transaction and return one ack each, after the commit.

        A message whose (stream group, stream, kind, batch id, message id, chunk id) is already
        stored is not stored again; its ack has ``duplicate=True`` and names the first copy.
        Messages without a message id are never deduplicated.

        Raises:
            QuotaExceeded: The new messages do not fit, even after eviction; none was stored.
            StorageError: The disk or database failed; none was stored.
        """
        with self._lock:
            try:
                with self._writing() as conn:
                    acks, duplicates = self._insert_all(conn, messages)
                    self._count(conn, "duplicate", duplicates)
            except QuotaExceeded as exc:
                self._after_rollback()
                exc.details["messages"] = len(messages)  # the whole append is refused
                with self._writing() as conn:
                    self._count(conn, REJECTED_QUOTA, exc.details["messages"])
                log.warning("telemetry_append_rejected", **exc.details)
                raise
            except BaseException:
                self._after_rollback()
                raise
        return acks

    def _after_rollback(self) -> None:
        self._stream_seqs.clear()
        with self._reading() as conn:
            self._used_bytes = conn.execute("SELECT coalesce(sum(size), 0) FROM messages").fetchone()[0]

    def _insert_all(self, conn: sqlite3.Connection, messages: Sequence[OutgoingMessage]) -> tuple[list[Ack], int]:
        acks: list[Ack] = []
        touched: set[tuple[str, str]] = set()
        duplicates = 0
        for message in messages:
            key = (message.stream_group, message.stream)
            stream_seq = self._last_stream_seq(conn, key) + 1
            size = _row_size(message)
            # Insert first and let the identity index find duplicates: one statement per new
            # message instead of a lookup plus an insert (the common case is "not a duplicate").
            cursor = conn.execute(_INSERT, (*key, stream_seq, message.message_id, message.batch_id, message.batch_slice_id,
                                            message.chunk_id, str(message.kind), int(message.compression), message.timestamp,
                                            message.payload, size))  # fmt: skip
            if cursor.rowcount == 0:
                existing = self._find_identity(conn, message)
                if existing is None:
                    raise StorageError(f"{self._db.path}: insert of {key} #{stream_seq} conflicted with no duplicate")
                acks.append(Ack(existing[0], existing[1], duplicate=True))
                duplicates += 1
                continue
            self._stream_seqs[key] = stream_seq
            touched.add(key)
            self._used_bytes += size
            self._enforce_quota(conn, size)
            acks.append(Ack(int(cursor.lastrowid or 0), stream_seq))
        for key in touched:
            conn.execute(
                "INSERT INTO streams (stream_group, stream, last_seq) VALUES (?, ?, ?) "
                "ON CONFLICT (stream_group, stream) DO UPDATE SET last_seq = excluded.last_seq",
                (*key, self._stream_seqs[key]),
            )
        return acks, duplicates

    def _find_identity(self, conn: sqlite3.Connection, message: OutgoingMessage) -> tuple[int, int] | None:
        if message.message_id is None:
            return None
        row = conn.execute(
            "SELECT seq, stream_seq FROM messages WHERE stream_group = ? AND stream = ? AND kind = ? "
            "AND coalesce(batch_id, '') = ? AND message_id = ? AND coalesce(chunk_id, '') = ?",
            (
                message.stream_group,
                message.stream,
                str(message.kind),
                message.batch_id or "",
                message.message_id,
                message.chunk_id or "",
            ),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _last_stream_seq(self, conn: sqlite3.Connection, key: tuple[str, str]) -> int:
        if key not in self._stream_seqs:
            row = conn.execute("SELECT last_seq FROM streams WHERE stream_group = ? AND stream = ?", key).fetchone()
            self._stream_seqs[key] = 0 if row is None else row[0]
        return self._stream_seqs[key]

    def _enforce_quota(self, conn: sqlite3.Connection, size: int) -> None:
        """After inserting a ``size``-byte row: make room by policy, or refuse (rolling it all back)."""
        if self.quota_bytes is None or self._used_bytes <= self.quota_bytes:
            return
        if self.overflow is OverflowPolicy.EVICT_FORWARDED:
            self._evict(conn, self._used_bytes - self.quota_bytes)
        if self._used_bytes > self.quota_bytes:
            raise QuotaExceeded(
                f"{self._db.path}: quota of {self.quota_bytes} bytes reached ({self.overflow} policy)",
                details={
                    "reason": REJECTED_QUOTA,
                    "needed": size,
                    "available": max(0, self.quota_bytes - self._used_bytes + size),
                    "policy": str(self.overflow),
                },
            )

    def _evict(self, conn: sqlite3.Connection, needed: int) -> None:
        """Delete the oldest forwarded or rejected rows until ``needed`` bytes are free (or none is left)."""
        freed, last_seq, count = 0, None, 0
        for seq, size in conn.execute("SELECT seq, size FROM messages WHERE state <> 0 ORDER BY seq"):
            freed, last_seq, count = freed + size, seq, count + 1
            if freed >= needed:
                break
        if last_seq is None:
            return
        conn.execute("DELETE FROM messages WHERE state <> 0 AND seq <= ?", (last_seq,))
        self._used_bytes -= freed
        self._count(conn, EVICTED_FOR_QUOTA, count)
        log.info("telemetry_evicted", reason=EVICTED_FOR_QUOTA, messages=count, bytes=freed)

    def pending_count(self, up_to_seq: int | None = None) -> int:
        """The number of messages not yet forwarded (optionally only those with ``seq <= up_to_seq``)."""
        with self._reading() as conn:
            if up_to_seq is None:
                return int(conn.execute("SELECT count(*) FROM messages WHERE state = 0").fetchone()[0])
            return int(conn.execute("SELECT count(*) FROM messages WHERE state = 0 AND seq <= ?", (up_to_seq,)).fetchone()[0])

    def last_seq(self) -> int:
        """The highest ``seq`` ever given out (0 for an empty store); survives eviction."""
        with self._reading() as conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
            return 0 if row is None else int(row[0])

    def history(
        self,
        stream_group: str,
        stream: str,
        *,
        from_seq: int | None = None,
        to_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[StoredMessage]:
        """Messages of one stream still stored, by per-stream sequence (inclusive bounds).

        Args:
            stream_group: The stream group.
            stream: The stream.
            from_seq: Smallest ``stream_seq`` to return.
            to_seq: Largest ``stream_seq`` to return.
            since: Earliest ``timestamp`` (epoch seconds) to return.
            until: Latest ``timestamp`` to return.
            limit: At most this many rows, lowest ``stream_seq`` first.
        """
        clauses, args = ["stream_group = ?", "stream = ?"], [stream_group, stream]
        for clause, value in (("stream_seq >= ?", from_seq), ("stream_seq <= ?", to_seq), ("timestamp >= ?", since), ("timestamp <= ?", until)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        sql = f"SELECT {_COLUMNS} FROM messages WHERE {' AND '.join(clauses)} ORDER BY stream_seq LIMIT ?"
        with self._reading() as conn:
            return [_stored(row) for row in conn.execute(sql, (*args, limit))]

    def stats(self) -> dict[str, Any]:
        """Counts for monitoring: messages by state, bytes, quota, drops by reason, twin backlog."""
        with self._reading() as conn:
            states = dict(conn.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            reported = conn.execute("SELECT count(*) FROM reported_updates WHERE sent_at IS NULL").fetchone()[0]
        return {
            "schema_version": SCHEMA_VERSION,
            "pending": states.get(_PENDING, 0),
            "forwarded": states.get(_FORWARDED, 0),
            "rejected": states.get(_REJECTED, 0),
            "bytes_used": self._used_bytes,
            "quota_bytes": self.quota_bytes,
            "overflow": str(self.overflow),
            "duplicates": counters.pop("duplicate", 0),
            "forwarded_total": counters.pop("forwarded", 0),
            "drops": counters,
            "pending_reported_updates": reported,
        }

    # -- uploads (forwarder side) -------------------------------------------------------------

    def claim_upload(self, *, max_messages: int, max_bytes: int) -> Upload | None:
        """Give the next upload to send, or None when nothing is pending.

        An upload claimed earlier and not completed (the process died between send and ack) is
        given again with the same id and messages, so the server can recognise the resend.
        Otherwise the oldest pending message starts a new upload, followed by the next pending
        messages of the same stream and compression, up to ``max_messages`` and ``max_bytes``
        of payload (always at least one message).
        """
        with self._writing() as conn:
            row = conn.execute("SELECT upload_id FROM messages WHERE state = 0 AND upload_id IS NOT NULL ORDER BY seq LIMIT 1").fetchone()
            if row is not None:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM messages WHERE upload_id = ? AND state = 0 ORDER BY seq", (row[0],))
                return self._upload(row[0], [_stored(r) for r in rows])
            head = conn.execute("SELECT stream_group, stream, stream_seq FROM messages WHERE state = 0 ORDER BY seq LIMIT 1").fetchone()
            if head is None:
                return None
            # The head is its stream's oldest pending message, so the rest follow it in stream_seq.
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE stream_group = ? AND stream = ? AND stream_seq >= ? AND state = 0 "
                "ORDER BY stream_seq LIMIT ?",
                (*head, max_messages),
            )
            messages: list[StoredMessage] = []
            total = 0
            for message in map(_stored, rows):
                if messages and (message.compression != messages[0].compression or total + len(message.payload) > max_bytes):
                    break
                messages.append(message)
                total += len(message.payload)
            upload_id = uuid.uuid4().hex
            conn.executemany("UPDATE messages SET upload_id = ? WHERE seq = ?", [(upload_id, m.seq) for m in messages])
            return self._upload(upload_id, messages)

    @staticmethod
    def _upload(upload_id: str, messages: Sequence[StoredMessage]) -> Upload:
        first = messages[0]
        return Upload(upload_id, first.stream_group, first.stream, first.compression, tuple(messages))

    def complete_upload(self, upload_id: str, acked: Iterable[int], rejected: Mapping[int, str] | None = None) -> int:
        """Record the server's answer to an upload; returns how many messages it settled.

        ``acked`` seqs become forwarded, ``rejected`` seqs (seq → reason) are counted as drops;
        every other message of the upload is released to be sent again in a new upload.
        """
        rejected = dict(rejected or {})
        now = time.time()
        with self._writing() as conn:
            done = conn.executemany(
                "UPDATE messages SET state = 1, forwarded_at = ? WHERE upload_id = ? AND seq = ? AND state = 0",
                [(now, upload_id, seq) for seq in acked],
            ).rowcount
            refused = conn.executemany(
                "UPDATE messages SET state = 2, forwarded_at = ? WHERE upload_id = ? AND seq = ? AND state = 0",
                [(now, upload_id, seq) for seq in rejected],
            ).rowcount
            conn.execute("UPDATE messages SET upload_id = NULL WHERE upload_id = ? AND state = 0", (upload_id,))
            self._count(conn, "forwarded", done)
            self._count(conn, REJECTED_UPSTREAM, refused)
        if refused:
            log.warning("telemetry_rejected_upstream", reason=REJECTED_UPSTREAM, upload_id=upload_id, reasons=sorted(set(rejected.values())))
        return done + refused

    # -- registration -------------------------------------------------------------------------

    def registration(self) -> Registration | None:
        """The stored registration, or None before the first provisioning."""
        with self._reading() as conn:
            row = conn.execute(f"SELECT {', '.join(_REGISTRATION_FIELDS)} FROM registration").fetchone()
        return None if row is None else Registration(**dict(zip(_REGISTRATION_FIELDS, row, strict=True)))

    def save_registration(self, registration: Registration) -> None:
        """Replace the stored registration (after provisioning or a token refresh)."""
        values = tuple(getattr(registration, name) for name in _REGISTRATION_FIELDS)
        with self._writing() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO registration (id, {', '.join(_REGISTRATION_FIELDS)}) VALUES (0{', ?' * len(values)})",
                values,
            )

    # -- twin ---------------------------------------------------------------------------------

    def desired_properties(self) -> DesiredProperties | None:
        """The latest desired properties received, or None before the first."""
        with self._reading() as conn:
            row = conn.execute("SELECT version, properties FROM desired_properties").fetchone()
        return None if row is None else DesiredProperties(row[0], json.loads(row[1]))

    def save_desired_properties(self, desired: DesiredProperties) -> bool:
        """Keep ``desired`` if its version is newer than the stored one; return whether it was."""
        with self._writing() as conn:
            cursor = conn.execute(
                "INSERT INTO desired_properties (id, version, properties, received_at) VALUES (0, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version, properties = excluded.properties, "
                "received_at = excluded.received_at WHERE excluded.version > desired_properties.version",
                (desired.version, json.dumps(desired.values), time.time()),
            )
            return cursor.rowcount > 0

    def add_reported_update(self, patch: Mapping[str, Any]) -> int:
        """Persist a reported-properties patch to be forwarded; returns its update id."""
        with self._writing() as conn:
            cursor = conn.execute("INSERT INTO reported_updates (patch, created_at) VALUES (?, ?)", (json.dumps(dict(patch)), time.time()))
            return int(cursor.lastrowid or 0)

    def pending_reported_updates(self, limit: int = 100) -> list[ReportedUpdate]:
        """Reported patches not yet acknowledged upstream, oldest first."""
        with self._reading() as conn:
            rows = conn.execute("SELECT id, patch FROM reported_updates WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [ReportedUpdate(row[0], json.loads(row[1])) for row in rows]

    def mark_reported_sent(self, update_ids: Iterable[int]) -> None:
        """Clear the pending flag of the patches the upstream acknowledged."""
        now = time.time()
        with self._writing() as conn:
            conn.executemany("UPDATE reported_updates SET sent_at = ? WHERE id = ? AND sent_at IS NULL", [(now, i) for i in update_ids])

    def any_pending_reported_updates(self) -> bool:
        """Whether any reported-properties patch is waiting to be forwarded."""
        with self._reading() as conn:
            return conn.execute("SELECT EXISTS (SELECT 1 FROM reported_updates WHERE sent_at IS NULL)").fetchone()[0] == 1

