"""Open the telemetry SQLite file: check what it is, refuse what is not ours, migrate what is old.

The schema version is ``PRAGMA user_version`` and the file is marked as ours with
``PRAGMA application_id``. A file that is not SQLite, is corrupt, belongs to another program, or
was written by a newer linebus raises ``StorageError`` *before anything is written to it*: the
store never wipes or "repairs" data it does not understand. Each migration step runs in its own
transaction together with the version bump, so a crash mid-migration leaves the previous version.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import structlog

from bus.errors import StorageError
from bus.security.files import ensure_private

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Database", "make_private", "open_database"]

log = structlog.get_logger()

APPLICATION_ID = 0x4C42544D  # "LBTM": linebus telemetry
_SQLITE_MAGIC = b"SQLite format 3\x00"

_V1 = """
CREATE TABLE registration (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    instance_url TEXT NOT NULL,
    device_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    registration_token TEXT NOT NULL,
    expires_at REAL NOT NULL,
    provisioning_token TEXT NOT NULL
);
CREATE TABLE streams (
    stream_group TEXT NOT NULL,
    stream TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (stream_group, stream)
) WITHOUT ROWID;
-- AUTOINCREMENT: a seq is never reused after eviction, so acks stay unambiguous forever.
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_group TEXT NOT NULL,
    stream TEXT NOT NULL,
    stream_seq INTEGER NOT NULL,
    message_id TEXT,
    batch_id TEXT,
    batch_slice_id TEXT,
    chunk_id TEXT,
    kind TEXT NOT NULL,
    compression INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    upload_id TEXT,
    forwarded_at REAL
);
CREATE UNIQUE INDEX messages_stream_seq ON messages (stream_group, stream, stream_seq);
-- Dedup as the platform does it (reference/spotflow.md §6.1): same stream and ids = same message.
CREATE UNIQUE INDEX messages_identity ON messages
    (stream_group, stream, kind, coalesce(batch_id, ''), message_id, coalesce(chunk_id, ''))
    WHERE message_id IS NOT NULL;
CREATE INDEX messages_pending ON messages (seq) WHERE state = 0;
CREATE INDEX messages_forwarded ON messages (seq) WHERE state <> 0;
CREATE INDEX messages_time ON messages (stream_group, stream, timestamp);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""

_V2 = """
CREATE TABLE desired_properties (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    version INTEGER NOT NULL,
    properties TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE reported_updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patch TEXT NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX reported_pending ON reported_updates (id) WHERE sent_at IS NULL;
"""


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def step(conn: sqlite3.Connection) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)

    return step


# Version 3: streams get integer ids and the message rows and indexes carry the id instead of two
# strings, the message kind is a small integer, the time index is replaced by one summary row per
# stream and transaction (stream_blocks), and the store keeps the last given seq itself instead of
# AUTOINCREMENT's per-row sqlite_sequence update. Same data; every row is copied.
_V3 = """
CREATE TABLE streams_v3 (
    stream_id INTEGER PRIMARY KEY,
    stream_group TEXT NOT NULL,
    stream TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    UNIQUE (stream_group, stream)
);
INSERT INTO streams_v3 (stream_group, stream, last_seq)
    SELECT stream_group, stream, last_seq FROM streams ORDER BY stream_group, stream;
INSERT OR IGNORE INTO streams_v3 (stream_group, stream, last_seq)
    SELECT stream_group, stream, max(stream_seq) FROM messages GROUP BY stream_group, stream;
CREATE TABLE sequence (id INTEGER PRIMARY KEY CHECK (id = 0), last_seq INTEGER NOT NULL);
INSERT INTO sequence (id, last_seq) VALUES (0, max(
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
    coalesce((SELECT max(seq) FROM messages), 0)));
CREATE TABLE messages_v3 (
    seq INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL,
    stream_seq INTEGER NOT NULL,
    message_id TEXT,
    batch_id TEXT,
    batch_slice_id TEXT,
    chunk_id TEXT,
    kind INTEGER NOT NULL,
    compression INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    upload_id TEXT,
    forwarded_at REAL
);
INSERT INTO messages_v3
    SELECT m.seq, s.stream_id, m.stream_seq, m.message_id, m.batch_id, m.batch_slice_id, m.chunk_id,
           CASE m.kind WHEN 'message' THEN 0 WHEN 'complete_batch' THEN 1 ELSE 2 END,
           m.compression, m.timestamp, m.payload, m.size, m.state, m.upload_id, m.forwarded_at
    FROM messages AS m JOIN streams_v3 AS s ON s.stream_group = m.stream_group AND s.stream = m.stream;
-- One row per stream per appending transaction: the time range of a run of stream_seqs, so a
-- history query by time reads a few summaries instead of every message maintaining an index.
CREATE TABLE stream_blocks (
    stream_id INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    min_ts REAL NOT NULL,
    max_ts REAL NOT NULL,
    PRIMARY KEY (stream_id, first_seq)
) WITHOUT ROWID;
INSERT INTO stream_blocks SELECT stream_id, min(stream_seq), max(stream_seq), min(timestamp), max(timestamp)
    FROM messages_v3 GROUP BY stream_id;
DROP TABLE messages;
DROP TABLE streams;
ALTER TABLE streams_v3 RENAME TO streams;
ALTER TABLE messages_v3 RENAME TO messages;
CREATE UNIQUE INDEX messages_stream_seq ON messages (stream_id, stream_seq);
-- Dedup as the platform does it (reference/spotflow.md §6.1). Rows without a message id (plain
-- readings) are not in this index at all, so they pay nothing for it.
CREATE UNIQUE INDEX messages_identity ON messages
    (stream_id, kind, coalesce(batch_id, ''), message_id, coalesce(chunk_id, ''))
    WHERE message_id IS NOT NULL;
CREATE INDEX messages_pending ON messages (seq) WHERE state = 0;
CREATE INDEX messages_forwarded ON messages (seq) WHERE state <> 0;
"""

