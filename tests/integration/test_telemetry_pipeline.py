"""``StreamSender.enqueue_messages`` pipelined: calls of ``batch_size`` messages (one transaction
each), up to ``in_flight`` outstanding, through a real broker to the telemetry actor process
(forwarding to the reference ingest server process).

What is proved: acks come back complete and in order and the store holds exactly the acked
messages; the live events of readings stored in bulk (published with a shared common map) carry
the stored rows; a quota that fills mid-call fails it at the first refused batch with per-call
results, leaving exactly the acked messages stored; bad arguments are refused; dict items with
message ids (dedup) and plain payloads mix in one call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bus.client import Subscription
from clients.telemetry import Compression, DeviceClient, SpotflowError
from tests.conftest import (
    Endpoints,
    Line,
    Processes,
    free_port,
    scaled,
    wait_until,
    write_config,
)
from tests.integration.test_telemetry_bus import DEVICE, TOKEN, Ingest

pytestmark = pytest.mark.integration

# A quota for exactly QUOTA_BATCHES batches of QUOTA_BATCH readings of QUOTA_PAYLOAD bytes in
# stream q/r: a row counts 64 bytes of overhead plus its names and payload.
QUOTA_PAYLOAD, QUOTA_BATCH, QUOTA_BATCHES = 100, 10, 5
QUOTA_ROW = 64 + len("q") + len("r") + QUOTA_PAYLOAD
QUOTA_SLACK = (
    150  # less than one more row of the batches, room for two 1-byte readings (67 bytes each)
)
QUOTA_BYTES = QUOTA_ROW * QUOTA_BATCH * QUOTA_BATCHES + QUOTA_SLACK


@pytest.fixture
def ingest(processes: Processes, tmp_path: Path) -> Ingest:
    return Ingest(processes, tmp_path)


@pytest.fixture
def line(tmp_path: Path, processes: Processes, ingest: Ingest) -> Line:
    """A broker and the telemetry actor ``tel`` forwarding to ``ingest``, both running; ``quota``
    (a small quota, an upstream nobody listens on) is configured but not started."""
    options = {
        "db": str(tmp_path / "device" / "telemetry.db"),
        "instance_url": ingest.url,
        "provisioning_token": TOKEN,
        "device_id": DEVICE,
        "linger_s": 0.01,
        "max_batch_messages": 1000,
        "request_timeout_s": 5.0,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
    }
    quota = {
        "db": str(tmp_path / "quota" / "telemetry.db"),
        "instance_url": f"http://127.0.0.1:{free_port()}",
        "provisioning_token": TOKEN,
        "quota_bytes": QUOTA_BYTES,
        "overflow": "reject_new",
        "request_timeout_s": 1.0,
        "backoff_max_s": 0.5,
    }
    endpoints = Endpoints.fresh()
    actors = [
        {"name": "tel", "kind": "telemetry", "options": options},
        {"name": "quota", "kind": "telemetry", "options": quota},
    ]
    running = Line(write_config(tmp_path / "line.toml", endpoints, actors), endpoints, processes)
    running.start_broker()
    running.start_actor("tel")
    return running


def device(line: Line, service: str = "tel") -> DeviceClient:
    return DeviceClient.start(
        DEVICE,
        "",
        "unused.db",
        bus=line.endpoints.command,
        service=service,
        subscribe_endpoint=line.endpoints.subscribe,
        timeout=scaled(10),
    )


def all_history(client: DeviceClient, group: str, stream: str) -> list[dict[str, Any]]:
    """Every stored message of a stream, by stream_seq, read in pages."""
    rows: list[dict[str, Any]] = []
    while page := client.history(
        group, stream, from_seq=(rows[-1]["stream_seq"] + 1 if rows else None), limit=10000
    ):
        rows.extend(page)
    return rows


def warm_up(client: DeviceClient, sub: Subscription, service: str = "tel") -> None:
    """Enqueue one message at a time on a stream of its own until its event arrives: from then on
    the actor publishes everything under the subscription's prefix."""
    sender = client.create_stream_sender("warm", "up")

    def warm_event_arrived() -> bool:
        sender.enqueue_message(b"warm")
        event = sub.next(0.05)
        while event is not None and event.topic != f"{service}.stream.warm.up":
            event = sub.next(0.05)
        return event is not None

    wait_until(warm_event_arrived, scaled(5), "the subscription to reach the actor", interval=0)
    while sub.next(0.05) is not None:  # the rest of the warm-up events
        pass


