"""The telemetry store: schema and migration, refusal of foreign/corrupt/newer files, dedup,
quota policies, history queries, uploads, twin and registration persistence."""

from __future__ import annotations

import random
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.telemetry.model import (
    DEFAULT_STREAM_GROUP,
    Ack,
    Compression,
    DesiredProperties,
    MessageKind,
    OutgoingMessage,
    OverflowPolicy,
    Registration,
    StoredMessage,
    validate_properties,
)
from actors.telemetry.schema import APPLICATION_ID, SCHEMA_VERSION, open_database
from actors.telemetry.store import (
    BLOCK_SPAN,
    EVICTED_FOR_QUOTA,
    READINGS_PER_STATEMENT,
    REJECTED_QUOTA,
    REJECTED_UPSTREAM,
    QuotaExceeded,
    TelemetryStore,
)
from bus.errors import InvalidArguments, StorageError


def msg(i: int, *, stream: str = "s", size: int = 10, **ids: object) -> OutgoingMessage:
    """Message number ``i`` with a ``size``-byte payload and timestamp ``1000 + i``."""
    return OutgoingMessage.create(
        bytes([i % 256]) * size, stream=stream, timestamp=1000.0 + i, **ids
    )  # type: ignore[arg-type]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "telemetry.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[TelemetryStore]:
    with TelemetryStore.open(str(db_path)) as opened:
        yield opened


def forward_all(store: TelemetryStore) -> None:
    """Claim and acknowledge every pending message, as the forwarder would."""
    while (upload := store.claim_upload(max_messages=1000, max_bytes=10**9)) is not None:
        store.complete_upload(upload.upload_id, [m.seq for m in upload.messages])


class TestSchema:
    def test_new_file_is_marked_versioned_and_in_wal_mode(
        self, store: TelemetryStore, db_path: Path
    ) -> None:
        """A fresh store carries our application id, the current version, and WAL journaling."""
        conn = sqlite3.connect(db_path)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()

    def test_new_store_and_its_journals_are_private(
        self, store: TelemetryStore, db_path: Path
    ) -> None:
        """The store holds the provisioning and registration tokens: it is created 0600, and
        SQLite's -wal and -shm files take the same mode (issue 10)."""
        store.append(msg(1))
        files = [db_path, *(db_path.with_name(db_path.name + s) for s in ("-wal", "-shm"))]
        assert all(path.exists() for path in files)
        assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}

    def test_existing_open_store_is_repaired(self, db_path: Path) -> None:
        """A store left 0644 by an older version is brought to 0600 (journals too) on open."""
        with TelemetryStore.open(str(db_path)) as opened:
            opened.append(msg(1))
        for path in (db_path, db_path.with_name(db_path.name + "-wal")):
            if path.exists():
                path.chmod(0o644)
        with TelemetryStore.open(str(db_path)) as opened:
            assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
            wal = db_path.with_name(db_path.name + "-wal")
            assert not wal.exists() or stat.S_IMODE(wal.stat().st_mode) == 0o600
            assert opened.pending_count() == 1

    def test_old_version_is_migrated_with_its_data(self, db_path: Path) -> None:
        """A version-1 file (no twin tables) opens migrated to the current version, messages kept."""
        old = open_database(db_path, target_version=1)
        old.conn.execute(
            "INSERT INTO messages (stream_group, stream, stream_seq, kind, compression, timestamp, "
            "payload, size) "
            "VALUES ('g', 's', 1, 'message', 0, 1.0, x'01', 65)"
        )
        old.conn.execute("INSERT INTO streams VALUES ('g', 's', 1)")
        old.close()
        with TelemetryStore.open(str(db_path)) as store:
            assert store.stats()["schema_version"] == SCHEMA_VERSION
            assert [m.payload for m in store.history("g", "s")] == [b"\x01"]
            assert (
                store.append(OutgoingMessage.create(b"x", stream_group="g", stream="s")).stream_seq
                == 2
            )
            assert not store.any_pending_reported_updates()  # table created by the migration

    def test_newer_version_is_refused_untouched(self, db_path: Path) -> None:
        """A file written by a newer linebus raises StorageError and is left byte for byte."""
        TelemetryStore.open(str(db_path)).close()
        conn = sqlite3.connect(db_path)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        conn.close()
        before = db_path.read_bytes()
        with pytest.raises(StorageError, match="newer than this linebus supports"):
            TelemetryStore.open(str(db_path))
        assert db_path.read_bytes() == before

    def test_garbage_file_is_refused_untouched(self, db_path: Path) -> None:
        """A file that is not SQLite is not overwritten."""
        db_path.write_bytes(b"this is not a database at all" * 100)
        before = db_path.read_bytes()
        with pytest.raises(StorageError, match="not an SQLite database"):
            TelemetryStore.open(str(db_path))
        assert db_path.read_bytes() == before

    def test_corrupt_pages_are_refused_untouched(self, db_path: Path) -> None:
        """Damaged pages inside a real store raise StorageError instead of a silent wipe."""
        with TelemetryStore.open(str(db_path)) as store:
            store.append_many([msg(i, size=500) for i in range(200)])
        data = bytearray(db_path.read_bytes())
        page = 4096
        data[2 * page : 6 * page] = b"\xa5" * (4 * page)
        db_path.write_bytes(bytes(data))
        with pytest.raises(StorageError, match="corrupt"):
            TelemetryStore.open(str(db_path))
        assert db_path.read_bytes() == bytes(data)

    def test_other_programs_database_is_refused(self, db_path: Path) -> None:
        """An SQLite file with someone else's tables is not migrated into."""
        conn = sqlite3.connect(db_path)
        conn.execute("CREATE TABLE invoices (id INTEGER)")
        conn.close()
        with pytest.raises(StorageError, match="not a linebus telemetry store"):
            TelemetryStore.open(str(db_path))

    def test_second_opener_is_refused(self, store: TelemetryStore, db_path: Path) -> None:
        """One writer per file: a second open fails while the first is open, works after close."""
        with pytest.raises(StorageError, match="in use"):
            TelemetryStore.open(str(db_path))
        store.close()
        TelemetryStore.open(str(db_path)).close()


