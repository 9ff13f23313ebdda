"""The audit log: private append-only JSON lines, redacted summaries, queries, fsync policy."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from bus.errors import StorageError
from bus.security.audit import (
    AuditLog,
    AuditRecord,
    format_record,
    parse_time,
    query,
    summarize_arguments,
)


class FakeClock:
    def __init__(self, now: float = 1_714_564_800.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


class TestSummaries:
    def test_secrets_are_redacted_at_any_depth(self) -> None:
        summary = summarize_arguments(
            {"host": "p1", "password": "hunter2", "auth": {"api_token": "t0k", "user": "u"}}
        )
        assert summary == {
            "host": "p1",
            "password": "***",
            "auth": {"api_token": "***", "user": "u"},
        }

    def test_bulk_and_long_values_are_summarised(self) -> None:
        summary = summarize_arguments(
            {"data": b"\0" * 70_000, "path": "x" * 250, "items": list(range(25))},
            bulk_bytes=1_048_576,
        )
        assert summary["data"] == "<70000 bytes>"
        assert summary["path"] == "x" * 200 + "…(+50 chars)"
        assert summary["items"] == [*range(20), "<5 more>"]
        assert summary["<bulk>"] == "<1048576 bytes>"

    def test_depth_is_bounded_and_other_types_named(self) -> None:
        deep: dict[str, object] = {"a": {"b": {"c": {"d": {"e": 1}}}}}
        assert summarize_arguments(deep) == {"a": {"b": {"c": {"d": "<...>"}}}}
        assert summarize_arguments({"when": object()}) == {"when": "<object>"}

    def test_non_map_arguments(self) -> None:
        assert summarize_arguments([b"abc", 1]) == ["<3 bytes>", 1]
        assert summarize_arguments(None, bulk_bytes=5) == {"args": None, "<bulk>": "<5 bytes>"}

    def test_original_arguments_are_untouched(self) -> None:
        args = {"password": "hunter2", "nested": {"token": "t"}}
        summarize_arguments(args)
        assert args == {"password": "hunter2", "nested": {"token": "t"}}


class TestAuditLog:
    def test_records_are_private_json_lines(self, path: Path) -> None:
        old = os.umask(0)
        try:
            with AuditLog(path, clock=FakeClock()) as log:
                rec = log.record("alice", "fr1", "FR_LoadFile", {"path": "/fw"}, "ok", msg_id="m.1")
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        lines = path.read_text().splitlines()
        assert [json.loads(line) for line in lines] == [
            {
                "time": 1_714_564_800.0,
                "identity": "alice",
                "service": "fr1",
                "command": "FR_LoadFile",
                "args": {"path": "/fw"},
                "outcome": "ok",
                "msg_id": "m.1",
                "detail": "",
            }
        ]
        assert rec.to_json() == json.loads(lines[0])

    def test_appends_across_opens_and_repairs_the_mode(self, path: Path) -> None:
        with AuditLog(path, fsync="never") as log:
            log.record("a", "s", "c", None, "ok")
        path.chmod(0o644)
        with AuditLog(path, fsync="never") as log:
            log.record("b", "s", "c", None, "forbidden", detail="not an operator")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [r.identity for r in query(path)] == ["a", "b"]

    def test_one_record_is_one_line_whatever_its_text(self, path: Path) -> None:
        with AuditLog(path, fsync="never") as log:
            log.record("a", "s", "c", {"note": "line1\nline2"}, "ok", detail="x\ny")
        assert len(path.read_bytes().splitlines()) == 1
        assert next(query(path)).args == {"note": "line1\nline2"}

    def test_fsync_policies(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        synced: list[int] = []
        monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
        with AuditLog(path, fsync="always") as log:
            log.record("a", "s", "c", None, "ok")
            log.record("a", "s", "c", None, "ok")
        assert len(synced) == 2  # close had nothing left to sync

        synced.clear()
        mono = FakeClock(100.0)
        log = AuditLog(path, fsync="interval", fsync_interval_s=1.0, monotonic=mono)
        log.record("a", "s", "c", None, "ok")
        mono.now = 100.5
        log.record("a", "s", "c", None, "ok")
        assert synced == []
        mono.now = 101.0
        log.record("a", "s", "c", None, "ok")
        assert len(synced) == 1
        log.record("a", "s", "c", None, "ok")
        log.flush()
        assert len(synced) == 2
        log.close()
        assert len(synced) == 2

        synced.clear()
        with AuditLog(path, fsync="never") as log:
            log.record("a", "s", "c", None, "ok")
        assert synced == []

    def test_bad_policy(self, path: Path) -> None:
        with pytest.raises(ValueError, match="fsync must be one of"):
            AuditLog(path, fsync="sometimes")  # type: ignore[arg-type]

    def test_unopenable_file_is_a_storage_error(self, tmp_path: Path) -> None:
        with pytest.raises(StorageError, match=r"audit log .*nope/audit\.jsonl: cannot open"):
            AuditLog(tmp_path / "nope" / "audit.jsonl")

    def test_write_failure_is_a_storage_error(
        self, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        log = AuditLog(path, fsync="never")

        def full(fd: int, data: object) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", full)
        with pytest.raises(StorageError, match="cannot write: No space left on device"):
            log.record("a", "s", "c", None, "ok")
        monkeypatch.undo()
        log.close()
        with pytest.raises(StorageError, match="is closed"):
            log.record("a", "s", "c", None, "ok")


class TestQuery:
    @pytest.fixture
    def filled(self, path: Path) -> Path:
        clock = FakeClock(1000.0)
        with AuditLog(path, fsync="never", clock=clock) as log:
            for i, (who, svc) in enumerate(
                [("alice", "fr1"), ("bob", "fr1"), ("alice", "flux"), ("alice", "fr1")]
            ):
                clock.now = 1000.0 + i * 10
                log.record(who, svc, f"cmd{i}", {"i": i}, "ok")
        return path

    def test_filters(self, filled: Path) -> None:
        assert [r.command for r in query(filled, identity="alice")] == ["cmd0", "cmd2", "cmd3"]
        assert [r.command for r in query(filled, service="fr1")] == ["cmd0", "cmd1", "cmd3"]
        assert [r.command for r in query(filled, identity="alice", service="fr1")] == [
            "cmd0",
            "cmd3",
        ]
        assert [r.command for r in query(filled, since=1010, until=1030)] == ["cmd1", "cmd2"]
        assert [r.command for r in query(filled, command="cmd2")] == ["cmd2"]
        assert [r.command for r in query(filled, last=2)] == ["cmd2", "cmd3"]
        assert list(query(filled, last=0)) == []

    def test_malformed_lines_are_reported_and_a_torn_tail_skipped(self, filled: Path) -> None:
        with filled.open("ab") as f:
            f.write(b"not json\n")
            f.write(b'{"time": "x"}\n')
            f.write(b'{"time": 5, "identity": "cut')  # a writer crashed mid-line
        problems: list[tuple[int, str]] = []
        records = list(query(filled, on_malformed=lambda n, why: problems.append((n, why))))
        assert len(records) == 4
        assert problems == [(5, "not JSON"), (6, "not an audit record")]

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(StorageError, match="cannot read"):
            list(query(tmp_path / "none.jsonl"))

    def test_from_json_rejects_wrong_types(self) -> None:
        assert AuditRecord.from_json([]) is None
        assert AuditRecord.from_json({"time": True}) is None
        good = {"time": 1, "identity": "a", "service": "s", "command": "c", "outcome": "ok"}
        assert AuditRecord.from_json(good) == AuditRecord(1.0, "a", "s", "c", None, "ok")
        assert AuditRecord.from_json({**good, "identity": 3}) is None


class TestPresentation:
    def test_format_record(self) -> None:
        rec = AuditRecord(1_714_564_800.25, "alice", "fr1", "FR_LoadFile", {"p": 1}, "ok")
        assert format_record(rec) == (
            '2024-05-01T12:00:00.250Z  alice  fr1.FR_LoadFile  ok  {"p": 1}'
        )
        refused = AuditRecord(0.0, "bob", "fr1", "FR_Run", None, "forbidden", detail="no")
        assert format_record(refused).endswith("bob  fr1.FR_Run  forbidden  (no)  null")

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("15m", 10_000.0 - 900),
            ("2h", 10_000.0 - 7200),
            ("1.5d", 10_000.0 - 129_600),
            ("30s", 9_970.0),
            ("1714564800", 1_714_564_800.0),
            ("2024-05-01T12:00:00Z", 1_714_564_800.0),
            ("2024-05-01T12:00", 1_714_564_800.0),
            ("2024-05-01T14:00+02:00", 1_714_564_800.0),
        ],
    )
    def test_parse_time(self, text: str, expected: float) -> None:
        assert parse_time(text, now=10_000.0) == expected

    def test_parse_time_error(self) -> None:
        with pytest.raises(ValueError, match="not a time"):
            parse_time("yesterday")
