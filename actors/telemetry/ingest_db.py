"""``IngestDatabase``: what the reference ingest service keeps, in its own SQLite file.

Devices and their tokens, uploads (the idempotency record: a repeated upload id gets the
first answer again and stores nothing), messages deduplicated as the Spotflow platform does
(reference/spotflow.md §6.1), batches (one open batch per stream, closed by a new batch id or
an explicit completion), chunked messages assembled on completion, and both halves of each
device's twin. One connection, one lock: the HTTP handler threads take turns.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from actors.telemetry.model import merge_patch
from bus.security.files import ensure_private

__all__ = ["IngestDatabase", "merge_patch"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, token TEXT NOT NULL UNIQUE,
    expires_at REAL NOT NULL, provisioned_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    device_id TEXT NOT NULL, upload_id TEXT NOT NULL, received_at REAL NOT NULL, answer TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (device_id, upload_id));
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, stream_group TEXT NOT NULL,
    stream TEXT NOT NULL, kind TEXT NOT NULL, batch_id TEXT, batch_slice_id TEXT, message_id TEXT,
    chunk_id TEXT, seq INTEGER NOT NULL, stream_seq INTEGER, timestamp REAL, payload BLOB NOT NULL,
    upload_id TEXT NOT NULL, received_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS messages_identity ON messages
    (device_id, stream_group, stream, kind, coalesce(batch_id, ''), message_id, coalesce(chunk_id, ''))
    WHERE message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    device_id TEXT NOT NULL, stream_group TEXT NOT NULL, stream TEXT NOT NULL, batch_id TEXT NOT NULL,
    opened_at REAL NOT NULL, completed_at REAL, completed_by TEXT,
    PRIMARY KEY (device_id, stream_group, stream, batch_id));
CREATE TABLE IF NOT EXISTS desired (
    device_id TEXT PRIMARY KEY, version INTEGER NOT NULL, properties TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reported (
    device_id TEXT PRIMARY KEY, properties TEXT NOT NULL, last_update_id INTEGER NOT NULL);
"""
_KINDS = ("message", "complete_batch", "complete_message")