class TestAppend:
    def test_acks_carry_global_and_per_stream_sequence(self, store: TelemetryStore) -> None:
        """seq counts every row; stream_seq counts within each stream."""
        acks = store.append_many([msg(1, stream="a"), msg(2, stream="b"), msg(3, stream="a")])
        assert [(a.seq, a.stream_seq, a.duplicate) for a in acks] == [
            (1, 1, False),
            (2, 1, False),
            (3, 2, False),
        ]

    def test_sequence_survives_reopen(self, db_path: Path) -> None:
        """Acked messages are durable and numbering continues after a reopen."""
        with TelemetryStore.open(str(db_path)) as store:
            store.append_many([msg(i) for i in range(3)])
        with TelemetryStore.open(str(db_path)) as store:
            assert store.append(msg(9)).stream_seq == 4
            assert store.pending_count() == 4

    def test_duplicate_message_id_is_stored_once(self, store: TelemetryStore) -> None:
        """The same (stream, batch, message id) is stored once, in one call or across calls."""
        first, again_in_call = store.append_many(
            [msg(1, message_id="m", batch_id="b"), msg(2, message_id="m", batch_id="b")]
        )
        later = store.append(msg(3, message_id="m", batch_id="b"))
        assert not first.duplicate and again_in_call.duplicate and later.duplicate
        assert again_in_call.seq == later.seq == first.seq
        assert store.pending_count() == 1
        assert store.stats()["duplicates"] == 2

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ({"message_id": "m", "batch_id": "b1"}, {"message_id": "m", "batch_id": "b2"}),
            ({"message_id": "m", "chunk_id": "1"}, {"message_id": "m", "chunk_id": "2"}),
            ({}, {}),
            ({"message_id": "m", "stream": "x"}, {"message_id": "m", "stream": "y"}),
        ],
    )
    def test_different_identities_are_both_stored(
        self, store: TelemetryStore, a: dict[str, str], b: dict[str, str]
    ) -> None:
        """Other batch, other chunk, other stream, or no message id at all: not a duplicate."""
        acks = store.append_many([msg(1, **a), msg(2, **b)])  # type: ignore[arg-type]
        assert [ack.duplicate for ack in acks] == [False, False]

    def test_completion_markers_need_their_ids(self) -> None:
        """Completion markers without the ids they complete are refused before any I/O."""
        with pytest.raises(InvalidArguments):
            OutgoingMessage.create(b"", kind=MessageKind.COMPLETE_BATCH)
        with pytest.raises(InvalidArguments):
            OutgoingMessage.create(b"", batch_id="b", kind=MessageKind.COMPLETE_MESSAGE)


class TestQuota:
    def test_reject_new_refuses_the_whole_append_and_counts_it(self, db_path: Path) -> None:
        """reject_new: an append that does not fit stores nothing and is counted per message."""
        with TelemetryStore.open(
            str(db_path), quota_bytes=1000, overflow=OverflowPolicy.REJECT_NEW
        ) as store:
            store.append_many(
                [msg(i, size=100) for i in range(5)]
            )  # 5 x (100 + overhead) = 835 bytes
            with pytest.raises(QuotaExceeded) as caught:
                store.append_many([msg(10, size=10), msg(11, size=100)])
            assert (
                isinstance(caught.value, StorageError)
                and caught.value.details["policy"] == "reject_new"
            )
            assert store.pending_count() == 5
            forward_all(store)
            with pytest.raises(QuotaExceeded):
                store.append(msg(12, size=100))  # forwarded history is kept under reject_new
            assert store.stats()["drops"] == {REJECTED_QUOTA: 3}
            assert store.append(msg(13, size=10)).stream_seq == 6  # numbering has no gap

    def test_evict_forwarded_drops_oldest_forwarded_first(self, db_path: Path) -> None:
        """evict_forwarded: room is made from the oldest forwarded rows; pending rows are kept."""
        with TelemetryStore.open(
            str(db_path), quota_bytes=1000, overflow=OverflowPolicy.EVICT_FORWARDED
        ) as store:
            store.append_many([msg(i, size=100) for i in range(5)])
            forward_all(store)
            store.append_many([msg(5, size=100), msg(6, size=100)])
            kept = [m.stream_seq for m in store.history("default", "s")]
            assert kept == [3, 4, 5, 6, 7]
            assert store.stats()["drops"] == {EVICTED_FOR_QUOTA: 2}

    def test_evict_forwarded_rejects_when_only_pending_remain(self, db_path: Path) -> None:
        """Pending messages are never evicted: with nothing forwarded, the append is refused."""
        with TelemetryStore.open(
            str(db_path), quota_bytes=1000, overflow=OverflowPolicy.EVICT_FORWARDED
        ) as store:
            store.append_many([msg(i, size=100) for i in range(5)])
            with pytest.raises(QuotaExceeded):
                store.append(msg(5, size=100))
            assert store.pending_count() == 5
            assert store.stats()["drops"] == {REJECTED_QUOTA: 1}


class TestHistory:
    @pytest.fixture
    def filled(self, store: TelemetryStore) -> TelemetryStore:
        store.append_many([msg(i, stream="a" if i % 2 else "b") for i in range(20)])
        return store

    def test_by_sequence_range(self, filled: TelemetryStore) -> None:
        """Inclusive stream_seq bounds, in order, one stream only."""
        rows = filled.history("default", "a", from_seq=3, to_seq=5)
        assert [(r.stream, r.stream_seq, r.timestamp) for r in rows] == [
            ("a", 3, 1005.0),
            ("a", 4, 1007.0),
            ("a", 5, 1009.0),
        ]

    def test_by_time_range_and_limit(self, filled: TelemetryStore) -> None:
        """Inclusive timestamp bounds and a row limit."""
        rows = filled.history("default", "b", since=1004.0, until=1012.0)
        assert [r.timestamp for r in rows] == [1004.0, 1006.0, 1008.0, 1010.0, 1012.0]
        assert len(filled.history("default", "b", limit=2)) == 2

    def test_states_are_reported(self, filled: TelemetryStore) -> None:
        """History shows which messages were forwarded."""
        forward_all(filled)
        filled.append(msg(99, stream="a"))
        assert {r.state for r in filled.history("default", "a")} == {"forwarded", "pending"}


