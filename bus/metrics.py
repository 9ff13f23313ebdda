"""The broker's ``/metrics``: what it counts, in the Prometheus text format (prometheus-client).

``[broker] metrics = "127.0.0.1:9750"`` (or ``linebus broker --metrics``) makes ``bus.broker.serve``
start a ``MetricsServer``: prometheus-client's HTTP server in a thread of the broker's process,
answering every scrape with what ``BrokerCollector`` reads at that moment. Nothing here runs per
message: the broker keeps its counters as it always has (``routed``, ``dropped``, the directory's
rows) plus one int per answered request in a preallocated list of latency buckets
(``ServiceEntry.latency``); the collector turns them into metric families when scraped.

Thread safety: the collector runs in the HTTP server's thread while the broker's loop changes
what it reads. It copies each table with one C-level call (``dict(counter)``,
``list(dict.values())``), which CPython runs under the GIL without a switch to another thread,
and reads the rows' fields one by one (a scrape may see a service between two of its fields'
updates: a counter one answer behind its neighbour, never a torn value). No lock is taken on the
broker's side.

Figures only actors have (a telemetry actor's pending, forwarded and evicted messages) are read
by asking them, as any client would: ``TelemetryStats`` calls ``stats`` on each telemetry actor
that is up, all at once with a short deadline, on a client of its own connected to the broker's
command endpoint, and keeps the answers for ``max_age_s`` so that frequent scrapes do not load
the actors. On a secured line that client needs an identity the access list lets call
``<service>.stats``: ``LINEBUS_KEY_FILE`` and ``LINEBUS_BROKER_KEY_FILE`` in the broker's
environment (``ClientKeys.load``; ``linebus up`` gives it the supervisor's); without them the
scrape carries the broker's figures only.

Metric names (``linebus_`` prefix, ``_total`` counters, seconds and bytes) are listed with their
HELP text in the functions ``BrokerCollector.collect`` calls, and in the README's "Metrics
(Prometheus)".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import structlog
import zmq
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from bus import protocol
from bus.client import Call, Client, ClientKeys
from bus.config import SecurityConfig, parse_listen
from bus.directory import LATENCY_BOUNDS, UP, Directory, ServiceEntry
from bus.errors import BusError, ConfigError
from bus.subscribers import SubscriberReports

__all__ = ["BrokerCollector", "BrokerView", "MetricsServer", "TelemetryStats"]

log = structlog.get_logger()

#: The kind of actor whose ``stats`` the scrape carries (actors/telemetry).
TELEMETRY_KIND = "telemetry"
#: The telemetry store's drop reason of a forwarded message evicted to stay within its quota
#: (actors.telemetry.store.EVICTED_FOR_QUOTA; bus imports no actor package).
_EVICTED = "evicted_forwarded_for_quota"
#: The ``le`` labels of the latency buckets (Python's repr of a float is the text format's form).
_LE = [repr(bound) for bound in LATENCY_BOUNDS]


class BrokerView(Protocol):
    """What the collector reads of a ``bus.broker.Broker`` (which it may not import)."""

    @property
    def routed(self) -> Mapping[str, int]: ...
    @property
    def dropped(self) -> Mapping[str, int]: ...
    @property
    def directory(self) -> Directory: ...
    @property
    def subscribers(self) -> SubscriberReports: ...
    @property
    def endpoints(self) -> Mapping[str, str]: ...
    @property
    def security(self) -> SecurityConfig: ...
    @property
    def handshakes(self) -> Mapping[str, int]: ...
    @property
    def event_counts(self) -> Mapping[str, int]: ...


class TelemetryStats:
    """The ``stats`` of telemetry actors, asked for when scraped and kept ``max_age_s``.

    Args:
        endpoint: The broker's command endpoint (read when the first call is made).
        curve: Whether the broker is secured: the client then needs keys from the environment,
            and without them ``get`` answers nothing (logged once).
        timeout_s: The deadline of each ``stats`` call (all are made at once).
        max_age_s: How long answers are reused before the actors are asked again.
    """

    def __init__(
        self,
        endpoint: Callable[[], str],
        *,
        curve: bool,
        timeout_s: float = 1.0,
        max_age_s: float = 1.0,
    ) -> None:
        self._endpoint = endpoint
        self._curve = curve
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self._lock = threading.Lock()  # scrapes are served by a thread each
        self._ctx: zmq.Context[Any] | None = None
        self._client: Client | None = None
        self._off = False
        self._asked_at = -float("inf")
        self._names: tuple[str, ...] = ()
        self._answers: dict[str, dict[str, Any] | None] = {}

    def get(self, names: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Each named service's ``stats`` result, or None where the call failed."""
        with self._lock:
            key = tuple(sorted(names))
            if key == self._names and time.monotonic() - self._asked_at < self.max_age_s:
                return self._answers
            client = self._connect() if key else None
            answers: dict[str, dict[str, Any] | None] = dict.fromkeys(key)
            if client is not None:
                try:
                    calls = [(n, client.start(n, "stats", timeout=self.timeout_s)) for n in key]
                    for name, call in calls:
                        result = _result(call, name)
                        answers[name] = result if isinstance(result, dict) else None
                except BusError as exc:  # the broker itself cannot be reached
                    log.info("metrics_stats_failed", error=exc.message)
            self._names, self._answers, self._asked_at = key, answers, time.monotonic()
            return answers

    def _connect(self) -> Client | None:
        if self._client is not None or self._off:
            return self._client
        keys: ClientKeys | None = None
        if self._curve:
            try:
                keys = ClientKeys.load()
                problem = "" if keys is not None else "no key variables in its environment"
            except BusError as exc:  # a key configured but unusable
                problem = exc.message
            if keys is None:
                log.warning(
                    "metrics_actor_stats_off",
                    reason=f"a secured broker, {problem}: set LINEBUS_KEY_FILE and "
                    "LINEBUS_BROKER_KEY_FILE for the scrape to ask actors for their stats",
                )
                self._off = True
                return None
        self._ctx = zmq.Context()
        self._client = Client(
            self._endpoint(), timeout=self.timeout_s, ctx=self._ctx, keys=keys or False
        )
        return self._client

    def close(self) -> None:
        """Close the client and its context (nothing to do if no scrape ever asked)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._ctx is not None:
                self._ctx.term()
                self._ctx = None


def _result(call: Call, service: str) -> Any:
    """The result of ``call``, or None (logged) if it failed."""
    try:
        return call.result()
    except BusError as exc:
        log.info("metrics_stats_failed", service=service, error=exc.message)
        return None


class BrokerCollector:
    """A prometheus-client collector of a broker's figures, read when scraped.

    Args:
        broker: The broker (``bus.broker.Broker``) whose counters it reads.
        telemetry: Where telemetry actors' ``stats`` come from; None: not asked.
    """

    def __init__(self, broker: BrokerView, telemetry: TelemetryStats | None = None) -> None:
        self.broker = broker
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        """Every metric family, from one copy of each of the broker's tables."""
        broker = self.broker
        entries = list(broker.directory.by_name.values())
        yield from _counters(broker)
        yield from _services(entries)
        yield from _subscribers(broker.subscribers)
        if self.telemetry is not None:
            names = [e.name for e in entries if e.kind == TELEMETRY_KIND and e.state == UP]
            yield from _telemetry(self.telemetry.get(names))


