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

import collections
import contextlib
import dataclasses
import functools
import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, NamedTuple, Self, TypeVar

import structlog

from actors.telemetry.model import (
    Ack,
    AckRun,
    Compression,
    DesiredProperties,
    MessageKind,
    OutgoingMessage,
    OverflowPolicy,
    Registration,
    ReportedUpdate,
    StoredMessage,
    Upload,
    merge_patch,
)
from actors.telemetry.schema import SCHEMA_VERSION, Database, open_database
from bus.errors import StorageError

__all__ = ["QuotaExceeded", "TelemetryStore"]

log = structlog.get_logger()

ROW_OVERHEAD_BYTES = 64  # rough cost of a row's fixed columns and index entries
# stream_seqs summarised by one stream_blocks row (time queries read at most this many extra rows
# per end)
BLOCK_SPAN = 256
_PENDING, _FORWARDED, _REJECTED = 0, 1, 2
_STATE_NAMES = {_PENDING: "pending", _FORWARDED: "forwarded", _REJECTED: "rejected"}
_KINDS = (
    MessageKind.MESSAGE,
    MessageKind.COMPLETE_BATCH,
    MessageKind.COMPLETE_MESSAGE,
)  # column value = index
_KIND_CODES = {kind: code for code, kind in enumerate(_KINDS)}
_COMPRESSIONS = {int(c): c for c in Compression}
_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(StoredMessage))
_MESSAGE_SLOTS = tuple(getattr(StoredMessage, name).__set__ for name in _MESSAGE_FIELDS)
_new_message = object.__new__
# The StoredMessage fields in order; the stream's names come from the streams table.
_SELECT = (
    "SELECT m.seq, s.stream_group, s.stream, m.stream_seq, m.message_id, m.batch_id,"
    " m.batch_slice_id, m.chunk_id, m.kind, m.compression, m.timestamp, m.payload, m.state"
    " FROM messages AS m JOIN streams AS s USING (stream_id)"
)
_REGISTRATION_FIELDS = tuple(f.name for f in dataclasses.fields(Registration))
# ON CONFLICT DO NOTHING: a duplicate identity (messages_identity) is skipped, not an error.
_INSERT = (
    "INSERT INTO messages (seq, stream_id, stream_seq, message_id, batch_id, batch_slice_id,"
    " chunk_id, kind, compression, timestamp, payload, size)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_UPDATE_BLOCK = (
    "INSERT INTO stream_blocks (stream_id, first_seq, last_seq, min_ts, max_ts) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (stream_id, first_seq) DO UPDATE SET last_seq = excluded.last_seq, "
    "min_ts = min(min_ts, excluded.min_ts), max_ts = max(max_ts, excluded.max_ts)"
)
# Drop and refusal reasons, the keys of stats()["drops"].
EVICTED_FOR_QUOTA = "evicted_forwarded_for_quota"
REJECTED_QUOTA = "rejected_quota_full"
REJECTED_UPSTREAM = "rejected_by_upstream"

# A message on its way into a row: (stream key, message_id, batch_id, batch_slice_id, chunk_id,
# kind code, compression, timestamp, payload). Built without any per-message object.
_Entry = tuple[
    tuple[str, str], str | None, str | None, str | None, str | None, int, int, float, bytes
]


class _Duplicate(Exception):
    """The one-statement insert skipped a row: redo the append row by row to find which."""


READINGS_PER_STATEMENT = (
    500  # rows per multi-row INSERT of readings (4 bound values each, far below SQLite's 32766)
)