class TestUploads:
    def test_claimed_messages_are_what_the_dataclass_builds(self, store: TelemetryStore) -> None:
        """Upload rows (built without StoredMessage.__init__) equal, hash and repr as built ones."""
        store.append(OutgoingMessage.create(b"p", stream="s", batch_id="b", message_id="m"))
        upload = store.claim_upload(max_messages=10, max_bytes=10**6)
        assert upload is not None
        (claimed,) = upload.messages
        built = StoredMessage(
            seq=1,
            stream_group=DEFAULT_STREAM_GROUP,
            stream="s",
            stream_seq=1,
            message_id="m",
            batch_id="b",
            batch_slice_id=None,
            chunk_id=None,
            kind=MessageKind.MESSAGE,
            compression=Compression.UNCOMPRESSED,
            timestamp=claimed.timestamp,
            payload=b"p",
            state="pending",
        )
        assert claimed == built and hash(claimed) == hash(built) and repr(claimed) == repr(built)
        assert type(claimed.kind) is MessageKind and type(claimed.compression) is Compression

    def test_upload_groups_one_stream_and_respects_limits(self, store: TelemetryStore) -> None:
        """An upload holds the oldest pending stream's next messages, bounded by count and bytes."""
        store.append_many(
            [msg(1, stream="a"), msg(2, stream="b"), msg(3, stream="a"), msg(4, stream="a")]
        )
        upload = store.claim_upload(max_messages=2, max_bytes=10**6)
        assert (
            upload is not None
            and upload.stream == "a"
            and [m.seq for m in upload.messages] == [1, 3]
        )
        store.complete_upload(upload.upload_id, [1, 3])
        by_bytes = store.claim_upload(max_messages=100, max_bytes=5)
        assert by_bytes is not None and [m.seq for m in by_bytes.messages] == [2]  # at least one

    def test_unfinished_upload_is_resent_under_its_id(self, db_path: Path) -> None:
        """After a crash between send and ack, the same upload id and messages come back."""
        with TelemetryStore.open(str(db_path)) as store:
            store.append_many([msg(i, compression=Compression.FASTEST) for i in range(3)])  # type: ignore[arg-type]
            first = store.claim_upload(max_messages=10, max_bytes=10**6)
            store.append(msg(7))
        with TelemetryStore.open(str(db_path)) as store:
            again = store.claim_upload(max_messages=10, max_bytes=10**6)
            assert first is not None and again is not None
            assert (again.upload_id, again.messages, again.compression) == (
                first.upload_id,
                first.messages,
                Compression.FASTEST,
            )

    def test_only_acknowledged_messages_are_settled(self, store: TelemetryStore) -> None:
        """Acked seqs are forwarded, rejected ones counted, the rest go out again in a new upload."""
        store.append_many([msg(i) for i in range(4)])
        upload = store.claim_upload(max_messages=10, max_bytes=10**6)
        assert upload is not None
        assert store.complete_upload(upload.upload_id, [1], {2: "bad"}) == 2
        retry = store.claim_upload(max_messages=10, max_bytes=10**6)
        assert (
            retry is not None
            and retry.upload_id != upload.upload_id
            and [m.seq for m in retry.messages] == [3, 4]
        )
        assert store.pending_count() == 2 and store.pending_count(up_to_seq=2) == 0
        assert store.stats()["drops"] == {REJECTED_UPSTREAM: 1}


class TestTwinAndRegistration:
    def test_desired_latest_version_wins(self, store: TelemetryStore) -> None:
        """An older version never replaces a newer one."""
        assert store.save_desired_properties(DesiredProperties(2, {"rate": 2}))
        assert not store.save_desired_properties(DesiredProperties(1, {"rate": 1}))
        assert store.desired_properties() == DesiredProperties(2, {"rate": 2})

    def test_reported_updates_are_pending_until_marked(self, db_path: Path) -> None:
        """Reported patches persist across reopen and stay pending until acknowledged."""
        with TelemetryStore.open(str(db_path)) as store:
            first = store.add_reported_update({"fw": "1"})
            store.add_reported_update({"fw": "2"})
        with TelemetryStore.open(str(db_path)) as store:
            assert [u.patch for u in store.pending_reported_updates()] == [{"fw": "1"}, {"fw": "2"}]
            store.mark_reported_sent([first])
            assert store.any_pending_reported_updates()
            assert [u.patch for u in store.pending_reported_updates()] == [{"fw": "2"}]

    def test_registration_round_trip(self, store: TelemetryStore) -> None:
        """The registration is stored so that a restart works offline."""
        registration = Registration(
            instance_url="http://x",
            device_id="dev-1",
            workspace_id="w",
            registration_token="t",
            expires_at=2.0,
            provisioning_token="p",
        )
        assert store.registration() is None
        store.save_registration(registration)
        assert store.registration() == registration
        assert registration.valid_at(1.0) and not registration.valid_at(2.0)

    @pytest.mark.parametrize(
        "bad",
        [
            {"a.b": 1},
            {"$v": 1},
            {"a": object()},
            {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}},
        ],
    )
    def test_property_rules(self, bad: dict[str, object]) -> None:
        """Keys without '.'/'$', JSON values only, at most 10 levels."""
        with pytest.raises(InvalidArguments):
            validate_properties(bad)
        assert validate_properties({"a": {"b": [1, "x", None, True]}}) == {
            "a": {"b": [1, "x", None, True]}
        }


# --- schema version 3: migration of a version-2 file ---------------------------------------------

