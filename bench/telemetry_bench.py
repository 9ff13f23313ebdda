"""Telemetry: durable ingest through the bus beside raw sqlite3 in the same run, and forwarding
from the actor's store to the reference ingest server.

    python bench/telemetry_bench.py [--messages 50000] [--batch 100] [--rounds 5] [--in-flight 4]
                                    [--forward 20000] [--forward-batch 100]

(a) through the bus: ``--messages`` readings of 64 bytes sent with the Spotflow-style facade,
    ``StreamSender.enqueue_messages(payloads, batch_size=--batch, in_flight=--in-flight)``:
    client → broker → telemetry actor process → ``TelemetryStore.append_payloads`` → COMMIT
    (WAL, synchronous=FULL) → acks back, one call and one transaction per ``--batch`` messages,
    ``--in-flight`` calls outstanding. Also measured: one call at a time (``in_flight=1``), and
    pipelined with a subscriber process receiving every message live (so the actor encodes and
    sends them; without subscribers it skips encoding): subscribed to the ``stream.`` events (one
    per message), and subscribed to the ``commit.`` events (one per transaction, the messages as
    columns). Each run uses a fresh actor
    with an empty store whose upstream is a port nobody listens on, so the forwarder only
    retries its provisioning now and then and does not compete with the ingest (the
    device-offline case; the store is what is measured).
(b) raw sqlite3: the same payloads, ``--batch`` rows per transaction, WAL + synchronous=FULL (as
    the store): one ``executemany`` into a plain table (the reference of the target), one
    multi-row INSERT into the plain table (what the store does for readings: a stricter
    reference), one ``executemany`` into the store's own table and indexes; and
    ``TelemetryStore.append_payloads`` in-process (no bus), to split the gap into "store" and
    "bus". Raw, store and bus alternate ``--rounds`` times; medians are reported.
(c) forwarding: ``--forward`` messages are enqueued while the actor's upstream port is closed,
    then the reference ingest server is started on that port and the store drains into it. The
    rate is taken from the server's own ``received_at`` stamps (first to last upload, the first
    upload's messages not counted) and, as a cross-check, from the wall time of
    ``wait_enqueued_messages_sent`` started once the server printed its ready line.

Every process listens on 127.0.0.1 in a temporary directory; all are stopped at exit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from bus.testing import free_port
from clients.telemetry import DeviceClient, SpotflowError

ROOT = Path(__file__).resolve().parent.parent
# The raw-sqlite3 references come from the store benchmark beside this file (``bench`` is not an
# installed package): the functions that use them import ``bench.telemetry_store_bench``.
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token"
DEVICE = "bench-dev"


def _config(tmp: Path, ports: list[int], actors: dict[str, dict[str, Any]]) -> Path:
    lines = [
        "[broker]",
        f'command = "tcp://127.0.0.1:{ports[0]}"',
        f'publish = "tcp://127.0.0.1:{ports[1]}"',
        f'subscribe = "tcp://127.0.0.1:{ports[2]}"',
        "",
    ]
    for name, options in actors.items():
        lines += ["[[actor]]", f'name = "{name}"', 'kind = "telemetry"', "[actor.options]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
        lines.append("")
    path = tmp / "bench.toml"
    path.write_text("\n".join(lines))
    return path


def _connect(endpoint: str, service: str, deadline_s: float = 30.0) -> DeviceClient:
    """The facade's session with ``service``, once the actor process is up."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return DeviceClient.start(
                DEVICE, "", "unused.db", bus=endpoint, service=service, timeout=30
            )
        except SpotflowError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _bus_rate(client: DeviceClient, messages: int, batch: int, in_flight: int) -> float:
    """Acknowledged (committed) messages per second through the facade: ``batch`` per call and
    transaction, up to ``in_flight`` calls outstanding (1: strictly one round trip after another)."""
    from bench.telemetry_store_bench import PAYLOAD

    sender = client.create_stream_sender("bench", "readings")
    payloads = [PAYLOAD] * messages
    began = time.perf_counter()
    acks = sender.enqueue_messages(payloads, batch_size=batch, in_flight=in_flight)
    elapsed = time.perf_counter() - began
    assert len(acks) == messages and acks[-1]["stream_seq"] - acks[0]["stream_seq"] == messages - 1
    return messages / elapsed


