"""bus.metrics in-process: the collector's families from a broker's tables (no sockets), the HTTP
server's life (a free port, a scrape, close), and what it refuses: a bad address, a port in use,
actor figures on a secured broker without keys. The real line is tests/integration/test_metrics.py.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bus.config import SecurityConfig, loads
from bus.directory import LATENCY_BOUNDS, Directory
from bus.errors import ConfigError
from bus.metrics import BrokerCollector, MetricsServer, TelemetryStats
from bus.subscribers import SubscriberReports
from tests.conftest import KEY_VARIABLES


@dataclass
class FakeBroker:
    """The tables a ``Broker`` keeps, as ``BrokerView`` reads them."""

    routed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    directory: Directory = field(default_factory=Directory)
    subscribers: SubscriberReports = field(default_factory=SubscriberReports)
    endpoints: dict[str, str] = field(default_factory=lambda: {"command": "tcp://127.0.0.1:1"})
    security: SecurityConfig = field(default_factory=SecurityConfig)
    handshakes: dict[str, int] = field(default_factory=dict)
    event_counts: dict[str, int] = field(default_factory=dict)


def scrape(broker: FakeBroker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_families_from_the_broker_tables() -> None:
    """Counters by kind and reason, a service's state, restarts and queue, and its latency
    buckets turned cumulative with +Inf, count and sum."""
    broker = FakeBroker()
    broker.routed.update(request=3, reply=2)
    broker.dropped["unknown_service"] = 4
    entry = broker.directory.register("echo1", b"a", {"kind": "echo", "pid": 1}, 0.0)
    broker.directory.mark_down(entry, "gone")
    broker.directory.register("echo1", b"b", {"kind": "echo", "pid": 2}, 0.0)
    entry.latency[0] = 2  # two answers within the first bound
    entry.latency[-1] = 1  # one beyond the last
    entry.latency_sum = 400.5
    samples = scrape(broker)
    echo = (("kind", "echo"), ("service", "echo1"))
    assert samples[("linebus_routed_messages_total", (("kind", "request"),))] == 3
    assert samples[("linebus_dropped_messages_total", (("reason", "unknown_service"),))] == 4
    assert samples[("linebus_service_up", echo)] == 1
    assert samples[("linebus_service_restarts_total", echo)] == 1
    assert samples[("linebus_service_registrations_total", echo)] == 2
    assert abs(samples[("linebus_service_start_time_seconds", echo)] - time.time()) < 60
    assert samples[("linebus_service_inflight_requests", echo)] == 0
    buckets = {
        labels[0][1]: count
        for (name, labels), count in samples.items()
        if name == "linebus_request_duration_seconds_bucket"
    }
    assert buckets[repr(LATENCY_BOUNDS[0])] == 2 and buckets[repr(LATENCY_BOUNDS[-1])] == 2
    assert buckets["+Inf"] == 3 and len(buckets) == len(LATENCY_BOUNDS) + 1
    service = (("service", "echo1"),)
    assert samples[("linebus_request_duration_seconds_count", service)] == 3
    assert samples[("linebus_request_duration_seconds_sum", service)] == 400.5
    assert not [
        name for name, _ in samples if name.startswith(("linebus_handshakes", "linebus_events"))
    ]


def test_security_figures() -> None:
    """A secured broker's handshakes by result, and the checked event path's counts."""
    broker = FakeBroker(
        handshakes={"accepted": 5, "unknown key": 2},
        event_counts={"forwarded": 40, "forbidden_publish": 1, "malformed": 3},
    )
    samples = scrape(broker)
    assert samples[("linebus_handshakes_total", (("result", "accepted"),))] == 5
    assert samples[("linebus_handshakes_total", (("result", "unknown key"),))] == 2
    assert samples[("linebus_events_forwarded_total", ())] == 40
    refused = {
        labels[0][1]: count
        for (name, labels), count in samples.items()
        if name == "linebus_events_refused_total"
    }
    assert refused == {"forbidden_publish": 1, "forbidden_subscribe": 0, "malformed": 3}


def test_the_server_serves_on_a_free_port_until_closed() -> None:
    with MetricsServer(FakeBroker(), "127.0.0.1:0") as server:
        url = server.start()
        assert url == f"http://127.0.0.1:{server.port}/metrics" and server.port > 0
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert "# HELP linebus_routed_messages_total" in text
        assert "process_resident_memory_bytes" in text  # the broker process's own figures
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
        pass


def test_a_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(FakeBroker(), f"127.0.0.1:{port}")
        with pytest.raises(ConfigError, match=rf"metrics 127.0.0.1:{port}: cannot listen"):
            server.start()
        server.close()


@pytest.mark.parametrize("text", ["9750", "host:", "host:65536", ":9750", "[::1]"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ConfigError, match=r"\[broker\] metrics: listen address .* not HOST:PORT"):
        MetricsServer(FakeBroker(), text)
    with pytest.raises(ConfigError, match=r"\[broker\]: metrics must be \"host:port\""):
        loads(f'[broker]\nmetrics = "{text}"\n')


def test_listen_addresses() -> None:
    server = MetricsServer(FakeBroker(), "[::1]:0")
    assert (server.host, server.port, server.url) == ("::1", 0, "http://[::1]:0/metrics")
    assert loads('[broker]\nmetrics = "127.0.0.1:9750"\n').broker.metrics == "127.0.0.1:9750"


def test_secured_broker_without_keys_asks_no_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a secured broker without key variables the scrape cannot ask actors: each telemetry
    service shows stats_success 0 (and nothing is connected)."""
    for variable in KEY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    stats = TelemetryStats(lambda: "tcp://127.0.0.1:1", curve=True)
    try:
        assert stats.get(["tel"]) == {"tel": None}
    finally:
        stats.close()