_V2_INSERT = (
    "INSERT INTO messages (seq, stream_group, stream, stream_seq, message_id, batch_id, "
    "batch_slice_id, chunk_id, kind, "
    "compression, timestamp, payload, size, state, upload_id, forwarded_at) VALUES (?, ?, ?, ?, ?, "
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# seq, group, stream, stream_seq, message_id, batch_id, batch_slice_id, chunk_id, kind, compression,
# timestamp, payload, size, state, upload_id, forwarded_at
_V2_ROWS = [
    (
        1,
        "g",
        "a",
        1,
        None,
        None,
        None,
        None,
        "message",
        0,
        10.0,
        b"a1",
        101,
        1,
        "u-old",
        50.0,
    ),  # forwarded
    (
        2,
        "g",
        "b",
        1,
        "m1",
        "b1",
        "sl1",
        "c1",
        "message",
        2,
        11.0,
        b"b1",
        102,
        0,
        "up-1",
        None,
    ),  # claimed, not acked
    (
        3,
        "g",
        "b",
        2,
        "m2",
        "b1",
        None,
        None,
        "message",
        2,
        12.0,
        b"b2",
        103,
        0,
        "up-1",
        None,
    ),  # claimed, not acked
    (4, "g", "a", 2, None, "b9", None, None, "complete_batch", 0, 13.0, b"", 104, 0, None, None),
    (
        5,
        "g",
        "a",
        3,
        "mm",
        "b9",
        None,
        None,
        "complete_message",
        0,
        14.0,
        b"",
        105,
        2,
        None,
        51.0,
    ),  # rejected upstream
    (
        6,
        "g",
        "a",
        4,
        None,
        None,
        None,
        None,
        "message",
        1,
        9.0,
        b"a4",
        106,
        0,
        None,
        None,
    ),  # older timestamp
    (
        7,
        "g",
        "e",
        1,
        None,
        None,
        None,
        None,
        "message",
        0,
        15.0,
        b"e1",
        107,
        1,
        None,
        52.0,
    ),  # deleted below
    (
        8,
        "g",
        "a",
        5,
        None,
        None,
        None,
        None,
        "message",
        0,
        16.0,
        b"a5",
        108,
        1,
        None,
        53.0,
    ),  # deleted below
]
_V2_STATES = {0: "pending", 1: "forwarded", 2: "rejected"}


def _expected_v2(seq: int) -> StoredMessage:
    """The StoredMessage that row ``seq`` of _V2_ROWS must come back as."""
    row = next(r for r in _V2_ROWS if r[0] == seq)
    (
        seq,
        group,
        stream,
        stream_seq,
        message_id,
        batch_id,
        slice_id,
        chunk_id,
        kind,
        compression,
        ts,
        payload,
        _size,
        state,
    ) = row[:14]
    return StoredMessage(
        seq=seq,
        stream_group=group,
        stream=stream,
        stream_seq=stream_seq,
        message_id=message_id,
        batch_id=batch_id,
        batch_slice_id=slice_id,
        chunk_id=chunk_id,
        kind=MessageKind(kind),
        compression=Compression(compression),
        timestamp=ts,
        payload=payload,
        state=_V2_STATES[state],
    )


def build_v2_file(path: Path) -> None:
    """A version-2 store: two live streams, a forwarded row, a claimed upload, completion markers,
    a rejected row, a stream whose only row was evicted, and sqlite_sequence (8) above max(seq) (6)."""
    old = open_database(path, target_version=2)
    conn = old.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.executemany(_V2_INSERT, _V2_ROWS)
    conn.executemany(
        "INSERT INTO streams VALUES (?, ?, ?)", [("g", "a", 5), ("g", "b", 2), ("g", "e", 1)]
    )
    conn.executemany(
        "INSERT INTO counters VALUES (?, ?)",
        [("forwarded", 3), (EVICTED_FOR_QUOTA, 2), ("duplicate", 4)],
    )
    conn.execute(
        "DELETE FROM messages WHERE seq IN (7, 8)"
    )  # evicted: their numbers must never come back
    assert (
        conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()[0] == 8
    )
    assert conn.execute("SELECT max(seq) FROM messages").fetchone()[0] == 6
    old.close()


class TestMigrationToV3:
    def test_schema_version_is_3(self) -> None:
        """This code writes schema version 3."""
        assert SCHEMA_VERSION == 3

    def test_v2_rows_come_back_unchanged(self, db_path: Path) -> None:
        """Every v2 row is in history with its seq, stream_seq, ids, kind, compression, timestamp,
        state and payload.
        """
        build_v2_file(db_path)
        with TelemetryStore.open(str(db_path)) as store:
            assert store.history("g", "a") == [_expected_v2(s) for s in (1, 4, 5, 6)]
            assert store.history("g", "b") == [_expected_v2(s) for s in (2, 3)]
            assert store.history("g", "e") == []
            assert store.stats()["schema_version"] == 3
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
            assert conn.execute("SELECT last_seq FROM sequence").fetchone()[0] == 8
            assert (
                conn.execute(
                    "SELECT count(*) FROM sqlite_sequence WHERE name = 'messages'"
                ).fetchone()[0]
                == 0
            )
            kinds = dict(conn.execute("SELECT seq, kind FROM messages"))
            assert kinds == {1: 0, 2: 0, 3: 0, 4: 1, 5: 2, 6: 0}
            streams = {
                (g, s): last
                for g, s, last in conn.execute("SELECT stream_group, stream, last_seq FROM streams")
            }
            assert streams == {("g", "a"): 5, ("g", "b"): 2, ("g", "e"): 1}
        finally:
            conn.close()

    def test_numbering_is_never_reused(self, db_path: Path) -> None:
        """last_seq() is the old sqlite_sequence value (8, above max(seq)), and new appends continue
        both numberings.
        """
        build_v2_file(db_path)
        with TelemetryStore.open(str(db_path)) as store:
            assert store.last_seq() == 8
            acks = store.append_many(
                [
                    OutgoingMessage.create(b"a6", stream_group="g", stream="a", timestamp=20.0),
                    OutgoingMessage.create(b"e2", stream_group="g", stream="e", timestamp=21.0),
                    OutgoingMessage.create(b"n1", stream_group="g", stream="new", timestamp=22.0),
                ]
            )
            assert [(a.seq, a.stream_seq, a.duplicate) for a in acks] == [
                (9, 6, False),
                (10, 2, False),
                (11, 1, False),
            ]
            assert [
                (a.seq, a.stream_seq)
                for a in store.append_payloads("g", "b", [b"b3", b"b4"], timestamp=23.0).acks()
            ] == [(12, 3), (13, 4)]
            assert store.last_seq() == 13
        with TelemetryStore.open(str(db_path)) as store:
            assert store.last_seq() == 13
            assert (
                store.append(OutgoingMessage.create(b"a7", stream_group="g", stream="a")).stream_seq
                == 7
            )

    def test_identity_index_survives_the_migration(self, db_path: Path) -> None:
        """A message id stored under v2 is still recognised as a duplicate, with the v2 row's numbers."""
        build_v2_file(db_path)
        with TelemetryStore.open(str(db_path)) as store:
            again = OutgoingMessage.create(
                b"other",
                stream_group="g",
                stream="b",
                message_id="m1",
                batch_id="b1",
                chunk_id="c1",
            )
            marker = OutgoingMessage.create(
                b"",
                stream_group="g",
                stream="a",
                batch_id="b9",
                message_id="mm",
                kind=MessageKind.COMPLETE_MESSAGE,
            )
            acks = store.append_many([again, marker])
            assert acks == [Ack(2, 1, duplicate=True), Ack(5, 3, duplicate=True)]
            assert store.last_seq() == 8

    def test_claimed_upload_is_resent_under_its_id(self, db_path: Path) -> None:
        """The upload claimed under v2 and never acked comes back first, with the same id and messages."""
        build_v2_file(db_path)
        with TelemetryStore.open(str(db_path)) as store:
            upload = store.claim_upload(max_messages=100, max_bytes=10**6)
            assert upload is not None
            assert (upload.upload_id, upload.stream_group, upload.stream, upload.compression) == (
                "up-1",
                "g",
                "b",
                Compression.SMALLEST_SIZE,
            )
            assert upload.messages == (_expected_v2(2), _expected_v2(3))
            assert store.complete_upload("up-1", [2, 3]) == 2
            following = store.claim_upload(max_messages=100, max_bytes=10**6)
            assert (
                following is not None
                and following.upload_id != "up-1"
                and [m.seq for m in following.messages] == [4]
            )

    def test_counts_match_the_v2_rows(self, db_path: Path) -> None:
        """stats(), pending_count() and oldest_pending_seq() after migration count the v2 rows by state."""
        build_v2_file(db_path)
        with TelemetryStore.open(str(db_path)) as store:
            stats = store.stats()
            assert (stats["pending"], stats["forwarded"], stats["rejected"]) == (3 + 1, 1, 1)
            assert stats["bytes_used"] == sum(r[12] for r in _V2_ROWS if r[0] <= 6)
            assert (
                stats["forwarded_total"] == 3
                and stats["duplicates"] == 4
                and stats["drops"] == {EVICTED_FOR_QUOTA: 2}
            )
            assert store.pending_count() == 4 and store.pending_count(up_to_seq=3) == 2
            assert store.oldest_pending_seq() == 2

    def test_time_history_works_on_migrated_rows(self, db_path: Path) -> None:
        """Time bounds find migrated rows (one summary per stream) and rows appended after the migration."""
        build_v2_file(db_path)
        with TelemetryStore.open(str(db_path)) as store:
            assert [m.seq for m in store.history("g", "a", since=9.0, until=13.0)] == [1, 4, 6]
            assert [m.seq for m in store.history("g", "a", since=13.5)] == [5]
            store.append_payloads(
                "g", "a", [b"late"], timestamp=5.0
            )  # older than every migrated row
            assert [m.seq for m in store.history("g", "a", until=9.5)] == [6, 9]
            assert store.history("g", "a", since=14.5, until=100.0) == []

    def test_stream_without_a_streams_row_gets_its_numbering_from_its_rows(
        self, db_path: Path
    ) -> None:
        """Rows of a stream missing from the v2 streams table are migrated and its numbering continues
        after them.
        """
        old = open_database(db_path, target_version=2)
        old.conn.executemany(
            _V2_INSERT,
            [
                (
                    1,
                    "g",
                    "orphan",
                    1,
                    None,
                    None,
                    None,
                    None,
                    "message",
                    0,
                    1.0,
                    b"o1",
                    70,
                    0,
                    None,
                    None,
                ),
                (
                    2,
                    "g",
                    "orphan",
                    2,
                    None,
                    None,
                    None,
                    None,
                    "message",
                    0,
                    2.0,
                    b"o2",
                    70,
                    0,
                    None,
                    None,
                ),
            ],
        )
        old.close()
        with TelemetryStore.open(str(db_path)) as store:
            assert [m.payload for m in store.history("g", "orphan")] == [b"o1", b"o2"]
            assert store.append(
                OutgoingMessage.create(b"o3", stream_group="g", stream="orphan")
            ) == Ack(3, 3)


# --- append_payloads -----------------------------------------------------------------------------


def reading(
    payload: bytes, stream: str, *, ts: float, compression: Compression = Compression.UNCOMPRESSED
) -> OutgoingMessage:
    """A plain reading of group ``g`` as append_many takes it."""
    return OutgoingMessage.create(
        payload, stream_group="g", stream=stream, compression=compression, timestamp=ts
    )


class TestAppendPayloads:
    def _prefill(self, store: TelemetryStore) -> None:
        """Messages on the same and on other streams, some with ids, before the readings."""
        store.append_many(
            [
                reading(b"x1", "s", ts=1.0),
                reading(b"o1", "other", ts=1.5),
                reading(b"x2", "s", ts=2.0),
            ]
        )
        store.append_many(
            [
                OutgoingMessage.create(
                    b"id", stream_group="g", stream="other", message_id="m", timestamp=3.0
                )
            ]
        )

    def test_same_acks_and_rows_as_append_many(self, tmp_path: Path) -> None:
        """append_payloads gives the acks, rows, bytes and counts append_many gives for the same readings."""
        payloads = [b"", b"r1", b"r2" * 50, bytes(range(256))]
        results = []
        for name, via_payloads in (("many.db", False), ("payloads.db", True)):
            with TelemetryStore.open(str(tmp_path / name)) as store:
                self._prefill(store)
                if via_payloads:
                    acks = store.append_payloads(
                        "g", "s", payloads, compression=Compression.FASTEST, timestamp=7.5
                    ).acks()
                else:
                    acks = store.append_many(
                        [reading(p, "s", ts=7.5, compression=Compression.FASTEST) for p in payloads]
                    )
                after = store.append_many(
                    [reading(b"after", "s", ts=8.0), reading(b"o2", "other", ts=8.0)]
                )
                results.append(
                    (
                        acks,
                        after,
                        store.history("g", "s"),
                        store.history("g", "other"),
                        store.stats(),
                        store.last_seq(),
                    )
                )
        assert results[0] == results[1]
        acks, after, rows = results[1][:3]
        assert [(a.seq, a.stream_seq, a.duplicate) for a in acks] == [
            (5, 3, False),
            (6, 4, False),
            (7, 5, False),
            (8, 6, False),
        ]
        assert [(a.seq, a.stream_seq) for a in after] == [(9, 7), (10, 3)]
        readings = [r for r in rows if 3 <= r.stream_seq <= 6]
        assert [r.payload for r in readings] == payloads
        assert {
            (
                r.kind,
                r.compression,
                r.timestamp,
                r.message_id,
                r.batch_id,
                r.batch_slice_id,
                r.chunk_id,
                r.state,
            )
            for r in readings
        } == {(MessageKind.MESSAGE, Compression.FASTEST, 7.5, None, None, None, None, "pending")}

    def test_more_readings_than_one_statement_holds(self, store: TelemetryStore) -> None:
        """An append larger than READINGS_PER_STATEMENT is split over statements with one run of numbers."""
        n = 2 * READINGS_PER_STATEMENT + 37
        payloads = [i.to_bytes(2, "big") for i in range(n)]
        store.append_payloads("g", "other", [b"x"], timestamp=1.0)
        run = store.append_payloads("g", "big", payloads, timestamp=2.0)
        assert (run.first_seq, run.first_stream_seq, run.count) == (2, 1, n)
        rows = store.history("g", "big", limit=10000)
        assert [(r.seq, r.stream_seq, r.payload) for r in rows] == [
            (2 + i, 1 + i, payloads[i]) for i in range(n)
        ]
        assert store.pending_count() == n + 1 and store.last_seq() == n + 1

    def test_new_stream_and_default_timestamp(self, store: TelemetryStore) -> None:
        """A first append creates the stream at stream_seq 1; without a timestamp the rows get the time
        of the call.
        """
        before = time.time()
        acks = store.append_payloads("g", "fresh", [b"a", b"b", b"c"]).acks()
        after = time.time()
        assert [(a.seq, a.stream_seq) for a in acks] == [(1, 1), (2, 2), (3, 3)]
        rows = store.history("g", "fresh")
        assert len({r.timestamp for r in rows}) == 1 and before <= rows[0].timestamp <= after
        assert {r.compression for r in rows} == {Compression.UNCOMPRESSED}
        assert store.pending_count() == 3 and store.oldest_pending_seq() == 1

    def test_empty_list_writes_nothing(self, store: TelemetryStore, db_path: Path) -> None:
        """An empty list returns an empty run and creates no stream, row or number."""
        store.append_payloads("g", "s", [b"one"], timestamp=1.0)
        stats = store.stats()
        assert store.append_payloads("g", "s", []).acks() == []
        assert store.append_payloads("g", "never", []).count == 0
        assert store.stats() == stats and store.last_seq() == 1
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("SELECT stream FROM streams").fetchall() == [("s",)]
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        finally:
            conn.close()

    @pytest.mark.parametrize(
        "overflow", [OverflowPolicy.REJECT_NEW, OverflowPolicy.EVICT_FORWARDED]
    )
    def test_quota_refusal_is_all_or_nothing_and_counted(
        self, db_path: Path, overflow: OverflowPolicy
    ) -> None:
        """A batch of readings that does not fit stores none of them, counts every one, and leaves no
        gap in numbering.
        """
        with TelemetryStore.open(str(db_path), quota_bytes=1000, overflow=overflow) as store:
            store.append_payloads(
                "g", "s", [b"x" * 100] * 5, timestamp=1.0
            )  # 5 x (100 + 64 + 2) = 830 bytes
            before = (store.stats(), store.last_seq(), store.history("g", "s"))
            with pytest.raises(QuotaExceeded) as caught:
                store.append_payloads("g", "s", [b"y"] * 3 + [b"z" * 100], timestamp=2.0)
            assert (
                caught.value.details["messages"] == 4
                and caught.value.details["reason"] == REJECTED_QUOTA
            )
            stats = store.stats()
            assert stats["drops"] == {REJECTED_QUOTA: 4}
            assert ({**stats, "drops": {}}, store.last_seq(), store.history("g", "s")) == before
            with pytest.raises(QuotaExceeded):
                store.append_payloads("g", "new-stream", [b"w" * 200], timestamp=3.0)
            assert store.history("g", "new-stream") == [] and store.stats()["drops"] == {
                REJECTED_QUOTA: 5
            }
            assert [
                (a.seq, a.stream_seq)
                for a in store.append_payloads("g", "s", [b"fits"], timestamp=4.0).acks()
            ] == [(6, 6)]
            assert [
                (a.seq, a.stream_seq)
                for a in store.append_payloads("g", "new-stream", [b"f"], timestamp=4.0).acks()
            ] == [(7, 1)]

    def test_evict_forwarded_makes_room_for_readings(self, db_path: Path) -> None:
        """Under evict_forwarded, readings evict the oldest forwarded rows and are stored."""
        with TelemetryStore.open(
            str(db_path), quota_bytes=1000, overflow=OverflowPolicy.EVICT_FORWARDED
        ) as store:
            store.append_payloads("g", "s", [b"x" * 100] * 5, timestamp=1.0)
            forward_all(store)
            # 7 x 166 bytes = 1162: one evicted row (166 bytes) brings it under 1000.
            acks = store.append_payloads("g", "s", [b"y" * 100] * 2, timestamp=2.0).acks()
            assert [a.stream_seq for a in acks] == [6, 7]
            assert [m.stream_seq for m in store.history("g", "s")] == [2, 3, 4, 5, 6, 7]
            assert store.stats()["drops"] == {EVICTED_FOR_QUOTA: 1}
            assert store.stats()["bytes_used"] == 6 * 166


# --- in-memory counters against the file ---------------------------------------------------------


def file_view(path: Path) -> dict[str, Any]:
    """What the store file says, read with a separate connection (what a reopen would load)."""
    conn = sqlite3.connect(path)
    try:
        states = dict(
            conn.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall()
        )
        streams = conn.execute(
            "SELECT stream_group, stream, stream_id, last_seq FROM streams"
        ).fetchall()
        return {
            "pending": states.get(0, 0),
            "forwarded": states.get(1, 0),
            "rejected": states.get(2, 0),
            "bytes_used": conn.execute("SELECT coalesce(sum(size), 0) FROM messages").fetchone()[0],
            "last_seq": conn.execute("SELECT last_seq FROM sequence").fetchone()[0],
            "oldest_pending": conn.execute(
                "SELECT min(seq) FROM messages WHERE state = 0"
            ).fetchone()[0],
            "stream_ids": {(g, s): i for g, s, i, _ in streams},
            "stream_last": {i: last for _, _, i, last in streams},
            "max_seq": conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0],
            "max_stream_seq": dict(
                conn.execute(
                    "SELECT stream_id, max(stream_seq) FROM messages GROUP BY stream_id"
                ).fetchall()
            ),
        }
    finally:
        conn.close()


