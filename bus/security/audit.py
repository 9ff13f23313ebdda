"""The audit log of privileged calls: append-only JSON lines, and the queries ``linebus audit`` runs.

One line per call, written by the broker when the call ends (or is refused)::

    {"time": 1714564800.123, "identity": "alice", "service": "fr1", "command": "FR_LoadFile",
     "args": {"path": "/fw/board.bin", "data": "<65536 bytes>", "password": "***"},
     "outcome": "ok", "msg_id": "k3x9.17", "detail": ""}

``outcome`` is ``ok`` or the error code the caller got (``forbidden``, ``device_fault``,
``deadline_exceeded``...). ``args`` is a summary made by ``summarize_arguments``: secret-named
fields are replaced by ``***`` (the redaction of ``bus.logs``), bytes by their size, long strings
and lists cut short, so neither secrets nor bulk data reach the file.

The file is created 0600 (an existing one is brought to 0600) and opened ``O_APPEND``: each record
is one ``write`` at the end of the file, so a crash can cut at most the last line (readers skip
it). Durability (``fsync``):

- ``"always"``: fsync after every record. A privileged call is acknowledged only once its
  record is on disk. Costs one disk flush per call (about a millisecond on SSD, more on SD cards).
- ``"interval"`` (default): fsync at most once per ``fsync_interval_s`` (on the first record
  after the interval, and on ``flush``/``close``; the broker calls ``flush`` on its tick). The
  records are in the kernel at once, so a crash of the broker loses nothing; a power cut loses at
  most the last interval.
- ``"never"``: leave it to the kernel (tests, tmpfs).

A record that cannot be written raises ``StorageError``: the broker should then refuse the
privileged call rather than run it unaudited.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from bus.errors import StorageError
from bus.logs import redact_secrets
from bus.security.files import open_private_append

__all__ = [
    "AuditLog",
    "AuditRecord",
    "FsyncPolicy",
    "format_record",
    "parse_time",
    "query",
    "summarize_arguments",
]

FsyncPolicy = Literal["always", "interval", "never"]
_FSYNC_POLICIES = ("always", "interval", "never")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited call (see the module docstring for the fields)."""

    time: float
    identity: str
    service: str
    command: str
    args: Any
    outcome: str
    msg_id: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (what one line of the file holds)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> AuditRecord | None:
        """Rebuild a record from a decoded line; None if the line is not a record."""
        if not isinstance(data, dict):
            return None
        stamp = data.get("time")
        text = {k: data.get(k) for k in ("identity", "service", "command", "outcome")}
        if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
            return None
        if not all(isinstance(v, str) for v in text.values()):
            return None
        msg_id, detail = data.get("msg_id", ""), data.get("detail", "")
        return cls(
            float(stamp),
            str(text["identity"]),
            str(text["service"]),
            str(text["command"]),
            data.get("args"),
            str(text["outcome"]),
            msg_id if isinstance(msg_id, str) else "",
            detail if isinstance(detail, str) else "",
        )


def summarize_arguments(
    args: Any,
    *,
    bulk_bytes: int = 0,
    max_string: int = 200,
    max_items: int = 20,
    max_depth: int = 4,
) -> Any:
    """A JSON-ready summary of call arguments with secrets and bulk data left out.

    Args:
        args: The decoded arguments (a map, usually).
        bulk_bytes: Size of the bulk frames that travelled with the call; noted, never stored.
        max_string: Longer strings are cut, with the number of characters left out.
        max_items: Longer maps and lists keep this many entries and say how many more there were.
        max_depth: Deeper structures are replaced by ``"<...>"``.
    """
    redacted = redact_secrets(None, "", {"args": args})["args"]
    summary = _summary(redacted, max_string, max_items, max_depth)
    if bulk_bytes:
        if isinstance(summary, dict):
            summary = {**summary, "<bulk>": f"<{bulk_bytes} bytes>"}
        else:
            summary = {"args": summary, "<bulk>": f"<{bulk_bytes} bytes>"}
    return summary


def _summary(value: Any, max_string: int, max_items: int, depth: int) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        if len(value) > max_string:
            return f"{value[:max_string]}…(+{len(value) - max_string} chars)"
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth <= 0:
        return "<...>"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i == max_items:
                out["<more>"] = f"<{len(value) - max_items} more>"
                break
            out[_summary(str(key), max_string, max_items, depth)] = _summary(
                item, max_string, max_items, depth - 1
            )
        return out
    if isinstance(value, (list, tuple)):
        items = [_summary(v, max_string, max_items, depth - 1) for v in value[:max_items]]
        if len(value) > max_items:
            items.append(f"<{len(value) - max_items} more>")
        return items
    return f"<{type(value).__name__}>"