class TestPipelined:
    def test_5000_readings_in_pipelined_batches(self, line: Line) -> None:
        """5 000 readings in batches of 100 with 8 in flight: acks stream_seq 1..5000 in order, exactly
        those stored, each published once.
        """
        payloads = [f"reading-{i:05d}".encode() for i in range(5000)]
        with (
            device(line) as client,
            line.client(timeout=10) as bus,
            bus.subscribe("tel.stream.") as sub,
        ):
            sub.wait_ready(scaled(5))
            warm_up(client, sub)
            sender = client.create_stream_sender("line", "bulk", Compression.FASTEST)
            before = time.time()
            acks = sender.enqueue_messages(payloads, batch_size=100, in_flight=8)
            after = time.time()
            assert [a["stream_seq"] for a in acks] == list(range(1, 5001))
            seqs = [a["seq"] for a in acks]
            assert seqs == list(range(seqs[0], seqs[0] + 5000)) and not any(
                a["duplicate"] for a in acks
            )

            stored = all_history(client, "line", "bulk")
            assert [m["stream_seq"] for m in stored] == list(range(1, 5001))
            assert [m["payload"] for m in stored] == payloads
            assert [m["seq"] for m in stored] == seqs
            assert {(m["kind"], m["message_id"], m["batch_id"]) for m in stored} == {
                ("message", None, None)
            }
            assert all(before <= m["timestamp"] <= after for m in stored)

            events = []
            while len(events) < 5000:
                event = sub.next(scaled(10))
                assert event is not None, f"only {len(events)} events"
                events.append(event)
            assert {e.topic for e in events} == {"tel.stream.line.bulk"}
            assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 5000))
            assert sum(e.missed for e in events) == 0
            # Each event's data is the stored row as history gives it, without the state.
            assert [e.data for e in events] == [
                {k: v for k, v in m.items() if k != "state"} for m in stored
            ]

    def test_invalid_batch_size_and_in_flight(self, line: Line) -> None:
        """batch_size or in_flight below 1 raise SpotflowError invalid_arguments and store nothing."""
        with device(line) as client:
            sender = client.create_stream_sender("line", "invalid")
            for kwargs in ({"batch_size": 0}, {"batch_size": -5}, {"in_flight": 0}):
                with pytest.raises(SpotflowError) as caught:
                    sender.enqueue_messages([b"a", b"b"], **kwargs)
                assert caught.value.code == "invalid_arguments", kwargs
            assert client.history("line", "invalid") == []
            assert sender.enqueue_messages([]) == []

    def test_bytearray_and_memoryview_items_are_payloads(self, line: Line) -> None:
        """bytearray and memoryview items are sent as bytes; other types raise SpotflowError, not
        TypeError.
        """
        with device(line) as client:
            sender = client.create_stream_sender("line", "buffers")
            acks = sender.enqueue_messages([bytearray(b"a"), memoryview(b"b"), b"c"])
            assert [a["stream_seq"] for a in acks] == [1, 2, 3]
            assert [r["payload"] for r in client.history("line", "buffers")] == [b"a", b"b", b"c"]
            with pytest.raises(SpotflowError) as caught:
                sender.enqueue_messages([b"d", 42])  # type: ignore[list-item]
            assert caught.value.code == "invalid_arguments"

    def test_unencodable_later_batch_reports_what_was_stored(self, line: Line) -> None:
        """A batch that cannot be encoded stops the pipeline with failed_call and results, the earlier
        batches stored.
        """
        with device(line) as client:
            sender = client.create_stream_sender("line", "unencodable")
            bad = {"payload": b"c", "message_id": "m", "chunk_id": object()}
            with pytest.raises(SpotflowError) as caught:
                sender.enqueue_messages([b"a", b"b", bad, b"d"], batch_size=2, in_flight=1)
            details = caught.value.details
            assert caught.value.code == "invalid_arguments" and details["failed_call"] == 1
            assert [len(r) if r is not None else None for r in details["results"]] == [2, None]
            assert [r["payload"] for r in client.history("line", "unencodable")] == [b"a", b"b"]

    def test_dicts_with_ids_and_plain_payloads_mix(self, line: Line) -> None:
        """Dict items with message ids and plain bytes in one call (batches of both kinds) are stored
        in order; repeats are flagged.
        """
        items: list[Any] = [
            b"p0",
            b"p1",  # batch 0: plain readings only
            {"payload": b"d2", "message_id": "m1"},
            b"p3",  # batch 1: mixed
            {"payload": "d4", "message_id": "m1"},
            {"payload": b"d5", "message_id": "m2", "batch_id": "b"},  # repeat of m1
            b"p6",
            b"p7",  # batch 3: plain
            {"payload": b"d8", "message_id": "m2", "batch_id": "b"},
            {"payload": b"d9", "message_id": "m2"},  # repeat; other batch id
        ]
        with (
            device(line) as client,
            line.client(timeout=10) as bus,
            bus.subscribe("tel.stream.") as sub,
        ):
            sub.wait_ready(scaled(5))
            warm_up(client, sub)
            sender = client.create_stream_sender("line", "mixed")
            acks = sender.enqueue_messages(items, batch_size=2, in_flight=3)
            assert [a["duplicate"] for a in acks] == [
                False,
                False,
                False,
                False,
                True,
                False,
                False,
                False,
                True,
                False,
            ]
            stored_at = [i for i, a in enumerate(acks) if not a["duplicate"]]
            assert [acks[i]["stream_seq"] for i in stored_at] == list(range(1, 9))
            assert (acks[4]["seq"], acks[4]["stream_seq"]) == (
                acks[2]["seq"],
                acks[2]["stream_seq"],
            )
            assert (acks[8]["seq"], acks[8]["stream_seq"]) == (
                acks[5]["seq"],
                acks[5]["stream_seq"],
            )

            stored = all_history(client, "line", "mixed")
            assert [m["payload"] for m in stored] == [
                b"p0",
                b"p1",
                b"d2",
                b"p3",
                b"d5",
                b"p6",
                b"p7",
                b"d9",
            ]
            assert [m["message_id"] for m in stored] == [
                None,
                None,
                "m1",
                None,
                "m2",
                None,
                None,
                "m2",
            ]
            assert [m["seq"] for m in stored] == [acks[i]["seq"] for i in stored_at]

            # A later call repeating ids of this one: flagged, nothing new stored.
            again = sender.enqueue_messages(
                [{"payload": b"x", "message_id": "m1"}, b"p10"], batch_size=1
            )
            assert again[0]["duplicate"] and again[0]["seq"] == acks[2]["seq"]
            assert (again[1]["duplicate"], again[1]["stream_seq"]) == (False, 9)

            events = []
            while len(events) < 9:
                event = sub.next(scaled(10))
                assert event is not None, f"only {len(events)} events"
                events.append(event)
            # One event per stored message, whichever path stored it, all alike.
            assert [e.data["stream_seq"] for e in events] == list(range(1, 10))
            assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 9)) and sum(
                e.missed for e in events
            ) == 0
            stored = all_history(client, "line", "mixed")
            assert [e.data for e in events] == [
                {k: v for k, v in m.items() if k != "state"} for m in stored
            ]
            assert client.stats()["duplicates"] == 3


