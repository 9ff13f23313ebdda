"""Durable appends per second through ``TelemetryStore`` beside raw sqlite3, in the same run.

    python bench/telemetry_store_bench.py [--messages 20000] [--batch 100] [--rounds 3] [--json]

Both sides write to a fresh file in WAL mode with ``synchronous=FULL`` (an ack is a promise that
survives a power cut), commit every ``--batch`` messages, and store the same 64-byte JSON payloads.
The raw side is one ``executemany`` INSERT per transaction, into a plain table with the same
columns and, as a second line, into the store's own table and indexes; the store adds what it is
for: per-stream sequence numbers, dedup by message id (every message here has one), quota
accounting and its lock. Sides
alternate ``--rounds`` times and the median run of each is reported, because absolute rates on
a shared machine move from run to run; the ratio is the result.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import structlog

from actors.telemetry.model import OutgoingMessage
from actors.telemetry.schema import MIGRATIONS
from actors.telemetry.store import TelemetryStore

PAYLOAD = b'{"temperatureCelsius": 21.55, "humidityPercent": 50.1, "ok": true}'[:64]


def store_rate(path: Path, messages: int, batch: int) -> float:
    """Appends per second through the store, ``batch`` messages per ``append_many``."""
    with TelemetryStore.open(str(path), quota_bytes=10**10) as store:
        batches = [
            [
                OutgoingMessage.create(
                    PAYLOAD, stream=f"s{i % 4}", message_id=str(i), timestamp=float(i)
                )
                for i in range(start, start + batch)
            ]
            for start in range(0, messages, batch)
        ]
        began = time.perf_counter()
        for chunk in batches:
            store.append_many(chunk)
        return messages / (time.perf_counter() - began)


def store_payloads_rate(path: Path, messages: int, batch: int) -> float:
    """Appends per second through ``TelemetryStore.append_payloads``: plain readings, no ids."""
    with TelemetryStore.open(str(path), quota_bytes=10**10) as store:
        began = time.perf_counter()
        for _ in range(0, messages, batch):
            store.append_payloads("bench", "readings", [PAYLOAD] * batch)
        return messages / (time.perf_counter() - began)


def raw_rate(
    path: Path, messages: int, batch: int, *, store_schema: bool = False, multi_row: bool = False
) -> float:
    """Appends per second with plain sqlite3: one executemany INSERT per transaction.

    With ``store_schema`` the rows go into the store's own table and indexes (per-stream
    sequence, dedup identity, pending), which shows how much of the gap the indexes explain.
    With ``multi_row`` the plain table gets one INSERT with ``batch`` VALUES rows per transaction
    instead of ``executemany`` (the technique the store uses for readings), as a second,
    stricter raw reference.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    rows: list[tuple[object, ...]]
    if store_schema:
        for step in MIGRATIONS:
            step(conn)
        rows = [
            (i + 1, i % 4 + 1, i // 4 + 1, str(i), 0, 0, float(i), PAYLOAD, 100)
            for i in range(messages)
        ]
        insert = (
            "INSERT INTO messages (seq, stream_id, stream_seq, message_id, kind, compression,"
            " timestamp, payload, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    else:
        conn.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream_group TEXT,"
            " stream TEXT, stream_seq INTEGER, message_id TEXT, kind TEXT, compression INTEGER,"
            " timestamp REAL, payload BLOB, size INTEGER)"
        )
        rows = [
            ("default", f"s{i % 4}", i // 4 + 1, str(i), "message", 0, float(i), PAYLOAD, 100)
            for i in range(messages)
        ]
        insert = (
            "INSERT INTO messages (stream_group, stream, stream_seq, message_id, kind, compression,"
            " timestamp, payload, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    if multi_row:
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * batch)
        many = insert.split(" VALUES ")[0] + " VALUES " + values
    began = time.perf_counter()
    for start in range(0, messages, batch):
        conn.execute("BEGIN")
        if multi_row:
            conn.execute(many, [v for row in rows[start : start + batch] for v in row])
        else:
            conn.executemany(insert, rows[start : start + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return messages / elapsed


def main() -> None:
    """Print both rates and their ratio (or JSON with every run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30)
    )  # keep migration logs out of the table
    runs: dict[str, list[float]] = {
        "raw": [],
        "raw_multi_row": [],
        "raw_store_schema": [],
        "store": [],
        "store_payloads": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            runs["raw"].append(raw_rate(Path(tmp) / f"raw{n}.db", args.messages, args.batch))
            runs["raw_multi_row"].append(
                raw_rate(Path(tmp) / f"multi{n}.db", args.messages, args.batch, multi_row=True)
            )
            runs["raw_store_schema"].append(
                raw_rate(Path(tmp) / f"schema{n}.db", args.messages, args.batch, store_schema=True)
            )
            runs["store"].append(store_rate(Path(tmp) / f"store{n}.db", args.messages, args.batch))
            runs["store_payloads"].append(
                store_payloads_rate(Path(tmp) / f"payloads{n}.db", args.messages, args.batch)
            )
    medians = {name: statistics.median(values) for name, values in runs.items()}
    ratio = medians["store"] / medians["raw"]
    if args.json:
        print(
            json.dumps(
                {
                    "messages": args.messages,
                    "batch": args.batch,
                    "runs": runs,
                    "median": medians,
                    "ratio": ratio,
                }
            )
        )
        return
    print(
        f"durable appends, {args.messages} x {len(PAYLOAD)} B payloads, {args.batch} per transaction, "
        f"WAL + synchronous=FULL"
    )
    print(f"  raw sqlite3 executemany, plain table      {medians['raw']:>10,.0f} /s   1.00")
    print(
        f"  raw sqlite3 multi-row INSERT, plain table {medians['raw_multi_row']:>10,.0f} /s   "
        f"{medians['raw_multi_row'] / medians['raw']:.2f}"
    )
    print(
        f"  raw sqlite3 executemany, store's indexes  {medians['raw_store_schema']:>10,.0f} /s   "
        f"{medians['raw_store_schema'] / medians['raw']:.2f}"
    )
    print(
        f"  TelemetryStore.append_many (message ids)  {medians['store']:>10,.0f} /s   {ratio:.2f}"
    )
    print(
        f"  TelemetryStore.append_payloads (readings) {medians['store_payloads']:>10,.0f} /s   "
        f"{medians['store_payloads'] / medians['raw']:.2f}"
    )


if __name__ == "__main__":
    main()
