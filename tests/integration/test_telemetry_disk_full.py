"""A disk that fills under the telemetry store: a clear ``storage_error``, nothing acknowledged is
lost, the actor keeps serving, and appends work again once there is room.

Two levels: the store against SQLite's own "database or disk is full" (``max_page_count``, runs
everywhere), and the actor process with its store on a real, tiny tmpfs filled up by another
file (needs permission to mount: root, as in CI; skipped with the reason otherwise).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.telemetry.store import TelemetryStore
from bus.errors import StorageError
from clients.telemetry import DeviceClient, SpotflowError
from tests.conftest import Endpoints, Line, Processes, free_port, scaled, write_config

pytestmark = pytest.mark.integration

TOKEN = "disk-token"


def test_store_full_database_is_a_storage_error_and_loses_nothing(tmp_path: Path) -> None:
    """SQLITE_FULL mid-append raises StorageError, stores none of that append, keeps the rest, and
    recovers.
    """
    path = tmp_path / "telemetry.db"
    with TelemetryStore.open(str(path)) as store:
        store.append_payloads("g", "s", [b"early"] * 10, timestamp=1.0)
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # a disk with two pages left
        stored = 10
        with pytest.raises(StorageError, match="full"):
            for _ in range(1000):
                store.append_payloads("g", "s", [b"x" * 2000] * 5, timestamp=2.0)
                stored += 5
        assert store.pending_count() == stored and store.last_seq() == stored
        store._conn.execute("PRAGMA max_page_count = 1000000")  # room again
        run = store.append_payloads("g", "s", [b"after"], timestamp=3.0)
        assert (run.first_seq, run.first_stream_seq) == (stored + 1, stored + 1)
    with TelemetryStore.open(str(path)) as store:
        rows = store.history("g", "s", limit=10000)
        assert [r.stream_seq for r in rows] == list(range(1, stored + 2))
        assert rows[-1].payload == b"after"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (unmounted lazily afterwards)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); needs root"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the file system says ENOSPC; return the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as handle:
        chunk = b"\0" * 65536
        while True:
            try:
                written += handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]


def test_actor_on_a_full_disk_answers_storage_error_and_recovers(
    small_disk: Path, tmp_path: Path, processes: Processes
) -> None:
    """Through the bus: a full disk refuses enqueues with storage_error, the actor stays up, acked data
    survives, room brings it back.
    """
    options = {
        "db": str(small_disk / "telemetry.db"),
        "instance_url": f"http://127.0.0.1:{free_port()}",  # nobody listens: the data stays in the store
        "provisioning_token": TOKEN,
        "request_timeout_s": 1.0,
        "backoff_max_s": 0.5,
    }
    endpoints = Endpoints.fresh()
    line = Line(
        write_config(
            tmp_path / "line.toml",
            endpoints,
            [{"name": "tel", "kind": "telemetry", "options": options}],
        ),
        endpoints,
        processes,
    )
    line.start_broker()
    line.start_actor("tel")
    with DeviceClient.start(
        "dev", "", "unused.db", bus=endpoints.command, service="tel", timeout=scaled(10)
    ) as client:
        sender = client.create_stream_sender("line", "disk")
        before = sender.enqueue_messages([b"kept-%d" % i for i in range(200)], batch_size=50)
        filler = small_disk / "filler"
        fill(filler)
        refused = 0
        with pytest.raises(SpotflowError) as caught:
            for i in range(200):  # the WAL may still have room for a little
                sender.enqueue_messages([os.urandom(1000) for _ in range(20)], batch_size=20)
                refused = i + 1
        assert caught.value.code == "storage_error" and "full" in str(caught.value), caught.value
        stats = client.stats()  # the actor is still serving
        assert stats["pending"] == len(before) + 20 * refused
        filler.unlink()
        after = sender.enqueue_messages([b"after"])
        assert after[0]["stream_seq"] == len(before) + 20 * refused + 1
        rows = client.history("line", "disk", limit=10000)
        assert [r["stream_seq"] for r in rows] == list(range(1, len(before) + 20 * refused + 2))
        assert [r["payload"] for r in rows[:200]] == [b"kept-%d" % i for i in range(200)]