class TestQuotaMidCall:
    def test_quota_filling_mid_call_reports_each_batch(self, line: Line) -> None:
        """The first batch past the quota fails the call (storage_error) at its index; earlier batches'
        acks are in results; exactly they are stored.
        """
        line.start_actor("quota")
        payloads = [bytes([65 + i % 26]) * QUOTA_PAYLOAD for i in range(QUOTA_BATCH * 12)]
        in_flight = 4
        with device(line, service="quota") as client:
            sender = client.create_stream_sender("q", "r")
            with pytest.raises(SpotflowError) as caught:
                sender.enqueue_messages(payloads, batch_size=QUOTA_BATCH, in_flight=in_flight)
            error = caught.value
            assert (
                error.code == "storage_error"
                and error.details.get("reason") == "rejected_quota_full"
            )
            assert error.details["failed_call"] == QUOTA_BATCHES
            results = error.details["results"]
            assert len(results) == 12
            assert all(r is None for r in results[QUOTA_BATCHES:])
            acked = [ack for r in results[:QUOTA_BATCHES] for ack in r]
            assert [a["stream_seq"] for a in acked] == list(
                range(1, QUOTA_BATCH * QUOTA_BATCHES + 1)
            )

            stored = all_history(client, "q", "r")
            assert [(m["seq"], m["stream_seq"]) for m in stored] == [
                (a["seq"], a["stream_seq"]) for a in acked
            ]
            assert [m["payload"] for m in stored] == payloads[: len(acked)]
            stats = client.stats()
            assert stats["pending"] == len(acked)
            refused = stats["drops"]["rejected_quota_full"]
            # The refused batch and those already in flight behind it were refused whole; no later
            # one was sent.
            assert refused % QUOTA_BATCH == 0 and QUOTA_BATCH <= refused <= QUOTA_BATCH * in_flight

            # Room for a smaller batch is still there, numbered right after the acked ones.
            assert [a["stream_seq"] for a in sender.enqueue_messages([b"s"] * 2)] == [
                len(acked) + 1,
                len(acked) + 2,
            ]