@functools.lru_cache(maxsize=256)
def _readings_insert(stream_id: int, compression: int, rows: int) -> str:
    """The INSERT of ``rows`` readings; the constants are literals (integers of our own making),
    the timestamp is ``?1`` for all, and row ``i`` binds seq, stream_seq, payload and size as
    ``?(2+4i)`` to ``?(5+4i)`` (numbered: SQLite numbers a bare ``?`` after the highest so far)."""
    constants = (
        f"{int(stream_id)}, {{}}, {_KIND_CODES[MessageKind.MESSAGE]}, {int(compression)}, ?1"
    )
    values = ", ".join(
        f"(?{2 + 4 * i}, {constants.format(f'?{3 + 4 * i}')}, ?{4 + 4 * i}, ?{5 + 4 * i})"
        for i in range(rows)
    )
    columns = "seq, stream_id, stream_seq, kind, compression, timestamp, payload, size"
    return f"INSERT INTO messages ({columns}) VALUES {values}"


_Acks = TypeVar("_Acks", list[Ack], AckRun)


class _Inserted(NamedTuple, Generic[_Acks]):
    """What one append inserted, for the bookkeeping around it."""

    acks: _Acks
    stored: int  # rows inserted (duplicates are not)
    stored_bytes: int
    duplicates: int
    last_seq: int  # the highest seq now given out
    spans: dict[int, list[Any]]  # stream_id -> [first stream_seq, last stream_seq, min ts, max ts]


class QuotaExceeded(StorageError):
    """An append did not fit in the store's byte quota; nothing of it was stored.

    Travels as ``storage_error``; ``details`` holds ``reason``, ``needed``, ``available``, ``policy``.
    """


def _entry_size(entry: _Entry) -> int:
    """The bytes a row counts against the quota: payload, names, ids and a fixed overhead."""
    # Spelled out rather than summed over a generator: this runs once per stored message.
    key, message_id, batch_id, slice_id, chunk_id = entry[:5]
    size = ROW_OVERHEAD_BYTES + len(key[0]) + len(key[1]) + len(entry[8])
    if message_id or batch_id or slice_id or chunk_id:
        size += (
            len(message_id or "") + len(batch_id or "") + len(slice_id or "") + len(chunk_id or "")
        )
    return size


def _stored(row: tuple[Any, ...]) -> StoredMessage:
    """A ``StoredMessage`` from a row of ``_SELECT``.

    This runs once per message of every upload, and a frozen dataclass's ``__init__`` costs
    ~2 µs (an ``object.__setattr__`` per field): the slots are filled directly instead (there is
    nothing to validate, the row is the store's own)."""
    seq, group, stream, stream_seq, message_id, batch_id, slice_id, chunk_id = row[:8]
    kind, compression, timestamp, payload, state = row[8:]
    message = _new_message(StoredMessage)
    for set_slot, value in zip(
        _MESSAGE_SLOTS,
        (
            seq,
            group,
            stream,
            stream_seq,
            message_id,
            batch_id,
            slice_id,
            chunk_id,
            _KINDS[kind],
            _COMPRESSIONS[compression],
            timestamp,
            payload if type(payload) is bytes else bytes(payload),
            _STATE_NAMES[state],
        ),
        strict=True,
    ):
        set_slot(message, value)
    return message