def memory_view(store: TelemetryStore) -> dict[str, Any]:
    """The same facts from the store's in-memory counters (stats, pending_count, last_seq ...)."""
    stats = store.stats()
    return {
        "pending": stats["pending"],
        "forwarded": stats["forwarded"],
        "rejected": stats["rejected"],
        "bytes_used": stats["bytes_used"],
        "last_seq": store.last_seq(),
        "oldest_pending": store.oldest_pending_seq(),
        "stream_ids": dict(store._stream_ids),  # white box: the ids the next append will use
        "stream_last": dict(store._stream_last),
    }


def assert_memory_matches_file(store: TelemetryStore, path: Path, step: str) -> None:
    """The in-memory counters equal the file's, the pending counter equals a count, and numbering is
    ahead of every row.
    """
    on_file = file_view(path)
    in_memory = memory_view(store)
    assert in_memory == {k: on_file[k] for k in in_memory}, f"memory and file differ after {step}"
    assert store.pending_count() == on_file["pending"], step
    assert on_file["last_seq"] >= on_file["max_seq"], step
    for stream_id, top in on_file["max_stream_seq"].items():
        assert on_file["stream_last"][stream_id] >= top, step


def observable(store: TelemetryStore) -> tuple[Any, ...]:
    """Everything a caller can see of the counters."""
    return (
        store.stats(),
        store.pending_count(),
        store.pending_count(up_to_seq=5),
        store.last_seq(),
        store.oldest_pending_seq(),
    )


