"""The telemetry store: schema and migration, refusal of foreign/corrupt/newer files, dedup,
quota policies, history queries, uploads, twin and registration persistence."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.telemetry.model import (
    Compression,
    DesiredProperties,
    MessageKind,
    OutgoingMessage,
    OverflowPolicy,
    Registration,
    validate_properties,
)
from actors.telemetry.schema import APPLICATION_ID, SCHEMA_VERSION, open_database
from actors.telemetry.store import (
    EVICTED_FOR_QUOTA,
    REJECTED_QUOTA,
    REJECTED_UPSTREAM,
    QuotaExceeded,
    TelemetryStore,
)
from bus.errors import InvalidArguments, StorageError


def msg(i: int, *, stream: str = "s", size: int = 10, **ids: object) -> OutgoingMessage:
    """Message number ``i`` with a ``size``-byte payload and timestamp ``1000 + i``."""
    return OutgoingMessage.create(bytes([i % 256]) * size, stream=stream, timestamp=1000.0 + i, **ids)  # type: ignore[arg-type]


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
    def test_new_file_is_marked_versioned_and_in_wal_mode(self, store: TelemetryStore, db_path: Path) -> None:
        """A fresh store carries our application id, the current version, and WAL journaling."""
        conn = sqlite3.connect(db_path)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()

    def test_old_version_is_migrated_with_its_data(self, db_path: Path) -> None:
        """A version-1 file (no twin tables) opens migrated to the current version, messages kept."""
        old = open_database(db_path, target_version=1)
        old.conn.execute(
            "INSERT INTO messages (stream_group, stream, stream_seq, kind, compression, timestamp, payload, size) "
            "VALUES ('g', 's', 1, 'message', 0, 1.0, x'01', 65)"
        )
        old.conn.execute("INSERT INTO streams VALUES ('g', 's', 1)")
        old.close()
        with TelemetryStore.open(str(db_path)) as store:
            assert store.stats()["schema_version"] == SCHEMA_VERSION
            assert [m.payload for m in store.history("g", "s")] == [b"\x01"]
            assert store.append(OutgoingMessage.create(b"x", stream_group="g", stream="s")).stream_seq == 2
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
        assert [(a.seq, a.stream_seq, a.duplicate) for a in acks] == [(1, 1, False), (2, 1, False), (3, 2, False)]

    def test_sequence_survives_reopen(self, db_path: Path) -> None:
        """Acked messages are durable and numbering continues after a reopen."""
        with TelemetryStore.open(str(db_path)) as store:
            store.append_many([msg(i) for i in range(3)])
        with TelemetryStore.open(str(db_path)) as store:
            assert store.append(msg(9)).stream_seq == 4
            assert store.pending_count() == 4

    def test_duplicate_message_id_is_stored_once(self, store: TelemetryStore) -> None:
        """The same (stream, batch, message id) is stored once, in one call or across calls."""
        first, again_in_call = store.append_many([msg(1, message_id="m", batch_id="b"), msg(2, message_id="m", batch_id="b")])
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
    def test_different_identities_are_both_stored(self, store: TelemetryStore, a: dict[str, str], b: dict[str, str]) -> None:
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
        with TelemetryStore.open(str(db_path), quota_bytes=1000, overflow=OverflowPolicy.REJECT_NEW) as store:
            store.append_many([msg(i, size=100) for i in range(5)])  # 5 x (100 + overhead) = 835 bytes
            with pytest.raises(QuotaExceeded) as caught:
                store.append_many([msg(10, size=10), msg(11, size=100)])
            assert isinstance(caught.value, StorageError) and caught.value.details["policy"] == "reject_new"
            assert store.pending_count() == 5
            forward_all(store)
            with pytest.raises(QuotaExceeded):
                store.append(msg(12, size=100))  # forwarded history is kept under reject_new
            assert store.stats()["drops"] == {REJECTED_QUOTA: 3}
            assert store.append(msg(13, size=10)).stream_seq == 6  # numbering has no gap

    def test_evict_forwarded_drops_oldest_forwarded_first(self, db_path: Path) -> None:
        """evict_forwarded: room is made from the oldest forwarded rows; pending rows are kept."""
        with TelemetryStore.open(str(db_path), quota_bytes=1000, overflow=OverflowPolicy.EVICT_FORWARDED) as store:
            store.append_many([msg(i, size=100) for i in range(5)])
            forward_all(store)
            store.append_many([msg(5, size=100), msg(6, size=100)])
            kept = [m.stream_seq for m in store.history("default", "s")]
            assert kept == [3, 4, 5, 6, 7]
            assert store.stats()["drops"] == {EVICTED_FOR_QUOTA: 2}

    def test_evict_forwarded_rejects_when_only_pending_remain(self, db_path: Path) -> None:
        """Pending messages are never evicted: with nothing forwarded, the append is refused."""
        with TelemetryStore.open(str(db_path), quota_bytes=1000, overflow=OverflowPolicy.EVICT_FORWARDED) as store:
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
        assert [(r.stream, r.stream_seq, r.timestamp) for r in rows] == [("a", 3, 1005.0), ("a", 4, 1007.0), ("a", 5, 1009.0)]

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
    def test_upload_groups_one_stream_and_respects_limits(self, store: TelemetryStore) -> None:
        """An upload holds the oldest pending stream's next messages, bounded by count and bytes."""
        store.append_many([msg(1, stream="a"), msg(2, stream="b"), msg(3, stream="a"), msg(4, stream="a")])
        upload = store.claim_upload(max_messages=2, max_bytes=10**6)
        assert upload is not None and upload.stream == "a" and [m.seq for m in upload.messages] == [1, 3]
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
            assert (again.upload_id, again.messages, again.compression) == (first.upload_id, first.messages, Compression.FASTEST)

    def test_only_acknowledged_messages_are_settled(self, store: TelemetryStore) -> None:
        """Acked seqs are forwarded, rejected ones counted, the rest go out again in a new upload."""
        store.append_many([msg(i) for i in range(4)])
        upload = store.claim_upload(max_messages=10, max_bytes=10**6)
        assert upload is not None
        assert store.complete_upload(upload.upload_id, [1], {2: "bad"}) == 2
        retry = store.claim_upload(max_messages=10, max_bytes=10**6)
        assert retry is not None and retry.upload_id != upload.upload_id and [m.seq for m in retry.messages] == [3, 4]
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
            instance_url="http://x", device_id="dev-1", workspace_id="w", registration_token="t", expires_at=2.0, provisioning_token="p"
        )
        assert store.registration() is None
        store.save_registration(registration)
        assert store.registration() == registration
        assert registration.valid_at(1.0) and not registration.valid_at(2.0)

    @pytest.mark.parametrize("bad", [{"a.b": 1}, {"$v": 1}, {"a": object()}, {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}}])
    def test_property_rules(self, bad: dict[str, object]) -> None:
        """Keys without '.'/'$', JSON values only, at most 10 levels."""
        with pytest.raises(InvalidArguments):
            validate_properties(bad)
        assert validate_properties({"a": {"b": [1, "x", None, True]}}) == {"a": {"b": [1, "x", None, True]}}