def _counters(broker: BrokerView) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "linebus_broker_info",
        "The broker: its protocol version and whether CURVE secures it (always 1).",
        labels=["version", "curve"],
    )
    info.add_metric([str(protocol.VERSION), str(broker.security.curve).lower()], 1)
    yield info
    routed = CounterMetricFamily(
        "linebus_routed_messages",
        "Messages the broker routed, by kind: request, progress, reply, error, cancel; "
        "internal for the broker's own commands answered.",
        labels=["kind"],
    )
    for kind, count in sorted(dict(broker.routed).items()):
        routed.add_metric([kind], count)
    yield routed
    dropped = CounterMetricFamily(
        "linebus_dropped_messages",
        "Messages the broker did not route, by reason (unknown_service, unavailable, deadline, "
        "backpressure, late_reply, malformed, forbidden, ...); see linebus stats.",
        labels=["reason"],
    )
    for reason, count in sorted(dict(broker.dropped).items()):
        dropped.add_metric([reason], count)
    yield dropped
    handshakes = CounterMetricFamily(
        "linebus_handshakes",
        "CURVE handshakes the broker's ZAP handler decided, by result: accepted, or the refusal "
        "reason (none without CURVE).",
        labels=["result"],
    )
    for result, count in sorted(broker.handshakes.items()):
        handshakes.add_metric([result], count)
    yield handshakes
    events = broker.event_counts
    forwarded = CounterMetricFamily(
        "linebus_events_forwarded",
        "Events the checked event path forwarded (only when the access list checks publishing "
        "or subscribing: libzmq's C proxy counts nothing).",
    )
    refused = CounterMetricFamily(
        "linebus_events_refused",
        "Events and subscriptions the checked event path refused, by reason.",
        labels=["reason"],
    )
    if events:
        forwarded.add_metric([], events.get("forwarded", 0))
        for reason in ("forbidden_publish", "forbidden_subscribe", "malformed"):
            refused.add_metric([reason], events.get(reason, 0))
    yield forwarded
    yield refused