def ided(
    i: int, stream: str, message_id: str | None, *, size: int = 40, batch_id: str | None = "b"
) -> OutgoingMessage:
    """Message ``i`` of group ``g`` with an optional message id."""
    return OutgoingMessage.create(
        bytes([i % 256]) * size,
        stream_group="g",
        stream=stream,
        message_id=message_id,
        batch_id=batch_id if message_id else None,
        timestamp=100.0 + i,
    )


class TestCountersMatchTheFile:
    def _scenario(
        self, store_path: Path, checkpoint: Callable[[TelemetryStore, str], TelemetryStore]
    ) -> TelemetryStore:
        """Appends, duplicates in and across batches, uploads with acks and rejections, evictions,
        refusals.
        """
        store = TelemetryStore.open(
            str(store_path), quota_bytes=4000, overflow=OverflowPolicy.EVICT_FORWARDED
        )
        store = checkpoint(store, "open")
        store.append_many(
            [ided(i, "a" if i % 2 else "b", f"m{i}" if i % 3 == 0 else None) for i in range(8)]
        )
        store = checkpoint(store, "append_many")
        store.append_payloads("g", "a", [b"r" * 30] * 4, timestamp=50.0)
        store = checkpoint(store, "append_payloads")
        # Duplicate inside one batch, and one of an earlier batch, plus a stream created in this batch.
        acks = store.append_many(
            [
                ided(20, "a", "dup"),
                ided(21, "a", "dup"),
                ided(22, "b", "m0"),
                ided(23, "c", "fresh"),
                ided(24, "a", None),
            ]
        )
        assert [a.duplicate for a in acks] == [False, True, True, False, False]
        assert acks[1].seq == acks[0].seq and acks[2].seq == 1
        store = checkpoint(store, "append with duplicates")
        # The whole batch is duplicates of earlier batches.
        assert all(
            a.duplicate for a in store.append_many([ided(30, "a", "dup"), ided(31, "c", "fresh")])
        )
        store = checkpoint(store, "all-duplicate append")
        upload = store.claim_upload(max_messages=6, max_bytes=10**6)
        assert upload is not None and len(upload.messages) >= 4
        seqs = [m.seq for m in upload.messages]
        assert (
            store.complete_upload(upload.upload_id, seqs[:2], {seqs[2]: "bad", seqs[3]: "worse"})
            == 4
        )
        store = checkpoint(store, "complete_upload with acks and rejections")
        forward_all(store)
        store = checkpoint(store, "forward_all")
        # Fill past the quota: forwarded and rejected rows are evicted oldest first.
        for round_ in range(6):
            store.append_many(
                [
                    ided(
                        100 + 10 * round_ + k,
                        "a" if k % 2 else "d",
                        f"e{round_}-{k}" if k == 0 else None,
                        size=150,
                    )
                    for k in range(3)
                ]
            )
            store = checkpoint(store, f"evicting append {round_}")
        assert store.stats()["drops"].get(EVICTED_FOR_QUOTA, 0) > 0
        # Two forwarded rows to evict, not enough room even so: refusals (one that first hits a
        # duplicate and is redone row by row, one that would create a stream) roll back their
        # evictions too; nothing of them may stay in memory.
        upload = store.claim_upload(max_messages=2, max_bytes=10**6)
        assert upload is not None
        store.complete_upload(upload.upload_id, [m.seq for m in upload.messages])
        store = checkpoint(store, "two forwarded")
        with pytest.raises(QuotaExceeded):
            store.append_many([ided(200, "d", "e0-0", size=150), ided(201, "new", "n", size=3000)])
        store = checkpoint(store, "refused append with a duplicate")
        with pytest.raises(QuotaExceeded):
            store.append_payloads("g", "other-new", [b"p" * 1000] * 4, timestamp=60.0)
        store = checkpoint(store, "refused append_payloads")
        forward_all(store)
        acks = store.append_many(
            [
                ided(300, "new", "n", size=600),
                ided(301, "new", "n", size=600),
                ided(302, "a", None, size=600),
            ]
        )
        assert [a.duplicate for a in acks] == [False, True, False]
        store = checkpoint(store, "evicting append with duplicates after refusals")
        store.append_payloads("g", "other-new", [b"q" * 300] * 3, timestamp=61.0)
        store = checkpoint(store, "evicting append_payloads")
        return store

    def test_counters_equal_the_file_at_every_step(self, db_path: Path) -> None:
        """After every kind of write (and refusal) the in-memory counters equal what the file holds."""

        def check(store: TelemetryStore, step: str) -> TelemetryStore:
            assert_memory_matches_file(store, db_path, step)
            return store

        store = self._scenario(db_path, check)
        try:
            before = observable(store)
        finally:
            store.close()
        with TelemetryStore.open(
            str(db_path), quota_bytes=4000, overflow=OverflowPolicy.EVICT_FORWARDED
        ) as reopened:
            assert observable(reopened) == before

    def test_counters_equal_a_reopen_at_every_step(self, db_path: Path) -> None:
        """Closing and reopening after each write gives the same stats, pending count and last seq as
        before the close.
        """

        def reopen(store: TelemetryStore, step: str) -> TelemetryStore:
            before = observable(store)
            store.close()
            reopened = TelemetryStore.open(
                str(db_path), quota_bytes=4000, overflow=OverflowPolicy.EVICT_FORWARDED
            )
            assert observable(reopened) == before, f"counters drifted from the file after {step}"
            return reopened

        self._scenario(db_path, reopen).close()

    def test_oldest_pending_seq(self, store: TelemetryStore) -> None:
        """None when nothing is pending, else the smallest pending seq as uploads settle."""
        assert store.oldest_pending_seq() is None
        store.append_many([msg(i) for i in range(4)])
        assert store.oldest_pending_seq() == 1
        upload = store.claim_upload(max_messages=2, max_bytes=10**6)
        assert upload is not None
        store.complete_upload(upload.upload_id, [1], {2: "bad"})
        assert store.oldest_pending_seq() == 3
        forward_all(store)
        assert store.oldest_pending_seq() is None and store.pending_count() == 0