class AuditLog:
    """The append-only audit file; ``record`` one call at a time, ``close`` at the end.

    Args:
        path: The file; created 0600 if missing, its directory must exist.
        fsync: Durability policy (module docstring).
        fsync_interval_s: For ``"interval"``: the most a power cut can lose.
        clock: Wall-clock seconds for the records' time.
        monotonic: Monotonic seconds for the fsync interval.

    Raises:
        StorageError: the file cannot be opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if fsync not in _FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {_FSYNC_POLICIES}, got {fsync!r}")
        self.path = Path(path)
        self._policy = fsync
        self._interval = fsync_interval_s
        self._clock = clock
        self._monotonic = monotonic
        self._dirty = False
        self._last_sync = monotonic()
        try:
            self._fd: int | None = open_private_append(self.path)
        except OSError as exc:
            raise StorageError(f"audit log {self.path}: cannot open: {exc.strerror}") from None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(
        self,
        identity: str,
        service: str,
        command: str,
        args: Any,
        outcome: str,
        *,
        msg_id: str = "",
        detail: str = "",
        at: float | None = None,
    ) -> AuditRecord:
        """Append one record and return it. ``args`` should come from ``summarize_arguments``.

        Raises:
            StorageError: the record could not be written (disk full, file closed).
        """
        entry = AuditRecord(
            self._clock() if at is None else at,
            identity,
            service,
            command,
            args,
            outcome,
            msg_id,
            detail,
        )
        line = json.dumps(entry.to_json(), ensure_ascii=False, separators=(",", ":"), default=str)
        data = (line.replace("\n", " ") + "\n").encode()
        fd = self._fd
        if fd is None:
            raise StorageError(f"audit log {self.path} is closed")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._dirty = True
            if self._policy == "always" or (
                self._policy == "interval" and self._monotonic() - self._last_sync >= self._interval
            ):
                self._sync(fd)
        except OSError as exc:
            raise StorageError(f"audit log {self.path}: cannot write: {exc.strerror}") from None
        return entry

    def _sync(self, fd: int) -> None:
        os.fsync(fd)
        self._dirty = False
        self._last_sync = self._monotonic()

    def flush(self) -> None:
        """fsync what was written since the last fsync (unless the policy is ``never``)."""
        if self._fd is not None and self._dirty and self._policy != "never":
            try:
                self._sync(self._fd)
            except OSError as exc:
                raise StorageError(f"audit log {self.path}: cannot sync: {exc.strerror}") from None

    def close(self) -> None:
        """Flush and close; later records raise ``StorageError``."""
        if self._fd is None:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = None


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds from ``text``: ISO 8601 (UTC unless it says), Unix seconds, or an age.

    An age is a number and a unit, ``s``, ``m``, ``h`` or ``d``: ``"15m"`` is fifteen minutes
    before ``now``. ``linebus audit --since 1h`` uses this.

    Raises:
        ValueError: none of these forms.
    """
    text = text.strip()
    match = _DURATION.match(text)
    if match is not None:
        return (time.time() if now is None else now) - float(match.group(1)) * _UNIT_S[
            match.group(2)
        ]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2024-05-01T12:00), Unix seconds, or an age "
            "such as 15m, 2h, 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def query(
    path: str | os.PathLike[str],
    *,
    identity: str | None = None,
    service: str | None = None,
    command: str | None = None,
    since: float | None = None,
    until: float | None = None,
    last: int | None = None,
    on_malformed: Callable[[int, str], None] | None = None,
) -> Iterator[AuditRecord]:
    """The records of the audit file that match every filter given, oldest first.

    Args:
        path: The audit file.
        identity, service, command: Exact matches.
        since, until: Unix seconds, ``since <= time < until``.
        last: Only the newest ``last`` matches.
        on_malformed: Called with (line number, problem) for each line that is not a record
            (the unfinished last line of a running writer is not reported).

    Raises:
        StorageError: the file cannot be read.
    """
    wanted = {
        k: v
        for k, v in (("identity", identity), ("service", service), ("command", command))
        if v is not None
    }

    def matches(rec: AuditRecord) -> bool:
        return (
            all(getattr(rec, k) == v for k, v in wanted.items())
            and (since is None or rec.time >= since)
            and (until is None or rec.time < until)
        )

    records = (rec for rec in _read(Path(path), on_malformed) if matches(rec))
    if last is None:
        yield from records
    else:
        yield from deque(records, maxlen=max(last, 0))


def _read(path: Path, on_malformed: Callable[[int, str], None] | None) -> Iterator[AuditRecord]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise StorageError(f"audit log {path}: cannot read: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                return  # a record being written right now, or cut by a crash
            try:
                rec = AuditRecord.from_json(json.loads(raw))
                problem = "" if rec is not None else "not an audit record"
            except ValueError:
                rec, problem = None, "not JSON"
            if rec is not None:
                yield rec
            elif on_malformed is not None:
                on_malformed(number, problem)


def format_record(rec: AuditRecord) -> str:
    """One line for people: UTC time, identity, ``service.command``, outcome, arguments."""
    stamp = datetime.datetime.fromtimestamp(rec.time, datetime.UTC).isoformat(
        timespec="milliseconds"
    )
    args = json.dumps(rec.args, ensure_ascii=False, default=str)
    detail = f"  ({rec.detail})" if rec.detail else ""
    return (
        f"{stamp.replace('+00:00', 'Z')}  {rec.identity}  {rec.service}.{rec.command}  "
        f"{rec.outcome}{detail}  {args}"
    )