# MIGRATIONS[n] takes a database from version n to n + 1; never edit a released step, add one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _script(_V1),
    _script(_V2),
    _script(_V3),
)
SCHEMA_VERSION = len(MIGRATIONS)


class Database:
    """An open, checked, migrated store file: its one connection and the lock that makes it ours."""

    def __init__(self, conn: sqlite3.Connection, lock_fd: int, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._lock_fd = lock_fd

    def close(self) -> None:
        """Close the connection (checkpointing the WAL) and release the file lock; idempotent."""
        if self._lock_fd < 0:
            return
        try:
            self.conn.close()
        finally:
            os.close(self._lock_fd)
            self._lock_fd = -1


def open_database(
    path: str | os.PathLike[str], *, target_version: int = SCHEMA_VERSION, check: bool = True
) -> Database:
    """Open (creating if needed) the store at ``path`` and migrate it to ``target_version``.

    Args:
        path: The SQLite file. A ``<path>.lock`` file next to it keeps a second process out.
        target_version: The version to migrate to (tests create old versions with it).
        check: Run ``PRAGMA quick_check`` on an existing file (reads every page once).

    Raises:
        StorageError: The file is not SQLite, is corrupt, is not a linebus telemetry store, has a
            newer schema than this code knows, or is locked by another process.
    """
    path = Path(path)
    _check_magic(path)
    lock_fd = _lock(path)
    try:
        make_private(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        os.close(lock_fd)
        raise StorageError(f"{path}: cannot open: {exc}") from exc
    except BaseException:
        os.close(lock_fd)
        raise
    try:
        _inspect(conn, path, check=check)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: in WAL mode NORMAL may lose the last commits on power loss, and an ack is a promise.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        _migrate(conn, path, target_version)
    except sqlite3.DatabaseError as exc:
        conn.close()
        os.close(lock_fd)
        raise StorageError(f"{path}: corrupt or unreadable database: {exc}") from exc
    except BaseException:
        conn.close()
        os.close(lock_fd)
        raise
    return Database(conn, lock_fd, path)


def make_private(path: Path) -> None:
    """Create the store 0600 before SQLite opens it, or bring an existing one (and its journals)
    to 0600: it holds the provisioning and registration tokens and every reading.

    SQLite gives the ``-wal`` and ``-shm`` files the mode of the database, so a store made private
    before its first connection stays private with its journals.

    Raises:
        StorageError: the file's mode cannot be set (not our file, read-only filesystem).
    """
    try:
        ensure_private(path, create=True)
        for suffix in ("-wal", "-shm"):
            journal = path.with_name(path.name + suffix)
            if journal.exists():
                ensure_private(journal)
    except OSError as exc:
        raise StorageError(f"{path}: cannot make it private (0600): {exc.strerror}") from exc


def _check_magic(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
        head = handle.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            raise StorageError(f"{path}: not an SQLite database (bad header); refusing to touch it")


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"{lock_path}: cannot create lock file: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"{path}: in use by another process (one writer per store)") from exc
    return fd


def _inspect(conn: sqlite3.Connection, path: Path, *, check: bool) -> None:
    """Refuse files that are not ours or are newer, without writing a byte."""
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if application_id not in (0, APPLICATION_ID) or (application_id == 0 and tables):
        raise StorageError(
            f"{path}: not a linebus telemetry store (application_id {application_id:#x})"
        )
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path}: schema version {version} is newer than this linebus supports ({SCHEMA_VERSION}); "
            "upgrade linebus or use another file",
            details={"version": version, "supported": SCHEMA_VERSION},
        )
    if check and tables:
        result = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
        if result != ["ok"]:
            raise StorageError(
                f"{path}: corrupt database: {'; '.join(result)}", details={"check": result}
            )


def _migrate(conn: sqlite3.Connection, path: Path, target_version: int) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for step in range(version, target_version):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[step](conn)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("telemetry_store_migrated", path=str(path), version=step + 1)