class IngestDatabase:
    """The ingest service's storage (see the module docstring).

    Args:
        path: SQLite file (created if missing).
        token_ttl_s: Lifetime of the registration tokens it hands out.
        workspace_id: The one workspace this service stands for.
    """

    def __init__(
        self, path: str, *, token_ttl_s: float = 30 * 86400, workspace_id: str = "linebus"
    ) -> None:
        ensure_private(path, create=True)  # it holds every device's registration token
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # the answer to an upload promises durability
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.token_ttl_s = token_ttl_s
        self.workspace_id = workspace_id

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- devices ------------------------------------------------------------------------------

    def provision(self, device_id: str | None) -> dict[str, Any]:
        """Register ``device_id`` (or a new generated id) and hand out a fresh token."""
        device_id = device_id or f"device-{secrets.token_hex(4)}"
        token, now = secrets.token_urlsafe(24), time.time()
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO devices"
                " (device_id, workspace_id, token, expires_at, provisioned_at) VALUES (?, ?, ?, ?, ?)",
                (device_id, self.workspace_id, token, now + self.token_ttl_s, now),
            )
        return {
            "device_id": device_id,
            "workspace_id": self.workspace_id,
            "registration_token": token,
            "expires_at": now + self.token_ttl_s,
        }

    def authenticate(self, token: str) -> str | None:
        """The device a valid, unexpired token belongs to, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT device_id, expires_at FROM devices WHERE token = ?", (token,)
            ).fetchone()
        return row[0] if row is not None and row[1] > time.time() else None

    def refresh(self, device_id: str) -> dict[str, Any]:
        """Replace the device's token with a fresh one."""
        return self.provision(device_id)

    # -- uploads ------------------------------------------------------------------------------

    def ingest(self, device_id: str, upload_id: str, upload: Mapping[str, Any]) -> dict[str, Any]:
        """Store one decoded upload once; a repeated ``upload_id`` gets the first answer, marked duplicate."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT answer FROM uploads WHERE device_id = ? AND upload_id = ?",
                (device_id, upload_id),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE uploads SET deliveries = deliveries + 1 WHERE device_id = ? AND upload_id = ?",
                    (device_id, upload_id),
                )
                return {**json.loads(row[0]), "duplicate": True}
            acked, rejected = [], []
            for message in upload["messages"]:
                reason = self._store_message(
                    conn, device_id, upload_id, upload["stream_group"], upload["stream"], message
                )
                if reason is None:
                    acked.append(message["seq"])
                else:
                    rejected.append({"seq": message["seq"], "reason": reason})
            answer = {"upload_id": upload_id, "acked": acked, "rejected": rejected}
            conn.execute(
                "INSERT INTO uploads (device_id, upload_id, received_at, answer) VALUES (?, ?, ?, ?)",
                (device_id, upload_id, time.time(), json.dumps(answer)),
            )
        return {**answer, "duplicate": False}

    def _store_message(
        self,
        conn: sqlite3.Connection,
        device_id: str,
        upload_id: str,
        group: str,
        stream: str,
        m: Mapping[str, Any],
    ) -> str | None:
        """Store one message (or act on a marker); returns a rejection reason or None."""
        kind = m.get("kind") or "message"
        if kind not in _KINDS:
            return f"unknown kind {kind!r}"
        if kind != "message" and not m.get("batch_id"):
            return f"{kind} without batch_id"
        if kind == "complete_message" and not m.get("message_id"):
            return "complete_message without message_id"
        if m.get("batch_id"):
            self._open_batch(conn, device_id, group, stream, m["batch_id"])
        if kind == "complete_batch":
            self._close_batch(conn, device_id, group, stream, m["batch_id"], "complete_batch")
            return None
        payload = m["payload"]
        if kind == "complete_message":
            chunks = conn.execute(
                "SELECT payload FROM messages"
                " WHERE device_id = ? AND stream_group = ? AND stream = ? AND batch_id = ?"
                " AND message_id = ? AND chunk_id IS NOT NULL ORDER BY id",
                (device_id, group, stream, m["batch_id"], m["message_id"]),
            ).fetchall()
            payload, kind = b"".join(bytes(c[0]) for c in chunks), "message"
        # OR IGNORE: a message already stored (same stream and ids) is acked, not stored again.
        conn.execute(
            "INSERT OR IGNORE INTO messages (device_id, stream_group, stream, kind, batch_id,"
            " batch_slice_id, message_id, chunk_id, seq, stream_seq, timestamp, payload, upload_id,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device_id,
                group,
                stream,
                kind,
                m.get("batch_id"),
                m.get("batch_slice_id"),
                m.get("message_id"),
                m.get("chunk_id") if m.get("kind") != "complete_message" else None,
                m["seq"],
                m.get("stream_seq"),
                m.get("timestamp"),
                payload,
                upload_id,
                time.time(),
            ),
        )
        return None

    def _open_batch(
        self, conn: sqlite3.Connection, device_id: str, group: str, stream: str, batch_id: str
    ) -> None:
        """One open batch per stream: a new batch id completes the previous one (§6.1)."""
        key = (device_id, group, stream)
        exists = conn.execute(
            "SELECT 1 FROM batches WHERE device_id = ? AND stream_group = ? AND stream = ? AND batch_id = ?",
            (*key, batch_id),
        ).fetchone()
        if exists:
            return
        conn.execute(
            "UPDATE batches SET completed_at = ?, completed_by = 'next_batch'"
            " WHERE device_id = ? AND stream_group = ? AND stream = ? AND completed_at IS NULL",
            (time.time(), *key),
        )
        conn.execute(
            "INSERT INTO batches (device_id, stream_group, stream, batch_id, opened_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (*key, batch_id, time.time()),
        )

    def _close_batch(
        self,
        conn: sqlite3.Connection,
        device_id: str,
        group: str,
        stream: str,
        batch_id: str,
        why: str,
    ) -> None:
        conn.execute(
            "UPDATE batches SET completed_at = ?, completed_by = ?"
            " WHERE device_id = ? AND stream_group = ? AND stream = ? AND batch_id = ?"
            " AND completed_at IS NULL",
            (time.time(), why, device_id, group, stream, batch_id),
        )

    # -- twin ---------------------------------------------------------------------------------

    def desired(self, device_id: str) -> dict[str, Any]:
        """The device's desired properties (version 0 and no values until an operator sets some)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT version, properties FROM desired WHERE device_id = ?", (device_id,)
            ).fetchone()
        return (
            {"version": 0, "values": {}}
            if row is None
            else {"version": row[0], "values": json.loads(row[1])}
        )

    def set_desired(self, device_id: str, values: Mapping[str, Any]) -> int:
        """Replace the desired properties; returns the new version (one more than the last)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO desired (device_id, version, properties) VALUES (?, 1, ?) "
                "ON CONFLICT (device_id)"
                " DO UPDATE SET version = version + 1, properties = excluded.properties",
                (device_id, json.dumps(dict(values))),
            )
            return int(
                conn.execute(
                    "SELECT version FROM desired WHERE device_id = ?", (device_id,)
                ).fetchone()[0]
            )

    def report(self, device_id: str, updates: Sequence[Mapping[str, Any]]) -> list[int]:
        """Merge reported patches with ids above the last applied one; ack every id given."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT properties, last_update_id FROM reported WHERE device_id = ?", (device_id,)
            ).fetchone()
            properties, last = ({}, 0) if row is None else (json.loads(row[0]), row[1])
            for update in updates:
                if int(update["id"]) > last:  # a resent patch is not applied twice
                    properties, last = merge_patch(properties, update["patch"]), int(update["id"])
            conn.execute(
                "INSERT OR REPLACE INTO reported (device_id, properties, last_update_id) VALUES (?, ?, ?)",
                (device_id, json.dumps(properties), last),
            )
        return [int(u["id"]) for u in updates]

    def reported(self, device_id: str) -> dict[str, Any]:
        """The device's merged reported properties."""
        with self._lock:
            row = self._conn.execute(
                "SELECT properties FROM reported WHERE device_id = ?", (device_id,)
            ).fetchone()
        return {} if row is None else dict(json.loads(row[0]))

    # -- operator views -----------------------------------------------------------------------

    def messages(self, device_id: str) -> list[dict[str, Any]]:
        """Every stored message of a device in arrival order (payloads as bytes)."""
        columns = (
            "stream_group",
            "stream",
            "kind",
            "batch_id",
            "batch_slice_id",
            "message_id",
            "chunk_id",
            "seq",
            "stream_seq",
            "timestamp",
            "payload",
            "upload_id",
        )
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(columns)} FROM messages WHERE device_id = ? ORDER BY id",
                (device_id,),
            ).fetchall()
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def batches(self, device_id: str) -> list[dict[str, Any]]:
        """The device's batches, oldest first, with how each was completed."""
        columns = ("stream_group", "stream", "batch_id", "completed_by")
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(columns)} FROM batches WHERE device_id = ? ORDER BY opened_at",
                (device_id,),
            ).fetchall()
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def stats(self) -> dict[str, int]:
        """Totals: devices, uploads, repeated deliveries of uploads, messages stored."""
        with self._lock:
            devices = self._conn.execute("SELECT count(*) FROM devices").fetchone()[0]
            uploads, deliveries = self._conn.execute(
                "SELECT count(*), coalesce(sum(deliveries), 0) FROM uploads"
            ).fetchone()
            messages = self._conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        return {
            "devices": devices,
            "uploads": uploads,
            "duplicate_uploads": deliveries - uploads,
            "messages": messages,
        }
