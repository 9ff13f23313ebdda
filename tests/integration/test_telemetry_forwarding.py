"""The telemetry forwarder against the real ingest server process on 127.0.0.1: exactly-once
across a kill -9 between send and ack, backlog after an outage, 500 and 429 handling, twin."""

from __future__ import annotations

import itertools
import json
import os
import queue
import selectors
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from actors.telemetry import (
    Compression,
    DesiredProperties,
    ForwarderConfig,
    OutgoingMessage,
    TelemetryConfig,
    TelemetryDriver,
    TelemetryStore,
)
from bus.errors import PermissionDenied, Unavailable
from tests.conftest import Processes, free_port, scaled, wait_ready_line, wait_until

pytestmark = pytest.mark.integration

TOKEN = "factory-token"

# A device process that appends 10 messages per transaction, forever, and prints each ack
# line only after append_many returned (= after commit). The test kills it with SIGKILL.
WRITER = r"""
import json, sys
from actors.telemetry import ForwarderConfig, OutgoingMessage, TelemetryConfig, TelemetryDriver
from bus.logs import configure_logging
configure_logging(level="warning")
db, url, token = sys.argv[1:4]
forwarder = ForwarderConfig(instance_url=url, provisioning_token=token, device_id="writer-1", linger_s=0.0,
                            max_batch_messages=25, request_timeout_s=120)
driver = TelemetryDriver.start(TelemetryConfig(db=db, forwarder=forwarder))
for batch in range(1_000_000):
    payloads = [f"w-{batch}-{i}" for i in range(10)]
    acks = driver.enqueue_messages([OutgoingMessage.create(p, stream="crash") for p in payloads])
    print(json.dumps({"seqs": [a.seq for a in acks], "payloads": payloads}), flush=True)
"""