# --- history by time (stream_blocks) -------------------------------------------------------------


def brute_force(
    store: TelemetryStore, group: str, stream: str, **bounds: Any
) -> list[StoredMessage]:
    """History by filtering every stored row of the stream, without the time summaries."""
    rows = store.history(group, stream, limit=10000)
    since, until = bounds.get("since"), bounds.get("until")
    from_seq, to_seq = bounds.get("from_seq"), bounds.get("to_seq")
    kept = [
        r
        for r in rows
        if (since is None or r.timestamp >= since)
        and (until is None or r.timestamp <= until)
        and (from_seq is None or r.stream_seq >= from_seq)
        and (to_seq is None or r.stream_seq <= to_seq)
    ]
    return kept[: bounds.get("limit", 1000)]


def fill_unordered(store: TelemetryStore, rng: random.Random, appends: int) -> None:
    """Many appends to three streams, batch sizes 1-60, timestamps not monotonic (later appends
    often older), on integer seconds so that half-second ranges can fall between rows."""
    for k in range(appends):
        stream = rng.choice(["a", "a", "b", "c"])
        size = rng.choice([1, 2, 5, 17, 40, 60])
        base = rng.choice([1000, 2000, 3000]) + rng.randrange(0, 900)
        if rng.random() < 0.5:
            store.append_payloads(
                "g", stream, [f"{k}-{j}".encode() for j in range(size)], timestamp=float(base)
            )
        else:
            store.append_many(
                [
                    OutgoingMessage.create(
                        f"{k}-{j}".encode(),
                        stream_group="g",
                        stream=stream,
                        timestamp=float(base + rng.randrange(-300, 300)),
                    )
                    for j in range(size)
                ]
            )


