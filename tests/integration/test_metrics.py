"""The broker's ``/metrics`` against a real line: the broker process with ``[broker] metrics``,
an echo actor and a telemetry actor (whose upstream nobody listens on, so what it stores stays
pending), each its own process; every scrape is parsed with prometheus-client's own text parser.

One line for the module (a broker and two actors take a few seconds to start); each test reads
the figures it changes before and after, so the order of the tests does not matter. In the
secured pass the broker has the tester's key in its environment: the scrape asks the telemetry
actor for its ``stats`` over CURVE, as an operator.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.client import Client
from bus.errors import UnknownService
from tests.conftest import (
    ECHO,
    SECURE,
    Endpoints,
    Line,
    Processes,
    free_port,
    key_environment,
    scaled,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

#: (metric sample name, frozenset of label items) -> value, for one scrape.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class MetricsLine:
    """The running line, its ``/metrics`` URL, and a client."""

    def __init__(self, line: Line, url: str) -> None:
        self.line = line
        self.url = url
        self.client: Client = line.client(timeout=10)

    def scrape(self) -> Samples:
        """One scrape, parsed (a malformed exposition fails the parser, hence the test)."""
        with urllib.request.urlopen(self.url, timeout=scaled(10)) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels``, or None."""
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def metrics_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsLine]:
    tmp = Path(tmp_path_factory.mktemp("metrics"))
    telemetry = {
        "db": str(tmp / "telemetry.db"),
        "instance_url": f"http://127.0.0.1:{free_port()}",  # nobody: messages stay pending
        "provisioning_token": "factory-token",
        "request_timeout_s": 1.0,
        "backoff_max_s": 0.5,
    }
    address = f"127.0.0.1:{free_port()}"
    endpoints = Endpoints.fresh()
    config = write_config(
        tmp / "line.toml",
        endpoints,
        [{"name": "echo1", **ECHO}, {"name": "tel", "kind": "telemetry", "options": telemetry}],
        broker={"metrics": address},
        # 2.5 s of silence before an actor is called down: no spurious restart on a loaded machine
        # (the restart test counts exactly one).
        heartbeat_s=1.0,
    )
    processes = Processes()
    try:
        line = Line(config, endpoints, processes)
        # The tester's key (secured pass): the identity the scrape asks the actors with.
        line.broker = processes.start(
            "-m", "bus.cli", "broker", "--config", str(config), env=key_environment()
        )
        line.wait_broker()
        line.start_actor("echo1")
        line.start_actor("tel")
        running = MetricsLine(line, f"http://{address}/metrics")
        try:
            yield running
        finally:
            running.client.close()
    finally:
        processes.cleanup()


def test_calls_move_the_routed_counters_and_the_latency_histogram(
    metrics_line: MetricsLine,
) -> None:
    """Five calls: five more requests and replies routed, five more observations in echo1's
    latency histogram, in cumulative buckets ending with +Inf at the count."""
    before = metrics_line.scrape()
    for i in range(5):
        assert metrics_line.client.call("echo1", "echo", value=i) == i
    after = metrics_line.scrape()

    def moved(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0.0) - (value(before, name, **labels) or 0.0)

    assert moved("linebus_routed_messages_total", kind="request") >= 5
    assert moved("linebus_routed_messages_total", kind="reply") >= 5
    assert moved("linebus_request_duration_seconds_count", service="echo1") == 5
    assert moved("linebus_request_duration_seconds_sum", service="echo1") > 0
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in after.items()
        if name == "linebus_request_duration_seconds_bucket" and ("service", "echo1") in labels
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), counts[-1])
    assert counts[-1] == value(after, "linebus_request_duration_seconds_count", service="echo1")
    assert value(after, "linebus_service_up", service="echo1", kind="echo") == 1
    assert value(after, "linebus_service_inflight_requests", service="echo1", kind="echo") == 0
    # Secured pass: the broker's ZAP handler let in at least the two actors, this test's client
    # and the scrape's own client; plaintext: no handshake is decided.
    accepted = value(after, "linebus_handshakes_total", result="accepted")
    assert (accepted or 0) >= 4 if SECURE else accepted is None


def test_unknown_service_drops_are_counted_by_reason(metrics_line: MetricsLine) -> None:
    before = value(
        metrics_line.scrape(), "linebus_dropped_messages_total", reason="unknown_service"
    )
    for _ in range(2):
        with pytest.raises(UnknownService):
            metrics_line.client.call("nosuch", "echo")
    after = value(metrics_line.scrape(), "linebus_dropped_messages_total", reason="unknown_service")
    assert after == (before or 0) + 2


def test_killed_actor_is_down_then_counted_restarted(metrics_line: MetricsLine) -> None:
    """kill -9 of echo1: its up gauge drops to 0; started again (a new process): 1, with one
    restart counted and a start time."""
    line = metrics_line.line
    labels = {"service": "echo1", "kind": "echo"}
    restarts = value(metrics_line.scrape(), "linebus_service_restarts_total", **labels)
    os.kill(line.actors["echo1"].pid, signal.SIGKILL)
    line.actors["echo1"].wait(timeout=scaled(10))
    wait_until(
        lambda: value(metrics_line.scrape(), "linebus_service_up", **labels) == 0,
        scaled(10),
        "echo1 down in /metrics",
    )
    line.start_actor("echo1")
    after = metrics_line.scrape()
    assert value(after, "linebus_service_up", **labels) == 1
    assert value(after, "linebus_service_restarts_total", **labels) == (restarts or 0) + 1
    assert (value(after, "linebus_service_start_time_seconds", **labels) or 0) > 0


def test_telemetry_and_subscriber_figures(metrics_line: MetricsLine) -> None:
    """The telemetry actor's pending messages (its upstream is unreachable) and a subscriber's
    reported gap appear in the scrape."""
    client = metrics_line.client
    pending = client.call("tel", "pending_messages_count")
    client.call("tel", "enqueue_messages", messages=["a", "b", "c"])
    client.call("broker", "report_subscriber", subscriber="metrics-test", prefixes=["x."], missed=4)

    def figures() -> Samples | None:
        samples = metrics_line.scrape()  # the actor's stats are kept ~1 s between asks
        found = value(samples, "linebus_telemetry_pending_messages", service="tel")
        return samples if found == pending + 3 else None

    samples = wait_until(figures, scaled(10), "3 more pending messages in /metrics")
    assert value(samples, "linebus_telemetry_stats_success", service="tel") == 1
    assert value(samples, "linebus_telemetry_evicted_messages_total", service="tel") == 0
    assert value(samples, "linebus_telemetry_forwarded_messages_total", service="tel") == 0
    # Its identity label is the caller's: "" in the plain pass, the tester's under CURVE.
    missed = [
        count
        for (name, labels), count in samples.items()
        if name == "linebus_subscriber_missed_events_total"
        and {("subscriber", "metrics-test"), ("prefixes", "x.")} <= labels
    ]
    assert missed == [4]