def _services(entries: list[ServiceEntry]) -> Iterator[Metric]:
    labels = ["service", "kind"]
    up = GaugeMetricFamily(
        "linebus_service_up", "1 while the service is registered and alive, else 0.", labels=labels
    )
    restarts = CounterMetricFamily(
        "linebus_service_restarts",
        "Times the service came back: registered after being down, or by a new process.",
        labels=labels,
    )
    registrations = CounterMetricFamily(
        "linebus_service_registrations",
        "READY messages that registered the service.",
        labels=labels,
    )
    started = GaugeMetricFamily(
        "linebus_service_start_time_seconds",
        "When the service's current run came up (Unix time); absent while down.",
        labels=labels,
    )
    inflight = GaugeMetricFamily(
        "linebus_service_inflight_requests",
        "Requests forwarded to the service and not yet answered (its queue, as the broker sees it).",
        labels=labels,
    )
    latency = HistogramMetricFamily(
        "linebus_request_duration_seconds",
        "From the broker forwarding a request to the service's final answer (reply or error) "
        "arriving; requests the broker failed itself (deadline, down) are not in it.",
        labels=["service"],
    )
    for entry in sorted(entries, key=lambda e: e.name):
        values = [entry.name, entry.kind]
        up.add_metric(values, 1 if entry.state == UP else 0)
        restarts.add_metric(values, entry.restarts)
        registrations.add_metric(values, entry.registrations)
        since = entry.up_since
        if since is not None:
            started.add_metric(values, since)
        inflight.add_metric(values, len(entry.inflight))
        counts = list(entry.latency)
        total = 0
        buckets: list[tuple[str, float]] = []
        for le, count in zip([*_LE, "+Inf"], counts, strict=True):
            total += count
            buckets.append((le, total))
        latency.add_metric([entry.name], buckets, entry.latency_sum)
    yield from (up, restarts, registrations, started, inflight, latency)


def _subscribers(reports: SubscriberReports) -> Iterator[Metric]:
    labels = ["subscriber", "identity", "prefixes"]
    missed = CounterMetricFamily(
        "linebus_subscriber_missed_events",
        "Events a subscriber reported missing (sequence gaps), as it last reported.",
        labels=labels,
    )
    repaired = CounterMetricFamily(
        "linebus_subscriber_repaired_events",
        "Missed events a subscriber fetched back from the publisher, as it last reported.",
        labels=labels,
    )
    age = GaugeMetricFamily(
        "linebus_subscriber_report_age_seconds",
        "Seconds since the subscriber's last report (rows expire after 10 minutes).",
        labels=labels,
    )
    for row in reports.snapshot():
        values = [row["subscriber"], row["identity"] or "", ",".join(row["prefixes"])]
        missed.add_metric(values, row["missed"])
        repaired.add_metric(values, row["repaired"])
        age.add_metric(values, row["age_s"])
    yield from (missed, repaired, age)