class Ingest:
    """One ingest server process and the operator/test endpoints the tests use."""

    def __init__(self, processes: Processes, db: Path, log: Path, port: int) -> None:
        with log.open("ab") as stderr:  # the child keeps its own copy
            self.proc = processes.start(
                "-m",
                "actors.telemetry.ingest_server",
                "--port",
                str(port),
                "--db",
                str(db),
                "--provisioning-token",
                TOKEN,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.url = wait_ready_line(self.proc, scaled(15))["url"]
        self.port = int(self.url.rsplit(":", 1)[1])

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, self.url + path, json=body, timeout=scaled(10))
        response.raise_for_status()
        return response.json()

    def fault(self, **fault: Any) -> None:
        self.call("POST", "/v1/test/faults", fault)

    def requests_log(self, path_part: str = "/uploads/") -> list[dict[str, Any]]:
        return [
            r for r in self.call("GET", "/v1/test/requests")["requests"] if path_part in r["path"]
        ]

    def messages(self, device: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v1/operator/devices/{device}/messages")["messages"])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=scaled(10))


@pytest.fixture
def start_ingest(tmp_path: Path, processes: Processes) -> Callable[..., Ingest]:
    """Start the ingest server (on ``port``, default any); its database persists across restarts."""

    def start(port: int = 0) -> Ingest:
        return Ingest(processes, tmp_path / "ingest.sqlite", tmp_path / "ingest.log", port)

    return start


@pytest.fixture
def ingest(start_ingest: Callable[..., Ingest]) -> Ingest:
    return start_ingest()


def config(tmp_path: Path, url: str, device: str = "dev-1", **overrides: Any) -> TelemetryConfig:
    """Fast back-off and polling so the tests spend little time waiting."""
    settings: dict[str, Any] = {
        "instance_url": url,
        "provisioning_token": TOKEN,
        "device_id": device,
        "linger_s": 0.01,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.4,
        "desired_poll_s": 0.2,
        "request_timeout_s": scaled(5),
    }
    return TelemetryConfig(
        db=str(tmp_path / f"{device}.db"), forwarder=ForwarderConfig(**{**settings, **overrides})
    )


@pytest.fixture
def drivers() -> Iterator[list[TelemetryDriver]]:
    """Drivers registered here are closed at teardown even when the test fails."""
    started: list[TelemetryDriver] = []
    yield started
    for driver in started:
        driver.close(timeout=scaled(10))


def start(drivers: list[TelemetryDriver], cfg: TelemetryConfig, **kwargs: Any) -> TelemetryDriver:
    driver = TelemetryDriver.start(cfg, **kwargs)
    drivers.append(driver)
    return driver


def close(drivers: list[TelemetryDriver], driver: TelemetryDriver) -> None:
    drivers.remove(driver)
    driver.close(timeout=scaled(10))


class AckLines:
    """Reads the writer's JSON ack lines as they come (partial last lines are kept back)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._partial = b""
        self.lines: list[dict[str, Any]] = []

    def read_until(self, count: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while len(self.lines) < count:
            if time.monotonic() > end or not self._selector.select(
                timeout=max(0.0, end - time.monotonic())
            ):
                pytest.fail(
                    f"writer acked {len(self.lines)} batches, wanted {count} within {timeout:.1f} s"
                )
            if not self._drain_once():
                pytest.fail("writer exited early")

    def drain(self) -> None:
        """Read what is left after the writer died."""
        while self._drain_once():
            pass

    def _drain_once(self) -> bool:
        chunk = os.read(self._fd, 65536)
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self.lines += [json.loads(line) for line in complete if line]
        return bool(chunk)


class TestExactlyOnce:
    def test_crash_between_send_and_ack_delivers_every_acked_message_once(
        self, tmp_path: Path, ingest: Ingest, processes: Processes
    ) -> None:
        """kill -9 while the server holds the answer to a stored upload: the reopened store
        resends it under the same id, the server recognises it, and nothing is lost or doubled."""
        ingest.fault(
            status=None, count=1, hold_s=scaled(60), path="/uploads/"
        )  # stored, answer held
        db = tmp_path / "writer-1.db"  # the name config() gives device writer-1
        with (tmp_path / "writer.log").open("ab") as log:  # the child keeps its own copy
            writer = processes.start(
                "-c", WRITER, str(db), ingest.url, TOKEN, stdout=subprocess.PIPE, stderr=log
            )
        acks = AckLines(writer)
        acks.read_until(5, scaled(20))
        wait_until(
            lambda: ingest.call("GET", "/v1/operator/stats")["uploads"] >= 1,
            scaled(15),
            "the held upload to be stored",
        )
        acks.read_until(
            len(acks.lines) + 5, scaled(15)
        )  # still appending while the ack is held: mid-ingest
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=scaled(10))
        acks.drain()
        acked = [p for line in acks.lines for p in line["payloads"]]
        assert ingest.requests_log()[0]["held"]

        driver = TelemetryDriver.start(config(tmp_path, ingest.url, device="writer-1"))
        try:
            assert driver.pending_messages_count() >= len(acked) - len(ingest.messages("writer-1"))
            driver.wait_enqueued_messages_sent(timeout=scaled(30))
            stored_locally = [
                m.payload.decode() for m in driver.history("default", "crash", limit=10**6)
            ]
        finally:
            driver.close()

        delivered = Counter(m["payload"] for m in ingest.messages("writer-1"))
        assert set(acked) <= set(stored_locally), "an acked message was lost by the store"
        assert Counter(stored_locally) == delivered, "store and server disagree"
        assert max(delivered.values()) == 1, "a message was delivered twice"
        assert (
            ingest.call("GET", "/v1/operator/stats")["duplicate_uploads"] >= 1
        )  # the resend happened

    def test_repeated_message_ids_are_stored_once_end_to_end(
        self, tmp_path: Path, ingest: Ingest, drivers: list[TelemetryDriver]
    ) -> None:
        """Enqueueing the same message id twice (after it was sent) gives one stored message."""
        driver = start(drivers, config(tmp_path, ingest.url))
        driver.send_message("a", stream="s", batch_id="b", message_id="m1", timeout=scaled(10))
        assert driver.enqueue_message("a", stream="s", batch_id="b", message_id="m1").duplicate
        driver.send_message("b", stream="s", batch_id="b", message_id="m2", timeout=scaled(10))
        assert [m["message_id"] for m in ingest.messages("dev-1")] == ["m1", "m2"]


class TestOutage:
    def test_backlog_after_outage_is_delivered_in_order(
        self, tmp_path: Path, start_ingest: Callable[..., Ingest], drivers: list[TelemetryDriver]
    ) -> None:
        """Server down: messages queue (and the device even restarts offline); server back: the
        backlog arrives complete and in per-stream order."""
        port = free_port()
        ingest = start_ingest(port)
        cfg = config(tmp_path, ingest.url)
        driver = start(drivers, cfg)
        ingest.stop()
        for i in range(150):
            driver.enqueue_messages(
                [
                    OutgoingMessage.create(f"{s}-{i}", stream=s, message_id=str(i))
                    for s in ("a", "b")
                ]
            )
        wait_until(
            lambda: driver.forwarder.stats()["failures"] >= 1,
            scaled(10),
            "the forwarder to notice the outage",
        )
        close(drivers, driver)

        driver = start(drivers, cfg)  # offline start: the stored registration is enough
        assert driver.pending_messages_count() == 300 and driver.device_id == "dev-1"
        start_ingest(port)
        driver.wait_enqueued_messages_sent(timeout=scaled(30))
        received = ingest.messages("dev-1")
        for stream in ("a", "b"):
            payloads = [m["payload"] for m in received if m["stream"] == stream]
            assert payloads == [f"{stream}-{i}" for i in range(150)]

    def test_first_start_without_network_fails_unavailable(self, tmp_path: Path) -> None:
        """With no stored registration, start must provision, which needs the upstream."""
        with pytest.raises(Unavailable):
            TelemetryDriver.start(
                config(tmp_path, f"http://127.0.0.1:{free_port()}", request_timeout_s=1.0)
            )

    def test_bad_provisioning_token_is_refused(self, tmp_path: Path, ingest: Ingest) -> None:
        """The upstream's 401 on provisioning surfaces as PermissionDenied and releases the store."""
        cfg = config(tmp_path, ingest.url, provisioning_token="wrong")
        with pytest.raises(PermissionDenied):
            TelemetryDriver.start(cfg)
        TelemetryStore.open(cfg.db).close()


class TestRetries:
    def test_500s_are_retried_with_growing_backoff_and_stored_once(
        self, tmp_path: Path, ingest: Ingest, drivers: list[TelemetryDriver]
    ) -> None:
        """Three 500s: the same upload id is retried after growing pauses, then stored once."""
        driver = start(drivers, config(tmp_path, ingest.url))
        ingest.fault(status=500, count=3, path="/uploads/")
        driver.enqueue_messages([OutgoingMessage.create(f"m{i}", stream="s") for i in range(20)])
        driver.wait_enqueued_messages_sent(timeout=scaled(15))
        log = ingest.requests_log()
        assert [r["fault"] for r in log] == [500, 500, 500, None]
        assert len({r["path"] for r in log}) == 1  # one upload id throughout
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(log)]
        # Nominal 0.05, 0.1, 0.2 s with jitter in the upper half: never less than half of each.
        assert gaps[0] >= 0.025 and gaps[1] >= 0.05 and gaps[2] >= 0.1, gaps
        assert [m["payload"] for m in ingest.messages("dev-1")] == [f"m{i}" for i in range(20)]

    def test_429_retry_after_is_honoured(
        self, tmp_path: Path, ingest: Ingest, drivers: list[TelemetryDriver]
    ) -> None:
        """A 429 with Retry-After: 1 delays the next attempt by at least a second (back-off is 0.05 s)."""
        driver = start(drivers, config(tmp_path, ingest.url))
        ingest.fault(status=429, count=1, retry_after=1, path="/uploads/")
        driver.send_message("x", stream="s", timeout=scaled(15))
        first, second = ingest.requests_log()
        assert (first["fault"], second["fault"]) == (429, None)
        assert second["t"] - first["t"] >= 0.95
        assert driver.forwarder.stats()["throttled"] == 1


