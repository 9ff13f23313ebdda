"""``linebus bench``'s own logic, without its processes: the statistics, the pairing of raw and
linebus runs, the report table, the command line, and one tiny round-trip pattern on each side
(against an in-process echo server for raw ZeroMQ, and an in-process line for linebus).

The measurements themselves (a dozen processes, minutes) are what ``linebus bench`` is for.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from bus import bench
from tests.unit.inproc_line import WAIT_S, Line

SERVICE = "bench1"
_servers = itertools.count(1)


class TestStatistics:
    def test_percentile(self) -> None:
        samples = [float(v) for v in range(100, 0, -1)]  # unordered on purpose
        assert bench._percentile(samples, 0.5) == 51.0
        assert bench._percentile(samples, 0.99) == 100.0
        assert bench._percentile(samples, 1.0) == 100.0  # clamped to the last sample
        assert bench._percentile([7.0], 0.99) == 7.0

    def test_summary(self) -> None:
        latencies = [0.001] * 98 + [0.002, 0.010]
        assert bench._summary(100, 0.5, latencies) == pytest.approx(
            {"per_s": 200.0, "p50_ms": 1.0, "p99_ms": 10.0}
        )
        assert bench._summary(100, 0.5, []) == {"per_s": 200.0}  # windowed runs: no latencies

    def test_paired_alternates_and_keeps_the_median_run(self) -> None:
        calls: list[str] = []
        raw_rates = iter([300.0, 100.0, 200.0])
        bus_rates = iter([50.0, 70.0, 60.0])

        def raw() -> dict[str, float]:
            calls.append("raw")
            rate = next(raw_rates)
            return {"per_s": rate, "p50_ms": 1000 / rate}

        def bus() -> dict[str, float]:
            calls.append("bus")
            return {"per_s": next(bus_rates)}

        out = bench._paired(raw, bus)
        assert calls == ["raw", "bus"] * bench.REPEATS
        assert out["raw"] == {"per_s": 200.0, "p50_ms": 5.0, "runs": [300.0, 100.0, 200.0]}
        assert out["bus"] == {"per_s": 60.0, "runs": [50.0, 70.0, 60.0]}

    def test_paired_ranks_bulk_runs_by_throughput(self) -> None:
        rates = iter([1.04, 3.0, 2.06, 9.0, 8.0, 7.0])
        out = bench._paired(lambda: {"MB_per_s": next(rates)}, lambda: {"MB_per_s": next(rates)})
        assert out["raw"] == {"MB_per_s": 2.06, "runs": [1.0, 2.1, 8.0]}
        assert out["bus"] == {"MB_per_s": 7.0, "runs": [3.0, 9.0, 7.0]}

    def test_rss_of_this_process(self) -> None:
        rss = bench._rss_mb(os.getpid())
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        assert 1.0 < rss <= peak_mb + 1.0


#: Figures as ``run`` returns them (with a pattern that has no target yet).
RESULTS: dict[str, Any] = {
    "a_sequential": {
        "raw": {"per_s": 10000.0, "p50_ms": 0.1, "p99_ms": 0.2},
        "nats": {"per_s": 5000.0, "p50_ms": 0.2, "p99_ms": 0.4},
        "bus": {"per_s": 7000.0, "p50_ms": 0.14, "p99_ms": 0.3},
        "aio": {"per_s": 6300.0, "p50_ms": 0.16, "p99_ms": 0.35},
        "ratio": 0.7,
        "ratio_nats": 1.4,
        "ratio_aio": 0.9,
    },
    "c_events_1sub": {
        "raw": {"per_s": 100000.0, "delivered": 1.0},
        "nats": {"per_s": 50000.0, "delivered": 0.5},
        "bus": {"per_s": 65000.0, "delivered": 0.999},
        "ratio": 0.65,
        "ratio_nats": 1.3,
    },
    "d_bulk_16MiB": {
        "raw": {"MB_per_s": 2000.0},
        "bus": {"MB_per_s": 1500.0},
        "ratio": 0.75,
    },
    "x_new_pattern": {"raw": {"per_s": 10.0}, "bus": {"per_s": 5.0}, "ratio": 0.5},
    "broker_rss_after_throughput_runs_MB": 80.3,
    "e_broker_rss_200_actors_MB": 41.0,
}


class TestReport:
    def test_table(self) -> None:
        assert bench.report(RESULTS).splitlines() == [
            "| pattern | raw pyzmq (C proxy) | NATS (nats-py) | linebus | linebus asyncio "
            "| linebus / raw | linebus / NATS | asyncio / sync |",
            "|---|---|---|---|---|---|---|---|",
            "| a_sequential | 10,000 /s (p50 0.100 ms, p99 0.200 ms) "
            "| 5,000 /s (p50 0.200 ms, p99 0.400 ms) "
            "| 7,000 /s (p50 0.140 ms, p99 0.300 ms, target < 1 ms) "
            "| 6,300 /s (p50 0.160 ms, p99 0.350 ms) "
            "| 0.70 (>= 0.75) | 1.40 (>= 1.20) | 0.90 (>= 0.90) |",
            "| c_events_1sub | 100,000 /s, delivered 100.0% | 50,000 /s, delivered 50.0% "
            "| 65,000 /s, delivered 99.9% |  | 0.65 (>= 0.60) | 1.30 |  |",
            "| d_bulk_16MiB | 2,000 MB/s |  | 1,500 MB/s |  | 0.75 (>= 0.70) |  |  |",
            "| x_new_pattern | 10 /s |  | 5 /s |  | 0.50 |  |  |",  # no target yet
            "",
            "transport: TCP on 127.0.0.1 for every side",
            "broker RSS with 200 connected actors (fresh broker): 41.0 MB (target < 60 MB)",
            "broker RSS after the throughput runs above (allocator high-water from 16 MiB "
            "transfers): 80.3 MB",
        ]

    def test_nats_left_out_is_said(self) -> None:
        lines = bench.report({"nats": "NATS rows left out: nats-server is not installed"})
        assert "\nNATS rows left out: nats-server is not installed\n" in lines

    def test_ratios_where_both_sides_ran(self) -> None:
        results: dict[str, Any] = {
            "a": {
                "raw": {"per_s": 100.0},
                "nats": {"per_s": 50.0},
                "bus": {"per_s": 80.0},
                "aio": {"per_s": 72.0},
            },
            "b": {"raw": {"MB_per_s": 10.0}, "bus": {"MB_per_s": 9.0}},
            "c": {"raw": {"per_s": 0.0}, "bus": {"per_s": 5.0}},
            "rss": 12.0,
        }
        bench.add_ratios(results)
        assert results["a"]["ratio"] == pytest.approx(0.8)
        assert results["a"]["ratio_nats"] == pytest.approx(1.6)
        assert results["a"]["ratio_aio"] == pytest.approx(0.9)
        assert results["b"].keys() == {"raw", "bus", "ratio"}  # no NATS or asyncio side
        assert results["b"]["ratio"] == pytest.approx(0.9)
        assert results["c"]["ratio"] == 0.0  # a side that measured nothing divides nothing

    def test_missing_figures_read_zero(self) -> None:
        lines = bench.report({}).splitlines()
        assert lines[2:] == [
            "",
            "transport: TCP on 127.0.0.1 for every side",
            "broker RSS with 200 connected actors (fresh broker): 0.0 MB (target < 60 MB)",
            "broker RSS after the throughput runs above (allocator high-water from 16 MiB "
            "transfers): 0.0 MB",
        ]


class TestMain:
    @pytest.fixture
    def runs(self, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
        """``bench.run`` replaced: records its ``quick`` (and a transport other than tcp) and
        returns ``RESULTS``."""
        seen: list[Any] = []

        def run(quick: bool = False, transport: str = "tcp") -> dict[str, Any]:
            seen.append(quick if transport == "tcp" else (quick, transport))
            return RESULTS

        monkeypatch.setattr(bench, "run", run)
        return seen

    def test_prints_the_table(self, runs: list[bool], capsys: pytest.CaptureFixture[str]) -> None:
        assert bench.main([]) == 0
        assert runs == [False]
        assert capsys.readouterr().out == bench.report(RESULTS) + "\n"

    def test_quick_and_json(self, runs: list[bool], capsys: pytest.CaptureFixture[str]) -> None:
        assert bench.main(["--quick", "--json"]) == 0
        assert runs == [True]
        out = capsys.readouterr().out
        table = bench.report(RESULTS) + "\n"
        assert out.startswith(table)
        assert json.loads(out[len(table) :]) == RESULTS

    def test_the_ipc_transport_is_passed_on_and_said(
        self, runs: list[Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert bench.main(["--quick", "--transport", "ipc"]) == 0
        assert runs == [(True, "ipc")]
        with_ipc = bench.report({**RESULTS, "transport": "ipc"})
        assert "transport: Unix sockets for the C proxy and for linebus" in with_ipc
        assert "NATS on TCP" in with_ipc

    def test_security_measures_on_tcp_only(
        self, runs: list[Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            bench.main(["--security", "--transport", "ipc"])
        assert (exited.value.code, runs) == (2, [])
        assert "--security measures on TCP only" in capsys.readouterr().err

    def test_unknown_option(self, runs: list[bool], capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            bench.main(["--fast"])
        assert (exited.value.code, runs) == (2, [])
        assert "unrecognized arguments: --fast" in capsys.readouterr().err


# --- one tiny pattern on each side ---------------------------------------------------------------


class EchoServer(threading.Thread):
    """A ROUTER on ``inproc://`` in the shared context that answers every request with its own
    body, and counts them (the raw side's proxy and worker, in one)."""

    def __init__(self) -> None:
        super().__init__(name="bench-test-echo", daemon=True)
        self.endpoint = f"inproc://bench-echo-{next(_servers)}"
        self.requests = 0
        self._ready = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        router = zmq.Context.instance().socket(zmq.ROUTER)
        try:
            router.bind(self.endpoint)
            self._ready.set()
            while not self._halt.is_set():
                if router.poll(10):
                    ident, body = router.recv_multipart()
                    self.requests += 1
                    router.send_multipart([ident, body])
        finally:
            router.close(linger=0)

    def __enter__(self) -> EchoServer:
        self.start()
        assert self._ready.wait(WAIT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(WAIT_S)


@pytest.fixture(scope="module")
def line() -> Iterator[Line]:
    running = Line(SERVICE)
    try:
        yield running
    finally:
        running.close()


class TestRoundTrips:
    def test_raw_sequential(self) -> None:
        with EchoServer() as server:
            figures = bench._raw_round_trips(server.endpoint, 40, 1, bench.SMALL)
        assert server.requests == 50 + 40  # the warm-up, then the measured requests
        assert figures["per_s"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]

    def test_raw_window_sends_exactly_n(self) -> None:
        with EchoServer() as server:
            figures = bench._raw_round_trips(server.endpoint, 40, 8, bench.SMALL)
        assert server.requests == 50 + 40  # the window never sends past n
        assert figures.keys() == {"per_s"}

    def test_bus_sequential(self, line: Line) -> None:
        calls = line.actor.actor.calls
        figures = bench._bus_round_trips(line.command, 20, 1, bench.SMALL, name=SERVICE)
        assert line.actor.actor.calls == calls + 50 + 20
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] and figures["per_s"] > 0
        assert figures["replied"] == 1.0  # every answer was the payload echoed

    def test_aio_sequential_and_window(self, line: Line) -> None:
        calls = line.actor.actor.calls
        sequential = bench._aio_round_trips(line.command, 20, 1, bench.SMALL, name=SERVICE)
        window = bench._aio_round_trips(line.command, 21, 4, bench.SMALL, name=SERVICE)
        assert line.actor.actor.calls == calls + 2 * 50 + 20 + 21  # warm-ups, then exactly n
        assert 0 < sequential["p50_ms"] <= sequential["p99_ms"]
        assert window.keys() == {"per_s", "replied"}
        assert sequential["replied"] == window["replied"] == 1.0

    def test_bus_window_with_bytes(self, line: Line) -> None:
        """A bytes payload goes to ``length`` (the bulk pattern), through a window of 4."""
        calls = line.actor.actor.calls
        payload = msgpack.packb(bench.SMALL) * 10
        figures = bench._bus_round_trips(line.command, 20, 4, payload, name=SERVICE)
        assert line.actor.actor.calls == calls + 50  # the warm-up echoes; the rest were `length`
        assert figures.keys() == {"per_s", "replied"} and figures["per_s"] > 0
        assert figures["replied"] == 1.0  # every answer was the payload's length