def _number(value: Any) -> float | None:
    """``value`` if it is a number (not a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _telemetry(answers: dict[str, dict[str, Any] | None]) -> Iterator[Metric]:
    labels = ["service"]
    success = GaugeMetricFamily(
        "linebus_telemetry_stats_success",
        "1 if the telemetry actor answered the scrape's stats call in time, else 0.",
        labels=labels,
    )
    gauges = {
        "pending": GaugeMetricFamily(
            "linebus_telemetry_pending_messages",
            "Messages stored and not yet forwarded upstream.",
            labels=labels,
        ),
        "bytes_used": GaugeMetricFamily(
            "linebus_telemetry_stored_bytes", "Bytes of messages in the store.", labels=labels
        ),
        "quota_bytes": GaugeMetricFamily(
            "linebus_telemetry_quota_bytes", "The store's quota in bytes.", labels=labels
        ),
    }
    forwarded = CounterMetricFamily(
        "linebus_telemetry_forwarded_messages",
        "Messages the upstream acknowledged.",
        labels=labels,
    )
    evicted = CounterMetricFamily(
        "linebus_telemetry_evicted_messages",
        "Forwarded messages evicted from the store to stay within its quota.",
        labels=labels,
    )
    dropped = CounterMetricFamily(
        "linebus_telemetry_dropped_messages",
        "Messages the store dropped or refused, by reason (eviction included).",
        labels=["service", "reason"],
    )
    online = GaugeMetricFamily(
        "linebus_telemetry_upstream_online",
        "1 if the last exchange with the upstream succeeded, else 0.",
        labels=labels,
    )
    failures = CounterMetricFamily(
        "linebus_telemetry_upload_failures",
        "Uploads to the upstream that failed (retried later).",
        labels=labels,
    )
    for name, stats in sorted(answers.items()):
        success.add_metric([name], 0 if stats is None else 1)
        if stats is None:
            continue
        for key, family in gauges.items():
            value = _number(stats.get(key))
            if value is not None:
                family.add_metric([name], value)
        value = _number(stats.get("forwarded_total"))
        if value is not None:
            forwarded.add_metric([name], value)
        drops = stats.get("drops")
        if isinstance(drops, dict):
            evicted.add_metric([name], _number(drops.get(_EVICTED)) or 0.0)
            for reason, count in sorted(drops.items()):
                value = _number(count)
                if isinstance(reason, str) and value is not None:
                    dropped.add_metric([name, reason], value)
        forwarder = stats.get("forwarder")
        if isinstance(forwarder, dict):
            if isinstance(forwarder.get("online"), bool):
                online.add_metric([name], 1 if forwarder["online"] else 0)
            value = _number(forwarder.get("failures"))
            if value is not None:
                failures.add_metric([name], value)
    yield from (success, *gauges.values(), forwarded, evicted, dropped, online, failures)


class MetricsServer:
    """``/metrics`` of a broker over HTTP, from a thread of the broker's process.

    Args:
        broker: The broker to report on (started or not: its endpoints are read when a scrape
            first asks an actor).
        address: ``"host:port"`` to listen on (port 0: a free one; ``url`` tells which).
        telemetry: Ask telemetry actors for their ``stats`` when scraped (see ``TelemetryStats``).
    """

    def __init__(self, broker: BrokerView, address: str, *, telemetry: bool = True) -> None:
        try:
            self.host, self.port = parse_listen(address)
        except ConfigError as exc:
            raise ConfigError(f"[broker] metrics: {exc.message}") from None
        self.telemetry = (
            TelemetryStats(lambda: broker.endpoints["command"], curve=broker.security.curve)
            if telemetry
            else None
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(broker, self.telemetry))
        ProcessCollector(registry=self.registry)  # the broker process: CPU, memory, open files
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port/metrics`` as bound (the port chosen when 0 was asked)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> str:
        """Listen and serve in a thread; return ``url``.

        Raises:
            ConfigError: the address cannot be listened on (in use, not local, ...).
        """
        try:
            server, thread = start_http_server(self.port, self.host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"[broker] metrics {self.host}:{self.port}: cannot listen: {exc.strerror or exc}"
            ) from None
        self._server, self._thread = server, thread
        self.port = server.server_address[1]
        log.info("metrics_listening", url=self.url)
        return self.url

    def close(self) -> None:
        """Stop serving, close the listening socket and the telemetry client."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self.telemetry is not None:
            self.telemetry.close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