class TestStreams:
    def test_compression_chunks_and_batches(
        self, tmp_path: Path, ingest: Ingest, drivers: list[TelemetryDriver]
    ) -> None:
        """A compressing stream's uploads go deflated, an uncompressed stream's plain; chunks are
        assembled on message completion; batches close on completion or when the next one starts."""
        driver = start(drivers, config(tmp_path, ingest.url))
        driver.send_message(
            "reading 21.5 C " * 100,
            stream="z",
            compression=Compression.SMALLEST_SIZE,
            timeout=scaled(10),
        )
        driver.send_message("reading 21.5 C " * 100, stream="r", timeout=scaled(10))
        ids = {"stream": "c", "batch_id": "b1", "message_id": "img"}
        for n, part in enumerate(["AA", "BB", "CC"]):
            driver.enqueue_message(part, chunk_id=str(n), **ids)
        driver.enqueue_message_completion("b1", "img", stream="c")
        driver.enqueue_message("next", stream="c", batch_id="b2", message_id="m")
        driver.enqueue_batch_completion("b2", stream="c")
        driver.wait_enqueued_messages_sent(timeout=scaled(10))

        assert [r["encoding"] for r in ingest.requests_log()[:2]] == ["deflate", None]
        received = ingest.messages("dev-1")
        assert received[0]["payload"] == "reading 21.5 C " * 100
        assembled = [m for m in received if m["message_id"] == "img" and m["chunk_id"] is None]
        assert [m["payload"] for m in assembled] == ["AABBCC"]
        batches = ingest.call("GET", "/v1/operator/devices/dev-1/batches")["batches"]
        assert [(b["batch_id"], b["completed_by"]) for b in batches if b["stream"] == "c"] == [
            ("b1", "next_batch"),
            ("b2", "complete_batch"),
        ]