def _count_events(
    endpoint: str, prefix: str, last_stream_seq: int, ready: Any, result: Any
) -> None:
    """Subscriber process: count the messages in the events under ``prefix`` (and the gaps it
    was told of) until the one with ``last_stream_seq`` (or 10 s of silence); put
    ``(messages received, events missed)`` on ``result``. A ``stream.`` event holds one message,
    a ``commit.`` event a column of them."""
    from bus.client import Client

    with Client(endpoint) as bus, bus.subscribe(prefix, timeout=10.0) as sub:
        sub.wait_ready()
        ready.set()
        received = missed = 0
        for event in sub:
            missed += event.missed
            stream_seq = event.data["stream_seq"]
            if type(stream_seq) is list:  # a commit event
                received += len(stream_seq)
                stream_seq = stream_seq[-1]
            else:
                received += 1
            if stream_seq >= last_stream_seq:
                break
    result.put((received, missed))


def _bus_rate_heard(
    endpoint: str,
    client: DeviceClient,
    service: str,
    messages: int,
    batch: int,
    in_flight: int,
    topic: str = "stream",
) -> tuple[float, int, int]:
    """``_bus_rate`` with a subscriber process receiving every stored message live (so the actor
    encodes and sends them): one ``stream.`` event per message, or with ``topic="commit"`` one
    ``commit.`` event per transaction; returns the rate, messages received and events missed."""
    ctx = mp.get_context("spawn")
    ready, result = ctx.Event(), ctx.Queue()
    proc = ctx.Process(
        target=_count_events,
        args=(endpoint, f"{service}.{topic}.", messages, ready, result),
        daemon=True,
    )
    proc.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the subscriber did not get ready")
        # wait_ready proves the broker forwards to the subscriber; the subscription reaches
        # the actor a moment later, so the first enqueue waits for its first event's arrival.
        rate = _bus_rate(client, messages, batch, in_flight)
        received, missed = result.get(timeout=60)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return rate, received, missed


def _forward(
    endpoint: str,
    service: str,
    tmp: Path,
    port: int,
    messages: int,
    batch: int,
    procs: list[subprocess.Popen[bytes]],
    env: dict[str, str],
) -> dict[str, float]:
    """Enqueue ``messages`` with the upstream closed, open it, time the drain."""
    from bench.telemetry_store_bench import PAYLOAD

    with _connect(endpoint, service) as client:
        sender = client.create_stream_sender("bench", "forwarded")
        for start in range(0, messages, batch):
            sender.enqueue_messages([PAYLOAD] * min(batch, messages - start))
        assert client.pending_messages_count == messages
        db = tmp / "ingest.sqlite"
        log = (tmp / "ingest.log").open("ab")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "actors.telemetry.ingest_server",
                "--listen",
                f"127.0.0.1:{port}",
                "--db",
                str(db),
                "--provisioning-token",
                TOKEN,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        procs.append(server)
        assert server.stdout is not None
        ready = json.loads(server.stdout.readline())
        assert ready["event"] == "ready", ready
        began = time.perf_counter()
        client.wait_enqueued_messages_sent(timeout=600)
        wall = time.perf_counter() - began
        forwarded = client.stats()["forwarded"]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        count, first, last = conn.execute(
            "SELECT count(*), min(received_at), max(received_at) FROM messages"
        ).fetchone()
        (in_first,) = conn.execute(
            "SELECT count(*) FROM messages WHERE received_at = ?", (first,)
        ).fetchone()
        (uploads,) = conn.execute("SELECT count(*) FROM uploads").fetchone()
    assert count == messages == forwarded, (count, messages, forwarded)
    return {
        "server_rate": (count - in_first) / (last - first),
        "wall_rate": messages / wall,
        "wall_s": wall,
        "uploads": uploads,
    }


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``, else a usage error naming it."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return parse


