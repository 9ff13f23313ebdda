"""The telemetry actor end to end: a real broker process, the actor as its own process, the
reference ingest server as a process, and the ``clients.telemetry`` facade (spotflow_device's API).

Covers: enqueue and forwarding, batch ingest acks, live events with gap-free per-stream sequence,
history backfill, the twin both ways, typed errors and drop events, and kill -9 of the actor in
the middle of a 100 000 message ingest (every acknowledged message stored and forwarded once).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from bus.errors import BusError
from clients.telemetry import (
    Compression,
    DesiredProperties,
    DeviceClient,
    SpotflowError,
    commit_messages,
)
from tests.conftest import (
    Endpoints,
    Line,
    Processes,
    free_port,
    scaled,
    wait_ready_line,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

TOKEN = "factory-token"
DEVICE = "line-dev"


class Ingest:
    """The reference ingest server process and its operator endpoints."""

    def __init__(self, processes: Processes, tmp_path: Path) -> None:
        with (tmp_path / "ingest.log").open("ab") as log:  # the child keeps its own copy
            self.proc = processes.start(
                "-m",
                "actors.telemetry.ingest_server",
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--db",
                str(tmp_path / "ingest.sqlite"),
                "--provisioning-token",
                TOKEN,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self.url = wait_ready_line(self.proc, scaled(15))["url"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, self.url + path, json=body, timeout=scaled(10))
        response.raise_for_status()
        return response.json()

    def messages(self, device: str = DEVICE) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v1/operator/devices/{device}/messages")["messages"])


@pytest.fixture
def ingest(processes: Processes, tmp_path: Path) -> Ingest:
    return Ingest(processes, tmp_path)


@pytest.fixture
def line(tmp_path: Path, processes: Processes, ingest: Ingest) -> Line:
    """A broker and the telemetry actor ``tel`` (forwarding to ``ingest``), both running."""
    options = {
        "db": str(tmp_path / "device" / "telemetry.db"),
        "instance_url": ingest.url,
        "provisioning_token": TOKEN,
        "device_id": DEVICE,
        "linger_s": 0.01,
        "max_batch_messages": 500,
        "request_timeout_s": 5.0,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
        "desired_poll_s": 0.3,
    }
    tiny = {  # a full store: a 4 KB quota and an upstream nobody listens on
        "db": str(tmp_path / "tiny" / "telemetry.db"),
        "instance_url": f"http://127.0.0.1:{free_port()}",
        "provisioning_token": TOKEN,
        "quota_bytes": 4096,
        "request_timeout_s": 1.0,
        "backoff_max_s": 0.5,
    }
    endpoints = Endpoints.fresh()
    actors = [
        {"name": "tel", "kind": "telemetry", "options": options},
        {"name": "tiny", "kind": "telemetry", "options": tiny},
    ]
    config = write_config(tmp_path / "line.toml", endpoints, actors)
    running = Line(config, endpoints, processes)
    running.start_broker()
    running.start_actor("tel")
    return running


def device(line: Line, service: str = "tel", **kwargs: Any) -> DeviceClient:
    return DeviceClient.start(
        DEVICE,
        "",
        "unused.db",
        bus=line.endpoints.command,
        service=service,
        subscribe_endpoint=line.endpoints.subscribe,
        timeout=scaled(10),
        **kwargs,
    )


class TestMessages:
    def test_enqueue_batches_events_history_and_forwarding(
        self, line: Line, ingest: Ingest
    ) -> None:
        """Single and batch enqueues are acked, published live gap-free, kept as history and forwarded."""
        with (
            device(line) as client,
            line.client(timeout=10) as bus,
            bus.subscribe("tel.stream.") as sub,
            bus.subscribe("tel.commit.") as commits,
        ):
            sub.wait_ready(scaled(5))
            commits.wait_ready(scaled(5))
            sender = client.create_stream_sender("line3", "temps", Compression.FASTEST)
            for i in range(20):
                sender.enqueue_message(f'{{"i": {i}}}'.encode(), message_id=f"m-{i}")
            acks = sender.enqueue_messages([f'{{"i": {i}}}' for i in range(20, 520)])
            assert [a["stream_seq"] for a in acks] == list(range(21, 521))
            assert not any(a["duplicate"] for a in acks)
            sender.enqueue_message(b'{"i": 0}', message_id="m-0")  # repeated id: stored once
            client.wait_enqueued_messages_sent(timeout=scaled(30))
            assert client.pending_messages_count == 0

            events = []
            while len(events) < 520:
                event = sub.next(scaled(10))
                assert event is not None, f"only {len(events)} live events"
                events.append(event)
            assert [e.topic for e in events] == ["tel.stream.line3.temps"] * 520
            assert [e.data["stream_seq"] for e in events] == list(range(1, 521))
            assert sum(e.missed for e in events) == 0
            assert (
                events[3].data["payload"] == b'{"i": 3}' and events[3].data["message_id"] == "m-3"
            )
            # The same messages once per write: 20 single enqueues and one batch (the repeated
            # id stored nothing, so no event).
            batches = [commits.next(scaled(10)) for _ in range(21)]
            assert all(e is not None and e.topic == "tel.commit.line3.temps" for e in batches)
            assert commits.next(0.2) is None
            assert [len(e.data["seq"]) for e in batches if e] == [1] * 20 + [500]
            expanded = [m for e in batches if e for m in commit_messages(e.data)]
            assert expanded == [e.data for e in events]

            backfill = client.history("line3", "temps", from_seq=100, to_seq=109)
            assert [m["stream_seq"] for m in backfill] == list(range(100, 110))
            assert [m["payload"] for m in backfill] == [e.data["payload"] for e in events[99:109]]
            assert {m["state"] for m in backfill} == {"forwarded"}
            by_time = client.history(
                "line3",
                "temps",
                since=events[0].data["timestamp"],
                until=events[-1].data["timestamp"],
                limit=10000,
            )
            assert len(by_time) == 520

            stored = [m for m in ingest.messages() if m["stream"] == "temps"]
            assert sorted(m["payload"] for m in stored) == sorted(
                f'{{"i": {i}}}' for i in range(520)
            )
            stats = client.stats()
            assert stats["pending"] == 0 and stats["forwarded"] == 520 and stats["duplicates"] == 1
            assert client.device_id == DEVICE and client.workspace_id

    def test_send_message_blocks_until_forwarded(self, line: Line, ingest: Ingest) -> None:
        """send_message returns only after the server has the message; completion markers travel too."""
        with device(line) as client:
            sender = client.create_stream_sender(stream="events")
            sender.enqueue_message(b"part-1", batch_id="b1")
            sender.enqueue_batch_completion("b1")
            sender.send_message("hello", batch_id="b2", message_id="h1")
            payloads = [m["payload"] for m in ingest.messages() if m["stream"] == "events"]
            assert "part-1" in payloads and "hello" in payloads
            batches = ingest.call("GET", f"/v1/operator/devices/{DEVICE}/batches")["batches"]
            assert {
                "stream_group": "default",
                "stream": "events",
                "batch_id": "b1",
                "completed_by": "complete_batch",
            } in batches


class TestTwin:
    def test_desired_and_reported_round_trip(self, line: Line, ingest: Ingest) -> None:
        """Operator sets desired → callback, getters and <service>.desired; device reports → operator
        sees it.
        """
        updates: queue.Queue[DesiredProperties] = queue.Queue()
        with line.client(timeout=10) as bus, bus.subscribe("tel.desired") as sub:
            sub.wait_ready(scaled(5))
            # spotflow-device 2.x's allow_remote_access=False is accepted (True: see below).
            with device(
                line, desired_properties_updated_callback=updates.put, allow_remote_access=False
            ) as client:
                assert updates.get(timeout=scaled(10)) == DesiredProperties(0, {})
                # Before any desired version, None asks for the current (empty) properties.
                assert client.get_desired_properties_if_newer(None) == DesiredProperties(0, {})
                assert client.get_desired_properties_if_newer(0) is None
                ingest.call(
                    "PUT", f"/v1/operator/devices/{DEVICE}/twin/desired", {"values": {"rate_s": 5}}
                )
                assert updates.get(timeout=scaled(10)) == DesiredProperties(1, {"rate_s": 5})
                event = sub.next(scaled(10))
                assert event is not None and event.data == {"version": 1, "values": {"rate_s": 5}}
                assert client.get_desired_properties() == DesiredProperties(1, {"rate_s": 5})
                assert client.get_desired_properties_if_newer(0) == DesiredProperties(
                    1, {"rate_s": 5}
                )
                assert client.get_desired_properties_if_newer(1) is None

                client.update_reported_properties({"fw": "1.2", "sensor": {"ok": True}})
                wait_until(
                    lambda: not client.any_pending_reported_properties_updates,
                    scaled(10),
                    "reported sent",
                )
                twin = ingest.call("GET", f"/v1/operator/devices/{DEVICE}/twin")
                assert twin["reported"] == {"fw": "1.2", "sensor": {"ok": True}}


class TestErrors:
    def test_typed_errors_keep_the_wire_code(self, line: Line, ingest: Ingest) -> None:
        """Bad ids, a wait past its deadline and an unknown service raise SpotflowError with the code."""
        with device(line) as client:
            sender = client.create_stream_sender(stream="errors")
            with pytest.raises(SpotflowError) as caught:
                sender.enqueue_batch_completion("")
            assert caught.value.code == "invalid_arguments" and isinstance(
                caught.value.__cause__, BusError
            )
            with pytest.raises(SpotflowError) as caught:
                client.update_reported_properties({"bad.key": 1})
            assert caught.value.code == "invalid_arguments"

            ingest.call("POST", "/v1/test/faults", {"status": 503, "retry_after": 30, "count": 1})
            sender.enqueue_message(b"held back")
            with pytest.raises(SpotflowError) as caught:
                client.wait_enqueued_messages_sent(timeout=1.0)
            assert caught.value.code == "deadline_exceeded"
            assert client.pending_messages_count >= 1
        with pytest.raises(SpotflowError) as caught:
            device(line, service="no-such-telemetry")
        assert caught.value.code in ("unknown_service", "unavailable")
        # Remote access (spotflow-device 2.x) is not offered: refused with a clear error.
        with pytest.raises(SpotflowError, match="does not offer the Platform's remote access"):
            device(line, allow_remote_access=True)

    def test_full_store_refuses_and_publishes_a_drop(self, line: Line) -> None:
        """Past the quota an enqueue fails with storage_error and <service>.drop tells subscribers."""
        line.start_actor("tiny")
        with (
            line.client(timeout=10) as bus,
            bus.subscribe("tiny.drop") as sub,
            device(line, service="tiny") as client,
        ):
            sub.wait_ready(scaled(5))
            sender = client.create_stream_sender()
            sender.enqueue_message(b"x" * 1000)
            with pytest.raises(SpotflowError) as caught:
                sender.enqueue_message(b"x" * 5000)
            assert caught.value.code == "storage_error"
            event = sub.next(scaled(10))
            assert (
                event is not None
                and event.data["reason"] == "rejected_quota_full"
                and event.data["count"] == 1
            )
            assert client.stats()["drops"] == {"rejected_quota_full": 1}


class TestCrash:
    def test_kill9_mid_ingest_keeps_every_acked_message_exactly_once(
        self, line: Line, ingest: Ingest
    ) -> None:
        """100 000 readings in batches; kill -9 of the actor with an upload held on the server; restart.

        Every acknowledged message is in the store once and reaches the server once; the batch in
        flight at the kill (unknown outcome) is in each at most once.
        """
        total, per_batch = 100_000, 250
        acked: list[str] = []
        ambiguous: list[str] = []
        failures: list[BaseException] = []
        armed = threading.Event()  # the producer pauses at 6000 until the kill is armed
        with device(line) as client:
            sender = client.create_stream_sender(stream="crash")

            def produce() -> None:
                try:
                    for start in range(0, total, per_batch):
                        if start == 6000:
                            armed.wait(scaled(20))
                        payloads = [f"r-{i}" for i in range(start, start + per_batch)]
                        try:
                            acks = sender.enqueue_messages(payloads)
                        except SpotflowError as exc:
                            if exc.code not in (
                                "unavailable",
                                "unknown_service",
                                "deadline_exceeded",
                            ):
                                raise
                            ambiguous.extend(payloads)  # maybe stored, maybe not: never resent
                            wait_until(lambda: _pings(client), scaled(20), "actor back")
                            continue
                        assert len(acks) == per_batch
                        acked.extend(payloads)
                except BaseException as exc:
                    failures.append(exc)

            producer = threading.Thread(target=produce, name="producer", daemon=True)
            producer.start()
            wait_until(lambda: len(acked) >= 6000 or failures, scaled(20), "6000 acked messages")
            # The next upload is stored by the server but its answer is held: the kill lands
            # between "server stored it" and "device heard the ack". A message of another
            # stream makes sure there is a next upload even if the first 6000 are all sent.
            ingest.call(
                "POST",
                "/v1/test/faults",
                {"status": None, "hold_s": 3, "count": 1, "path": "/uploads/"},
            )
            client.create_stream_sender(stream="nudge").enqueue_message(b"nudge")
            wait_until(
                lambda: any(r["held"] for r in ingest.call("GET", "/v1/test/requests")["requests"]),
                scaled(10),
                "a held upload",
            )
            armed.set()  # the producer goes on while the forwarder waits for the held answer
            time.sleep(0.05)
            acked_at_kill = len(acked)
            os.kill(line.actors["tel"].pid, signal.SIGKILL)
            line.actors["tel"].wait(timeout=scaled(10))
            line.start_actor("tel")
            producer.join(timeout=scaled(60))
            assert not producer.is_alive() and not failures, failures
            assert acked_at_kill < total - 4 * per_batch, (
                "the kill should land in the middle of the ingest"
            )
            assert len(acked) + len(ambiguous) == total and len(acked) >= total - 2 * per_batch
            client.wait_enqueued_messages_sent(timeout=scaled(60))

            stored: list[dict[str, Any]] = []
            while batch := _history(client, stream="crash", from_seq=len(stored) + 1, limit=10000):
                stored.extend(batch)
        assert [m["stream_seq"] for m in stored] == list(range(1, len(stored) + 1))
        in_store = Counter(m["payload"].decode() for m in stored)
        on_server = Counter(m["payload"] for m in ingest.messages() if m["stream"] == "crash")
        for name, counts in (("store", in_store), ("server", on_server)):
            assert all(counts[p] == 1 for p in acked), (
                f"an acked message is not exactly once in the {name}"
            )
            assert max(counts.values()) == 1, f"a message is twice in the {name}"
            assert set(counts) <= set(acked) | set(ambiguous)
        assert in_store == on_server


def _history(client: DeviceClient, **query: Any) -> list[dict[str, Any]]:
    """``client.history(**query)``, retried as the docs advise while the error is retryable.

    On a loaded machine the broker can miss the actor's heartbeats during a big query and call
    it down (``unavailable``); the actor registers again and the query is repeated.
    """
    deadline = time.monotonic() + scaled(30)
    while True:
        try:
            return client.history(**query)
        except SpotflowError as exc:
            retryable = isinstance(exc.__cause__, BusError) and exc.__cause__.retryable
            if not retryable or time.monotonic() > deadline:
                raise
            wait_until(lambda: _pings(client), scaled(20), "actor back")


def _pings(client: DeviceClient) -> bool:
    try:
        client._call("ping", timeout=1.0)
        return True
    except SpotflowError:
        return False
