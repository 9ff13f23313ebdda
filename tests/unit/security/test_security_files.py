"""Private files: created 0600 from the start, written atomically, repaired when too open."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.security.files import (
    ensure_private,
    mode_problem,
    open_private_append,
    write_private_file,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would make ordinary files world-readable and writable (0000)."""
    old = os.umask(0)
    yield None
    os.umask(old)


class TestModeProblem:
    @pytest.mark.parametrize("bits", [0o600, 0o400, 0o700])
    def test_private_modes(self, bits: int) -> None:
        assert mode_problem(stat.S_IFREG | bits) is None

    def test_group_and_other_bits_are_named(self) -> None:
        assert mode_problem(0o640) == "readable by its group (mode 0640)"
        assert "other users" in str(mode_problem(0o604))
        assert "other users" in str(mode_problem(0o602))


class TestWritePrivateFile:
    def test_written_0600_even_under_an_open_umask(self, tmp_path: Path, open_umask: None) -> None:
        target = tmp_path / "secret"
        write_private_file(target, b"abc")
        assert target.read_bytes() == b"abc"
        assert mode(target) == 0o600

    def test_no_temporary_file_is_left(self, tmp_path: Path) -> None:
        write_private_file(tmp_path / "secret", b"abc")
        assert [p.name for p in tmp_path.iterdir()] == ["secret"]

    def test_refuses_to_overwrite_and_keeps_the_old_content(self, tmp_path: Path) -> None:
        target = tmp_path / "secret"
        write_private_file(target, b"old")
        with pytest.raises(FileExistsError):
            write_private_file(target, b"new")
        assert target.read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["secret"]

    def test_overwrite_replaces_and_stays_private(self, tmp_path: Path) -> None:
        target = tmp_path / "secret"
        target.write_bytes(b"old")
        target.chmod(0o644)
        write_private_file(target, b"new", overwrite=True)
        assert target.read_bytes() == b"new"
        assert mode(target) == 0o600

    def test_missing_directory_is_an_oserror(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            write_private_file(tmp_path / "nope" / "secret", b"x")


class TestEnsurePrivate:
    def test_repairs_an_open_file(self, tmp_path: Path) -> None:
        target = tmp_path / "store.db"
        target.write_bytes(b"")
        target.chmod(0o664)
        assert ensure_private(target) is True
        assert mode(target) == 0o600
        assert ensure_private(target) is False

    def test_keeps_owner_bits(self, tmp_path: Path) -> None:
        target = tmp_path / "tool"
        target.write_bytes(b"")
        target.chmod(0o755)
        ensure_private(target)
        assert mode(target) == 0o700

    def test_create_makes_an_empty_private_file(self, tmp_path: Path, open_umask: None) -> None:
        target = tmp_path / "store.db"
        assert ensure_private(target, create=True) is False
        assert target.read_bytes() == b""
        assert mode(target) == 0o600

    def test_create_keeps_existing_content(self, tmp_path: Path) -> None:
        target = tmp_path / "store.db"
        target.write_bytes(b"data")
        target.chmod(0o644)
        assert ensure_private(target, create=True) is True
        assert target.read_bytes() == b"data"

    def test_missing_without_create(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            ensure_private(tmp_path / "nope")

    def test_sqlite_journals_follow_the_private_database(self, tmp_path: Path) -> None:
        """SQLite gives its WAL and shared-memory files the database file's permissions."""
        import sqlite3

        target = tmp_path / "store.db"
        ensure_private(target, create=True)
        old = os.umask(0o022)
        try:
            db = sqlite3.connect(target)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE t (x)")
                db.execute("INSERT INTO t VALUES (1)")
                db.commit()
                created = sorted(p.name for p in tmp_path.iterdir())
                modes = {p.name: mode(p) for p in tmp_path.iterdir()}
            finally:
                db.close()
        finally:
            os.umask(old)
        assert created == ["store.db", "store.db-shm", "store.db-wal"]
        assert set(modes.values()) == {0o600}


class TestOpenPrivateAppend:
    def test_appends_to_a_new_private_file(self, tmp_path: Path, open_umask: None) -> None:
        target = tmp_path / "audit.jsonl"
        for text in (b"one\n", b"two\n"):
            fd = open_private_append(target)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
        assert target.read_bytes() == b"one\ntwo\n"
        assert mode(target) == 0o600

    def test_repairs_an_open_existing_file(self, tmp_path: Path) -> None:
        target = tmp_path / "audit.jsonl"
        target.write_bytes(b"old\n")
        target.chmod(0o644)
        os.close(open_private_append(target))
        assert mode(target) == 0o600
        assert target.read_bytes() == b"old\n"


class TestWithoutHardLinks:
    """Filesystems that refuse link() (FAT, some container volumes) still get no-clobber."""

    @pytest.fixture(autouse=True)
    def no_links(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(src: object, dst: object) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", refuse)

    def test_writes(self, tmp_path: Path) -> None:
        write_private_file(tmp_path / "secret", b"abc")
        assert (tmp_path / "secret").read_bytes() == b"abc"
        assert [p.name for p in tmp_path.iterdir()] == ["secret"]

    def test_still_refuses_to_overwrite(self, tmp_path: Path) -> None:
        write_private_file(tmp_path / "secret", b"old")
        with pytest.raises(FileExistsError):
            write_private_file(tmp_path / "secret", b"new")
        assert (tmp_path / "secret").read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["secret"]