def main() -> None:
    """Run (b) and (a) alternately, then (c) unless ``--forward 0``; print one table."""
    from bench.telemetry_store_bench import PAYLOAD, raw_rate, store_payloads_rate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=_at_least(1), default=50_000, help="messages per ingest run"
    )
    parser.add_argument(
        "--batch",
        type=_at_least(1),
        default=100,
        help="messages per enqueue_messages call / per transaction",
    )
    parser.add_argument("--rounds", type=_at_least(1), default=5)
    parser.add_argument(
        "--in-flight",
        type=_at_least(1),
        default=4,
        help="enqueue_messages calls outstanding at once in the pipelined line",
    )
    parser.add_argument(
        "--forward",
        type=_at_least(0),
        default=20_000,
        help="messages drained to the ingest server (0: skip the forwarding run)",
    )
    parser.add_argument(
        "--forward-batch",
        type=_at_least(1),
        default=100,
        help="the forwarder's max_batch_messages (actor default 100)",
    )
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30)
    )  # keep migration logs out of the table
    env = {**os.environ, "LINEBUS_LOG_LEVEL": "error"}
    ports = [free_port() for _ in range(3)]
    closed_port, upstream_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    runs: dict[str, list[float]] = {
        "raw": [],
        "raw_multi_row": [],
        "raw_store_schema": [],
        "store": [],
        "bus": [],
        "bus_sequential": [],
        "bus_heard": [],
        "bus_heard_commit": [],
    }
    heard: list[tuple[int, int]] = []  # (messages received, gaps reported) per round
    heard_commit: list[tuple[int, int]] = []  # the same, from commit events
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as tmp_name:
        tmp = Path(tmp_name)
        offline = {
            "instance_url": f"http://127.0.0.1:{closed_port}",
            "provisioning_token": TOKEN,
            "device_id": DEVICE,
            "backoff_initial_s": 1.0,
            "backoff_max_s": 5.0,
        }
        bench_actors = [
            f"bench{n}{mode}" for n in range(args.rounds) for mode in ("p", "s", "h", "c")
        ]  # pipelined, sequential, heard (message events), heard (commit events)
        actors = {
            name: {"db": str(tmp / name / "telemetry.db"), **offline} for name in bench_actors
        }
        actors["fwd"] = {
            "db": str(tmp / "fwd" / "telemetry.db"),
            "instance_url": f"http://127.0.0.1:{upstream_port}",
            "provisioning_token": TOKEN,
            "device_id": DEVICE,
            "max_batch_messages": args.forward_batch,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.1,
        }
        config = _config(tmp, ports, actors)
        endpoint = f"tcp://127.0.0.1:{ports[0]}"
        try:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bus.cli", "broker", "--config", str(config)],
                    cwd=ROOT,
                    env=env,
                )
            )
            for name in actors:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bus.cli", "actor", str(config), name],
                        cwd=ROOT,
                        env=env,
                        stderr=subprocess.DEVNULL,
                    )
                )
            sessions = {name: _connect(endpoint, name) for name in bench_actors}
            _connect(endpoint, "fwd").close()
            time.sleep(1.0)  # let the actors settle after start-up
            for n in range(args.rounds):
                runs["raw"].append(raw_rate(tmp / f"raw{n}.db", args.messages, args.batch))
                runs["raw_multi_row"].append(
                    raw_rate(tmp / f"multi{n}.db", args.messages, args.batch, multi_row=True)
                )
                runs["raw_store_schema"].append(
                    raw_rate(tmp / f"schema{n}.db", args.messages, args.batch, store_schema=True)
                )
                runs["store"].append(
                    store_payloads_rate(tmp / f"store{n}.db", args.messages, args.batch)
                )
                runs["bus"].append(
                    _bus_rate(sessions[f"bench{n}p"], args.messages, args.batch, args.in_flight)
                )
                runs["bus_sequential"].append(
                    _bus_rate(sessions[f"bench{n}s"], args.messages, args.batch, 1)
                )
                rate, received, missed = _bus_rate_heard(
                    endpoint,
                    sessions[f"bench{n}h"],
                    f"bench{n}h",
                    args.messages,
                    args.batch,
                    args.in_flight,
                )
                runs["bus_heard"].append(rate)
                heard.append((received, missed))
                rate, received, missed = _bus_rate_heard(
                    endpoint,
                    sessions[f"bench{n}c"],
                    f"bench{n}c",
                    args.messages,
                    args.batch,
                    args.in_flight,
                    topic="commit",
                )
                runs["bus_heard_commit"].append(rate)
                heard_commit.append((received, missed))
            for session in sessions.values():
                session.close()
            forward = (
                _forward(endpoint, "fwd", tmp, upstream_port, args.forward, args.batch, procs, env)
                if args.forward
                else None
            )
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in reversed(procs):
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    med = {name: statistics.median(values) for name, values in runs.items()}
    n, b = args.messages, args.batch
    print(
        f"durable ingest, {n} x {len(PAYLOAD)} B payloads, {b} per transaction / "
        f"per enqueue_messages call, WAL + synchronous=FULL"
    )
    print(f"medians of {args.rounds} alternating rounds          msgs/s   vs raw plain")
    print(f"  (b) raw sqlite3 executemany, plain table        {med['raw']:>10,.0f}   1.00")
    print(
        f"  (b) raw sqlite3 multi-row INSERT, plain table   {med['raw_multi_row']:>10,.0f}   "
        f"{med['raw_multi_row'] / med['raw']:.2f}"
    )
    print(
        f"  (b) raw sqlite3 executemany, store's schema     {med['raw_store_schema']:>10,.0f}   "
        f"{med['raw_store_schema'] / med['raw']:.2f}"
    )
    print(
        f"      TelemetryStore.append_payloads, in-process  {med['store']:>10,.0f}   "
        f"{med['store'] / med['raw']:.2f}"
    )
    print(
        f"  (a) through the bus, {args.in_flight} calls in flight        {med['bus']:>10,.0f}   "
        f"{med['bus'] / med['raw']:.2f}   (target >= 0.75)"
    )
    print(
        f"      through the bus, one call at a time         {med['bus_sequential']:>10,.0f}   "
        f"{med['bus_sequential'] / med['raw']:.2f}"
    )
    print(
        f"      through the bus, {args.in_flight} in flight, 1 subscriber {med['bus_heard']:>10,.0f}   "
        f"{med['bus_heard'] / med['raw']:.2f}   (target >= 0.6) "
        f"(messages received/events missed per round: "
        f"{', '.join(f'{r}/{m}' for r, m in heard)})"
    )
    print(
        f"      the same, subscribed to commit events      {med['bus_heard_commit']:>10,.0f}   "
        f"{med['bus_heard_commit'] / med['raw']:.2f}   (target >= 0.6) "
        f"(messages received/events missed per round: "
        f"{', '.join(f'{r}/{m}' for r, m in heard_commit)})"
    )
    print(
        f"      bus ({args.in_flight} in flight) / raw multi-row INSERT                "
        f"{med['bus'] / med['raw_multi_row']:.2f}"
    )
    print(
        f"      bus ({args.in_flight} in flight) / in-process store                    "
        f"{med['bus'] / med['store']:.2f}"
    )
    for name, values in runs.items():
        print(f"  runs {name:<17} " + "  ".join(f"{v:>9,.0f}" for v in values))
    if forward is None:
        return
    print(
        f"forwarding, {args.forward} x {len(PAYLOAD)} B queued offline, "
        f"max_batch_messages={args.forward_batch}, "
        f"to the reference ingest server"
    )
    print(
        f"  (c) server arrivals, first to last upload        {forward['server_rate']:>10,.0f} /s   "
        f"({forward['uploads']:.0f} uploads)"
    )
    print(
        f"      wait_enqueued_messages_sent wall time        {forward['wall_rate']:>10,.0f} /s   "
        f"({forward['wall_s']:.2f} s, incl. reconnect)"
    )


if __name__ == "__main__":
    main()