class TestTwin:
    def test_desired_and_reported_round_trip(
        self, tmp_path: Path, ingest: Ingest, drivers: list[TelemetryDriver]
    ) -> None:
        """Operator sets desired → device callback and getters; device reports → operator sees the merge."""
        updates: queue.Queue[DesiredProperties] = queue.Queue()
        driver = start(
            drivers, config(tmp_path, ingest.url), desired_properties_updated_callback=updates.put
        )
        # Before any desired version: the current (empty) properties for None, as the seed says.
        assert driver.get_desired_properties_if_newer(None) == DesiredProperties(0, {})
        assert driver.get_desired_properties_if_newer(0) is None
        ingest.call("PUT", "/v1/operator/devices/dev-1/twin/desired", {"values": {"rate_s": 5}})
        assert updates.get(timeout=scaled(10)) == DesiredProperties(1, {"rate_s": 5})
        assert driver.get_desired_properties_if_newer(0) == DesiredProperties(1, {"rate_s": 5})
        assert driver.get_desired_properties_if_newer(1) is None

        driver.update_reported_properties({"fw": "1.2", "sensor": {"ok": True, "temp": 20}})
        driver.update_reported_properties({"sensor": {"temp": None}})
        assert driver.forwarder.wait_reported_sent(timeout=scaled(10))
        assert not driver.any_pending_reported_properties_updates()
        twin = ingest.call("GET", "/v1/operator/devices/dev-1/twin")
        assert twin["reported"] == {"fw": "1.2", "sensor": {"ok": True}}

    def test_desired_is_reread_after_reconnect(
        self, tmp_path: Path, start_ingest: Callable[..., Ingest], drivers: list[TelemetryDriver]
    ) -> None:
        """With polling effectively off, a change made before an outage arrives on reconnect,
        and a restarted device gets its stored desired properties at start."""
        ingest = start_ingest(free_port())
        updates: queue.Queue[DesiredProperties] = queue.Queue()
        cfg = config(tmp_path, ingest.url, desired_poll_s=3600.0)
        driver = start(drivers, cfg, desired_properties_updated_callback=updates.put)
        wait_until(
            lambda: driver.forwarder.online, scaled(10), "the first connect (and its desired read)"
        )
        ingest.call("PUT", "/v1/operator/devices/dev-1/twin/desired", {"values": {"mode": "auto"}})
        ingest.stop()
        driver.enqueue_message("during outage", stream="s")
        wait_until(
            lambda: driver.forwarder.stats()["failures"] >= 1,
            scaled(10),
            "the forwarder to notice the outage",
        )
        assert updates.empty()
        start_ingest(ingest.port)
        assert updates.get(timeout=scaled(10)) == DesiredProperties(1, {"mode": "auto"})
        close(drivers, driver)

        again: queue.Queue[DesiredProperties] = queue.Queue()
        start(drivers, cfg, desired_properties_updated_callback=again.put)
        assert again.get(timeout=scaled(5)) == DesiredProperties(1, {"mode": "auto"})