class TelemetryStore:
    """The durable outbox of one device (see the module docstring for threading and quota).

    Args:
        db: An open database from ``schema.open_database``; the store owns and closes it.
        quota_bytes: Upper bound of stored message bytes, or None for no bound.
        overflow: What to do when an append does not fit.
    """

    def __init__(
        self,
        db: Database,
        *,
        quota_bytes: int | None = None,
        overflow: OverflowPolicy = OverflowPolicy.REJECT_NEW,
    ) -> None:
        self._db = db
        self._conn = db.conn
        self._lock = threading.RLock()
        self.quota_bytes = quota_bytes
        self.overflow = OverflowPolicy(overflow)
        # The upload claimed and not completed: (upload_id, stream_id, first and last
        # stream_seq). Unknown (a scan finds it) until the first claim after opening.
        self._claim: tuple[str, int, int, int] | None = None
        self._claim_known = False
        self._load_counters()

    def _load_counters(self) -> None:
        """Read what the store keeps in memory: numbering, stream ids, open blocks, bytes, states.

        Kept in memory so that appends, ``pending_count`` and ``stats`` never scan the table;
        every write moves them together with its transaction (see ``_append``).
        """
        with self._reading() as conn:
            self._last_seq: int = conn.execute("SELECT last_seq FROM sequence").fetchone()[0]
            self._stream_ids: dict[tuple[str, str], int] = {}
            self._stream_last: dict[int, int] = {}
            for stream_id, group, stream, last in conn.execute(
                "SELECT stream_id, stream_group, stream, last_seq FROM streams"
            ):
                self._stream_ids[(group, stream)] = stream_id
                self._stream_last[stream_id] = last
            self._open_blocks: dict[int, int] = dict(
                conn.execute(
                    "SELECT stream_id, max(first_seq) FROM stream_blocks GROUP BY stream_id"
                )
            )
            self._used_bytes: int = conn.execute(
                "SELECT coalesce(sum(size), 0) FROM messages"
            ).fetchone()[0]
            self._states: dict[int, int] = {_PENDING: 0, _FORWARDED: 0, _REJECTED: 0}
            self._states.update(conn.execute("SELECT state, count(*) FROM messages GROUP BY state"))

    def _snapshot(self) -> tuple[Any, ...]:
        return (
            self._last_seq,
            self._used_bytes,
            dict(self._stream_ids),
            dict(self._stream_last),
            dict(self._open_blocks),
            dict(self._states),
        )

    def _restore(self, snapshot: tuple[Any, ...]) -> None:
        """Put the in-memory counters back as they were before a rolled-back transaction."""
        (
            self._last_seq,
            self._used_bytes,
            self._stream_ids,
            self._stream_last,
            self._open_blocks,
            self._states,
        ) = snapshot

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        if not messages:
            return []
        entries = [
            (
                (m.stream_group, m.stream),
                m.message_id,
                m.batch_id,
                m.batch_slice_id,
                m.chunk_id,
                _KIND_CODES[m.kind],
                int(m.compression),
                m.timestamp,
                m.payload,
            )
            for m in messages
        ]
        return self._append(
            lambda conn, row_by_row: self._insert_entries(conn, entries, row_by_row), len(entries)
        )

    def append_payloads(
        self,
        stream_group: str,
        stream: str,
        payloads: Sequence[bytes],
        *,
        compression: Compression = Compression.UNCOMPRESSED,
        timestamp: float | None = None,
    ) -> AckRun:
        """Store plain readings of one stream (no ids, one timestamp) in one transaction.

        The same as ``append_many`` with ``OutgoingMessage.create(payload, stream_group=...,
        stream=..., compression=..., timestamp=...)`` for each payload, without building a
        message object per reading, binding only the columns that vary, many rows per
        statement: the path producers of small readings take. Readings are never duplicates, so
        the acks are one run (``AckRun``).
        """
        if not payloads:
            return AckRun(0, 0, 0)
        key = (stream_group, stream)
        ts = time.time() if timestamp is None else timestamp
        return self._append(
            lambda conn, _row_by_row: self._insert_readings(
                conn, key, int(compression), ts, payloads
            ),
            len(payloads),
        )

    def _append(
        self, insert: Callable[[sqlite3.Connection, bool], _Inserted[_Acks]], count: int
    ) -> _Acks:
        """Run ``insert`` in a transaction with the quota, numbering and counters around it.

        ``insert`` first runs with ``row_by_row`` false (one ``executemany``); if it raises
        ``_Duplicate`` the transaction is rolled back and it runs again with ``row_by_row`` true.
        The in-memory counters are snapshotted first and restored whenever a transaction rolls back.
        """
        with self._lock:
            before = self._snapshot()
            try:
                try:
                    return self._append_in_transaction(insert, row_by_row=False)
                except _Duplicate:
                    self._restore(before)
                    before = self._snapshot()
                    return self._append_in_transaction(insert, row_by_row=True)
            except QuotaExceeded as exc:
                self._restore(before)
                exc.details["messages"] = count  # the whole append is refused
                with self._writing() as conn:
                    self._count(conn, REJECTED_QUOTA, count)
                log.warning("telemetry_append_rejected", **exc.details)
                raise
            except BaseException:
                self._restore(before)
                raise

    def _append_in_transaction(
        self, insert: Callable[[sqlite3.Connection, bool], _Inserted[_Acks]], *, row_by_row: bool
    ) -> _Acks:
        with self._writing() as conn:
            done = insert(conn, row_by_row)
            self._used_bytes += done.stored_bytes
            self._states[_PENDING] += done.stored
            self._make_room(conn, done.stored_bytes)
            self._record_numbering(conn, done.spans, done.last_seq)
            self._count(conn, "duplicate", done.duplicates)
        self._last_seq = done.last_seq
        return done.acks

    def _insert_entries(
        self, conn: sqlite3.Connection, entries: list[_Entry], row_by_row: bool
    ) -> _Inserted[list[Ack]]:
        """Number and insert messages of any kind; see ``_append`` for ``row_by_row``.

        Row by row, each skipped row (a duplicate identity) is asked which stored message it
        duplicates, and its ack names that one.
        """
        seq = self._last_seq
        stream_last = self._stream_last
        rows: list[tuple[Any, ...]] = []
        acks: list[Ack] = []
        stored_bytes = duplicates = 0
        for entry in entries:
            stream_id = self._stream_id(conn, entry[0])
            size = _entry_size(entry)
            row = (seq + 1, stream_id, stream_last[stream_id] + 1, *entry[1:], size)
            if row_by_row and conn.execute(_INSERT, row).rowcount == 0:
                acks.append(self._find_duplicate(conn, stream_id, entry))
                duplicates += 1
                continue
            seq += 1
            stream_last[stream_id] += 1
            stored_bytes += size
            rows.append(row)
            acks.append(Ack(seq, row[2]))
        if not row_by_row and conn.executemany(_INSERT, rows).rowcount != len(rows):
            raise _Duplicate
        spans: dict[
            int, list[Any]
        ] = {}  # stream_id -> [first stream_seq, last stream_seq, min ts, max ts]
        for row in rows:
            span = spans.get(row[1])
            if span is None:
                spans[row[1]] = [row[2], row[2], row[9], row[9]]
            else:
                span[1], span[2], span[3] = row[2], min(span[2], row[9]), max(span[3], row[9])
        return _Inserted(acks, len(rows), stored_bytes, duplicates, seq, spans)

    def _insert_readings(
        self,
        conn: sqlite3.Connection,
        key: tuple[str, str],
        compression: int,
        ts: float,
        payloads: Sequence[bytes],
    ) -> _Inserted[AckRun]:
        """Number and insert plain readings of one stream: no ids, so no duplicates to look for.

        Many rows per INSERT (``_readings_insert``): one statement step for up to
        ``READINGS_PER_STATEMENT`` rows instead of one per row, which halves sqlite3's per-row
        cost, and only the varying columns are bound (binding a None costs as much as an int).
        """
        stream_id = self._stream_id(conn, key)
        first_seq, first_stream_seq, n = (
            self._last_seq + 1,
            self._stream_last[stream_id] + 1,
            len(payloads),
        )
        base = ROW_OVERHEAD_BYTES + len(key[0]) + len(key[1])
        for start in range(0, n, READINGS_PER_STATEMENT):
            part = payloads[start : start + READINGS_PER_STATEMENT]
            seq, stream_seq = first_seq + start, first_stream_seq + start
            values = [
                v
                for i, payload in enumerate(part)
                for v in (seq + i, stream_seq + i, payload, base + len(payload))
            ]
            conn.execute(_readings_insert(stream_id, compression, len(part)), (ts, *values))
        self._stream_last[stream_id] += n
        stored_bytes = base * n + sum(map(len, payloads))
        spans = {stream_id: [first_stream_seq, first_stream_seq + n - 1, ts, ts]}
        return _Inserted(
            AckRun(first_seq, first_stream_seq, n), n, stored_bytes, 0, first_seq + n - 1, spans
        )

    def _stream_id(self, conn: sqlite3.Connection, key: tuple[str, str]) -> int:
        """The stream's id, creating the stream (in the current transaction) on first use."""
        stream_id = self._stream_ids.get(key)
        if stream_id is None:
            stream_id = self._stream_ids[key] = self._create_stream(conn, key)
            self._stream_last[stream_id] = 0
        return stream_id

    def _create_stream(self, conn: sqlite3.Connection, key: tuple[str, str]) -> int:
        cursor = conn.execute(
            "INSERT INTO streams (stream_group, stream, last_seq) VALUES (?, ?, 0)", key
        )
        return int(cursor.lastrowid or 0)

    def _find_duplicate(self, conn: sqlite3.Connection, stream_id: int, entry: _Entry) -> Ack:
        _, message_id, batch_id, _slice, chunk_id, kind, *_ = entry
        row = None
        if message_id is not None:
            row = conn.execute(
                "SELECT seq, stream_seq FROM messages"
                " WHERE stream_id = ? AND kind = ? AND coalesce(batch_id, '') = ?"
                " AND message_id = ? AND coalesce(chunk_id, '') = ?",
                (stream_id, kind, batch_id or "", message_id, chunk_id or ""),
            ).fetchone()
        if row is None:
            raise StorageError(
                f"{self._db.path}: insert into {entry[0]} conflicted with no duplicate"
            )
        return Ack(row[0], row[1], duplicate=True)

    def _record_numbering(
        self, conn: sqlite3.Connection, spans: Mapping[int, Sequence[Any]], last_seq: int
    ) -> None:
        """Persist the counters an append moved, and extend each stream's time summary.

        ``spans`` maps each stream id the append wrote to ``[first stream_seq, last stream_seq,
        min timestamp, max timestamp]`` of its new rows.
        """
        if not spans:
            return
        conn.execute("UPDATE sequence SET last_seq = ?", (last_seq,))
        for stream_id, (first, last, min_ts, max_ts) in spans.items():
            conn.execute("UPDATE streams SET last_seq = ? WHERE stream_id = ?", (last, stream_id))
            block = self._open_blocks.get(stream_id)
            if block is None or last - block >= BLOCK_SPAN:
                block = self._open_blocks[stream_id] = first
            conn.execute(_UPDATE_BLOCK, (stream_id, block, last, min_ts, max_ts))

    def _make_room(self, conn: sqlite3.Connection, size: int) -> None:
        """After inserting ``size`` bytes: make room by policy, or refuse (rolling it all back)."""
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
        by_state: collections.Counter[int] = collections.Counter()
        for seq, size, state in conn.execute(
            "SELECT seq, size, state FROM messages WHERE state <> 0 ORDER BY seq"
        ):
            freed, last_seq, count = freed + size, seq, count + 1
            by_state[state] += 1
            if freed >= needed:
                break
        if last_seq is None:
            return
        conn.execute("DELETE FROM messages WHERE state <> 0 AND seq <= ?", (last_seq,))
        # Time summaries of runs that no longer hold a row go too (the open block of each stream
        # is re-created by the next append if it was one of them).
        conn.execute(
            "DELETE FROM stream_blocks WHERE NOT EXISTS (SELECT 1 FROM messages AS m"
            " WHERE m.stream_id = stream_blocks.stream_id"
            " AND m.stream_seq BETWEEN stream_blocks.first_seq AND stream_blocks.last_seq)"
        )
        self._used_bytes -= freed
        for state, n in by_state.items():
            self._states[state] -= n
        self._count(conn, EVICTED_FOR_QUOTA, count)
        log.info("telemetry_evicted", reason=EVICTED_FOR_QUOTA, messages=count, bytes=freed)

    def pending_count(self, up_to_seq: int | None = None) -> int:
        """The number of messages not yet forwarded (optionally only those with ``seq <= up_to_seq``).

        Without a bound (or with one at or past the last seq) this is a counter, not a query.
        """
        with self._reading() as conn:
            if up_to_seq is None or up_to_seq >= self._last_seq:
                return self._states[_PENDING]
            return int(
                conn.execute(
                    "SELECT count(*) FROM messages WHERE state = 0 AND seq <= ?", (up_to_seq,)
                ).fetchone()[0]
            )

    def oldest_pending_seq(self) -> int | None:
        """The ``seq`` of the oldest message not yet forwarded, or None (one index lookup)."""
        with self._reading() as conn:
            if not self._states[_PENDING]:
                return None
            oldest: int | None = conn.execute(
                "SELECT min(seq) FROM messages WHERE state = 0"
            ).fetchone()[0]
            return oldest

    def last_seq(self) -> int:
        """The highest ``seq`` ever given out (0 for an empty store); survives eviction."""
        with self._lock:
            return self._last_seq

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
        with self._reading() as conn:
            stream_id = self._stream_ids.get((stream_group, stream))
            if stream_id is None:
                return []
            clauses = ["m.stream_id = ?"]
            args: list[float] = [stream_id]
            if since is not None or until is not None:
                # The stream_seq run whose summaries overlap the time range bounds the scan.
                low, high = conn.execute(
                    "SELECT min(first_seq), max(last_seq) FROM stream_blocks"
                    " WHERE stream_id = ? AND max_ts >= ? AND min_ts <= ?",
                    (
                        stream_id,
                        -math.inf if since is None else since,
                        math.inf if until is None else until,
                    ),
                ).fetchone()
                if low is None:
                    return []
                from_seq, to_seq = (
                    max(low, from_seq or low),
                    min(high, high if to_seq is None else to_seq),
                )
            bounds = (
                ("m.stream_seq >= ?", from_seq),
                ("m.stream_seq <= ?", to_seq),
                ("m.timestamp >= ?", since),
                ("m.timestamp <= ?", until),
            )
            for clause, value in bounds:
                if value is not None:
                    clauses.append(clause)
                    args.append(value)
            sql = f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY m.stream_seq LIMIT ?"
            return [_stored(row) for row in conn.execute(sql, (*args, limit))]

    def stats(self) -> dict[str, Any]:
        """Counts for monitoring: messages by state, bytes, quota, drops by reason, twin backlog."""
        with self._reading() as conn:
            states = dict(self._states)
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            reported = conn.execute(
                "SELECT count(*) FROM reported_updates WHERE sent_at IS NULL"
            ).fetchone()[0]
            used_bytes = self._used_bytes  # read under the lock, with the state counts
        return {
            "schema_version": SCHEMA_VERSION,
            "pending": states.get(_PENDING, 0),
            "forwarded": states.get(_FORWARDED, 0),
            "rejected": states.get(_REJECTED, 0),
            "bytes_used": used_bytes,
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
            if not self._claim_known:
                self._claim = self._find_claim(conn)
                self._claim_known = True
            if self._claim is not None:
                upload_id, *span = self._claim
                rows = conn.execute(
                    f"{_SELECT} WHERE m.stream_id = ? AND m.stream_seq BETWEEN ? AND ?"
                    " AND m.upload_id = ? AND m.state = 0 ORDER BY m.stream_seq",
                    (*span, upload_id),
                )
                return self._upload(upload_id, [_stored(r) for r in rows])
            head = conn.execute(
                "SELECT stream_id, stream_seq FROM messages WHERE state = 0 ORDER BY seq LIMIT 1"
            ).fetchone()
            if head is None:
                return None
            # The head is its stream's oldest pending message, so the rest follow it in stream_seq.
            rows = conn.execute(
                f"{_SELECT} WHERE m.stream_id = ? AND m.stream_seq >= ? AND m.state = 0"
                " ORDER BY m.stream_seq LIMIT ?",
                (*head, max_messages),
            )
            messages: list[StoredMessage] = []
            total = 0
            for message in map(_stored, rows):
                if messages and (
                    message.compression != messages[0].compression
                    or total + len(message.payload) > max_bytes
                ):
                    break
                messages.append(message)
                total += len(message.payload)
            upload_id = uuid.uuid4().hex
            # The messages are the pending ones of this stream_seq range, so one statement
            # claims them (not one per message).
            claim = (upload_id, head[0], messages[0].stream_seq, messages[-1].stream_seq)
            conn.execute(
                "UPDATE messages SET upload_id = ?"
                " WHERE stream_id = ? AND stream_seq BETWEEN ? AND ? AND state = 0",
                claim,
            )
        self._claim = claim  # committed
        return self._upload(upload_id, messages)

    @staticmethod
    def _find_claim(conn: sqlite3.Connection) -> tuple[str, int, int, int] | None:
        """The claimed, uncompleted upload stored (left by an earlier process), if any.

        A claim starts at the oldest pending message, and only its completion settles or
        releases its messages (all of them at once), so while one is outstanding the oldest
        pending message is in it: one row tells (not a scan of every pending one).
        """
        row = conn.execute(
            "SELECT upload_id, stream_id, stream_seq FROM messages"
            " WHERE state = 0 ORDER BY seq LIMIT 1"
        ).fetchone()
        if row is None or row[0] is None:
            return None
        upload_id, stream_id, first = row
        (last,) = conn.execute(
            "SELECT max(stream_seq) FROM messages"
            " WHERE stream_id = ? AND stream_seq >= ? AND upload_id = ? AND state = 0",
            (stream_id, first, upload_id),
        ).fetchone()
        return (upload_id, stream_id, first, last)

    @staticmethod
    def _upload(upload_id: str, messages: Sequence[StoredMessage]) -> Upload:
        first = messages[0]
        return Upload(
            upload_id, first.stream_group, first.stream, first.compression, tuple(messages)
        )

    def complete_upload(
        self, upload_id: str, acked: Iterable[int], rejected: Mapping[int, str] | None = None
    ) -> int:
        """Record the server's answer to an upload; returns how many messages it settled.

        ``acked`` seqs become forwarded, ``rejected`` seqs (seq → reason) are counted as drops;
        every other message of the upload is released to be sent again in a new upload.
        """
        rejected = dict(rejected or {})
        now = time.time()
        with self._lock:
            claim = self._claim if self._claim_known else None
            if claim is None or claim[0] != upload_id:  # not the claimed one: find its rows
                claim = self._find_upload(upload_id)
            with self._writing() as conn:
                done = refused = 0
                if claim is not None:
                    done, refused = self._settle(conn, claim, now, acked, rejected)
                self._count(conn, "forwarded", done)
                self._count(conn, REJECTED_UPSTREAM, refused)
            # Committed (a failed commit raised above): the counters follow.
            if self._claim is not None and self._claim[0] == upload_id:
                self._claim = None
            self._states[_PENDING] -= done + refused
            self._states[_FORWARDED] += done
            self._states[_REJECTED] += refused
        if refused:
            log.warning(
                "telemetry_rejected_upstream",
                reason=REJECTED_UPSTREAM,
                upload_id=upload_id,
                reasons=sorted(set(rejected.values())),
            )
        return done + refused

    def _find_upload(self, upload_id: str) -> tuple[str, int, int, int] | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT stream_id, min(stream_seq), max(stream_seq) FROM messages"
                " WHERE upload_id = ? AND state = 0",
                (upload_id,),
            ).fetchone()
        return None if row is None or row[0] is None else (upload_id, *row)

    @staticmethod
    def _settle(
        conn: sqlite3.Connection,
        claim: tuple[str, int, int, int],
        now: float,
        acked: Iterable[int],
        rejected: Mapping[int, str],
    ) -> tuple[int, int]:
        """Mark an upload's acked messages forwarded, its rejected ones rejected, release the
        rest; returns (forwarded, rejected). Seqs not pending in the upload are ignored."""
        where = (
            " WHERE stream_id = ? AND stream_seq BETWEEN ? AND ? AND upload_id = ? AND state = 0"
        )
        upload_id, *span = claim
        scope = (*span, upload_id)
        acked = set(acked)
        if not rejected and acked.issuperset(
            seq for (seq,) in conn.execute(f"SELECT seq FROM messages{where}", scope)
        ):
            # Every message acked, the usual answer: one statement for all of them.
            cursor = conn.execute(
                f"UPDATE messages SET state = 1, forwarded_at = ?{where}", (now, *scope)
            )
            return cursor.rowcount, 0
        by_seq = (
            "UPDATE messages SET state = ?, forwarded_at = ?"
            " WHERE upload_id = ? AND seq = ? AND state = 0"
        )
        done = conn.executemany(by_seq, [(1, now, upload_id, seq) for seq in acked]).rowcount
        refused = conn.executemany(by_seq, [(2, now, upload_id, seq) for seq in rejected]).rowcount
        conn.execute(f"UPDATE messages SET upload_id = NULL{where}", scope)
        return done, refused

    # -- registration -------------------------------------------------------------------------

    def registration(self) -> Registration | None:
        """The stored registration, or None before the first provisioning."""
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_REGISTRATION_FIELDS)} FROM registration"
            ).fetchone()
        return (
            None
            if row is None
            else Registration(**dict(zip(_REGISTRATION_FIELDS, row, strict=True)))
        )

    def save_registration(self, registration: Registration) -> None:
        """Replace the stored registration (after provisioning or a token refresh)."""
        values = tuple(getattr(registration, name) for name in _REGISTRATION_FIELDS)
        with self._writing() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO registration (id, {', '.join(_REGISTRATION_FIELDS)})"
                f" VALUES (0{', ?' * len(values)})",
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
                "INSERT INTO desired_properties (id, version, properties, received_at)"
                " VALUES (0, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
                " properties = excluded.properties, received_at = excluded.received_at"
                " WHERE excluded.version > desired_properties.version",
                (desired.version, json.dumps(desired.values), time.time()),
            )
            return cursor.rowcount > 0

    def add_reported_update(self, patch: Mapping[str, Any]) -> int:
        """Persist a reported-properties patch to be forwarded; returns its update id."""
        with self._writing() as conn:
            cursor = conn.execute(
                "INSERT INTO reported_updates (patch, created_at) VALUES (?, ?)",
                (json.dumps(dict(patch)), time.time()),
            )
            return int(cursor.lastrowid or 0)

    def pending_reported_updates(self, limit: int = 100) -> list[ReportedUpdate]:
        """Reported patches not yet acknowledged upstream, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT id, patch FROM reported_updates WHERE sent_at IS NULL ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [ReportedUpdate(row[0], json.loads(row[1])) for row in rows]

    def mark_reported_sent(self, update_ids: Iterable[int]) -> None:
        """Clear the pending flag of the patches the upstream acknowledged."""
        now = time.time()
        with self._writing() as conn:
            conn.executemany(
                "UPDATE reported_updates SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
                [(now, i) for i in update_ids],
            )

    def reported_properties(self, up_to_id: int) -> dict[str, Any]:
        """Every reported patch up to id ``up_to_id`` (sent or not) merged in order (RFC 7396):
        the document an upstream that keeps whole documents (the MQTT retained topic) gets."""
        document: dict[str, Any] = {}
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT patch FROM reported_updates WHERE id <= ? ORDER BY id", (up_to_id,)
            ).fetchall()
        for (patch,) in rows:
            document = merge_patch(document, json.loads(patch))
        return document

    def any_pending_reported_updates(self) -> bool:
        """Whether any reported-properties patch is waiting to be forwarded."""
        with self._reading() as conn:
            exists: int = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM reported_updates WHERE sent_at IS NULL)"
            ).fetchone()[0]
            return exists == 1