def time_queries(rng: random.Random) -> list[dict[str, Any]]:
    """Time ranges (some matching nothing) alone and with sequence bounds and limits."""
    queries: list[dict[str, Any]] = [
        {"since": 1500.0, "until": 2500.0},
        {"since": 2950.0},
        {"until": 1200.0},
        {"since": 0.0, "until": 10**6},
        {"since": 10**6},
        {"until": 0.0},
        {"since": 2000.5, "until": 2000.7},
        {"since": 2500.0, "until": 1500.0},
        {"since": 1000.0, "until": 1000.0},
        {"since": 1700.0, "until": 2300.0, "from_seq": 50, "to_seq": 400},
        {"since": 1000.0, "from_seq": 300},
        {"until": 2800.0, "to_seq": 120},
        {"since": 1400.0, "until": 2600.0, "limit": 7},
        {"since": 900.0, "until": 3400.0, "from_seq": 100, "to_seq": 90},
        {"since": 1200.0, "from_seq": 10**6},
        {"since": 2200.0, "until": 2900.0, "from_seq": 2, "to_seq": 700, "limit": 3},
    ]
    for _ in range(25):
        low = rng.uniform(600, 3600)
        query: dict[str, Any] = {"since": low, "until": low + rng.choice([0.5, 3, 40, 400, 2000])}
        if rng.random() < 0.4:
            query["from_seq"] = rng.randrange(1, 300)
        if rng.random() < 0.4:
            query["to_seq"] = rng.randrange(100, 900)
        if rng.random() < 0.3:
            query["limit"] = rng.randrange(1, 50)
        queries.append(query)
    return queries


def assert_time_queries_match(store: TelemetryStore, rng: random.Random) -> int:
    """Every query on every stream equals brute force; returns how many rows they found."""
    found = 0
    for stream in ("a", "b", "c", "missing"):
        for query in time_queries(rng):
            expected = brute_force(store, "g", stream, **query)
            assert store.history("g", stream, **query) == expected, (stream, query)
            found += len(expected)
    return found


class TestHistoryByTime:
    def test_time_bounds_equal_brute_force_with_unordered_timestamps(
        self, store: TelemetryStore
    ) -> None:
        """With > 600 messages appended out of time order, since/until (with seq bounds and limits)
        equal a full filter.
        """
        rng = random.Random(1234)
        fill_unordered(store, rng, 60)
        assert store.last_seq() > 600
        assert (
            max(len(store.history("g", s, limit=10000)) for s in "abc") > 2 * BLOCK_SPAN
        )  # several summaries per stream
        assert assert_time_queries_match(store, rng) > 0
        assert (
            store.history("g", "a", since=2000.5, until=2000.7) == []
        )  # between integer timestamps

    def test_time_bounds_after_reopen(self, db_path: Path) -> None:
        """Summaries reloaded from the file (open blocks continued by new appends) still give exact
        answers.
        """
        rng = random.Random(99)
        with TelemetryStore.open(str(db_path)) as store:
            fill_unordered(store, rng, 30)
        with TelemetryStore.open(str(db_path)) as store:
            fill_unordered(store, rng, 30)
            assert store.last_seq() > 600
            assert assert_time_queries_match(store, rng) > 0

    @pytest.mark.parametrize("reopen", [False, True])
    def test_time_bounds_after_eviction(self, db_path: Path, reopen: bool) -> None:
        """After forwarded rows are evicted for the quota (whole summaries and parts of them), time
        queries equal brute force.
        """
        rng = random.Random(7)
        quota = 60_000
        store = TelemetryStore.open(
            str(db_path), quota_bytes=quota, overflow=OverflowPolicy.EVICT_FORWARDED
        )
        try:
            for _round in range(4):
                fill_unordered(store, rng, 15)
                # Forward all but the last few appends' rows, so some summaries keep pending rows.
                while (
                    upload := store.claim_upload(max_messages=37, max_bytes=10**9)
                ) is not None and store.pending_count() > 40:
                    store.complete_upload(upload.upload_id, [m.seq for m in upload.messages])
                if upload is not None:
                    store.complete_upload(upload.upload_id, [])
                if reopen:
                    store.close()
                    store = TelemetryStore.open(
                        str(db_path), quota_bytes=quota, overflow=OverflowPolicy.EVICT_FORWARDED
                    )
                assert_time_queries_match(store, rng)
            assert store.stats()["drops"].get(EVICTED_FOR_QUOTA, 0) > 200
            assert (
                store.history("g", "a", limit=10000)[0].stream_seq > 1
            )  # the oldest rows are gone
            assert assert_time_queries_match(store, rng) > 0
        finally:
            store.close()
