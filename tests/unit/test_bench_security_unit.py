"""``linebus bench --security``'s own logic, without its processes: the lines' configs choose the
event path the report says they measure, the alternation of many sides, the ratios, the report,
the command line, and a raw round trip through a CURVE server.

The measurements themselves (four brokers, a dozen processes, minutes) are what
``linebus bench --security`` is for; docs/BENCHMARKS.md records them.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import bench
from bus.bench import security
from bus.config import load
from bus.testing import free_port
from tests.unit.inproc_line import WAIT_S

#: What each line's access list must make the broker do: (checks publish, checks subscribe).
EXPECTED_PATHS = {
    "curve": (False, False),  # the C proxy
    "publish_rules": (True, False),  # the Python loop, each event's publisher checked
    "subscribe_rules": (False, True),  # the Python loop, XPUB_MANUAL
}


class TestLines:
    def test_each_config_gives_the_event_path_it_is_reported_under(self, tmp_path: Path) -> None:
        keys = security._keys(tmp_path)
        assert set(keys) == {"bench", "client"}
        for name in ("bench", "client"):
            secret = tmp_path / "peers" / f"{name}.key_secret"
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        seen = {}
        for line, (acl, _) in security.LINES.items():
            if acl is None:
                assert line == "off"
                continue
            config = load(security._config(tmp_path, line, acl))
            assert config.security.curve
            assert config.security.load_broker_keys().public == keys["client"].broker
            ring = config.security.load_keyring()
            assert set(ring.names) == {"bench", "client"}  # the broker's key is not a peer
            access = config.security.access_list(ring.names)
            seen[line] = (access.checks_publish, access.checks_subscribe)
            # The bench's own traffic is allowed on every line: nothing measured is refused.
            assert access.may_register("bench", "bench")
            assert access.may_publish("bench", b"bench.reading\0body")
            assert access.may_subscribe("client", b"bench.")
            assert access.may_call("client", "bench", "echo", privileged=False)
        assert seen == EXPECTED_PATHS

    def test_the_command_line_is_the_default_access_list(self) -> None:
        assert security.LINES[security.COMMAND_LINE][0] == ""  # [security] with no acl table


class TestAlternation:
    def test_every_side_in_turn_and_the_median_run_of_each(self) -> None:
        calls: list[str] = []
        rates = {"a": iter([3.0, 1.0, 2.0]), "b": iter([10.0, 30.0, 20.0]), "c": iter([5.0] * 3)}

        def side(name: str) -> Any:
            def measure() -> dict[str, float]:
                calls.append(name)
                return {"per_s": next(rates[name])}

            return measure

        out = bench._alternate({name: side(name) for name in ("a", "b", "c")})
        assert calls == ["a", "b", "c"] * bench.REPEATS
        assert out == {
            "a": {"per_s": 2.0, "runs": [3.0, 1.0, 2.0]},
            "b": {"per_s": 20.0, "runs": [10.0, 30.0, 20.0]},
            "c": {"per_s": 5.0, "runs": [5.0, 5.0, 5.0]},
        }

    def test_ratios_skip_what_is_not_a_side(self) -> None:
        figures = {"off": {"per_s": 200.0}, "on": {"per_s": 170.0}, "ratio_to_off": {"on": 0.85}}
        assert security._ratios(figures, "off") == {"off": 1.0, "on": 0.85}
        assert security._ratios({"off": {"per_s": 0.0}, "on": {"per_s": 1.0}}, "off") == {
            "off": 0.0,
            "on": 0.0,
        }


def _figures(sides: tuple[str, ...], rates: list[float], extra: dict[str, float]) -> dict[str, Any]:
    figures: dict[str, Any] = {s: {"per_s": r, **extra} for s, r in zip(sides, rates, strict=True)}
    figures["ratio_to_off"] = security._ratios(figures, "off")
    figures["ratio_to_raw"] = security._ratios(figures, "raw")
    return figures


RESULTS: dict[str, Any] = {
    "load_average_start": [0.5, 0.75, 1.0],
    "event_paths": {
        "off": {"path": "C proxy"},
        "curve": {"path": "C proxy"},
        "publish_rules": {"path": "checked"},
        "subscribe_rules": {"path": "checked"},
    },
    "a_sequential": _figures(
        security.COMMAND_SIDES,
        [4000.0, 3800.0, 3000.0, 2700.0],
        {"p50_ms": 0.25, "p99_ms": 0.5, "replied": 1.0},
    ),
    "c_events_1sub": _figures(
        security.EVENT_SIDES,
        [400_000.0, 300_000.0, 250_000.0, 200_000.0, 100_000.0, 150_000.0],
        {"delivered": 1.0},
    ),
    "event_paths_after": {
        "off": {"path": "C proxy"},
        "publish_rules": {
            "path": "checked",
            "forwarded": 600_000,
            "forbidden_publish": 0,
            "forbidden_subscribe": 0,
        },
    },
    "load_average_end": [1.5, 1.0, 1.25],
}


class TestReport:
    def test_table_ratios_and_load(self) -> None:
        lines = security.report(RESULTS).splitlines()
        assert lines[:2] == [
            "| pattern | side | event path | rate | vs CURVE off | vs raw pyzmq |",
            "|---|---|---|---|---|---|",
        ]
        assert lines[2] == (
            "| a_sequential | raw pyzmq, C proxy |  | 4,000 /s (p50 0.250 ms, p99 0.500 ms), "
            "replied 100.0% |  | 1.00 |"
        )
        assert lines[5] == (
            "| a_sequential | CURVE on, default access list |  | 2,700 /s (p50 0.250 ms, "
            "p99 0.500 ms), replied 100.0% | 0.90 | 0.68 |"
        )
        assert lines[6:12] == [
            "| c_events_1sub | raw pyzmq, C proxy | C proxy | 400,000 /s, delivered 100.0% "
            "|  | 1.00 |",
            "| c_events_1sub | raw pyzmq, CURVE on, C proxy | C proxy | 300,000 /s, "
            "delivered 100.0% |  | 0.75 |",
            "| c_events_1sub | off: CURVE off, C proxy | C proxy | 250,000 /s, delivered 100.0% "
            "| 1.00 | 0.62 |",
            "| c_events_1sub | curve: CURVE on, C proxy (no publish or subscribe rule) | C proxy "
            "| 200,000 /s, delivered 100.0% | 0.80 | 0.50 |",
            "| c_events_1sub | publish_rules: CURVE on, default access list: publish rules, "
            "Python loop | Python loop | 100,000 /s, delivered 100.0% | 0.40 | 0.25 |",
            "| c_events_1sub | subscribe_rules: CURVE on, subscribe rules (XPUB_MANUAL), "
            "Python loop | Python loop | 150,000 /s, delivered 100.0% | 0.60 | 0.38 |",
        ]
        text = "\n".join(lines[12:])
        assert (
            "a_sequential: CURVE on keeps 0.90 of CURVE off (target >= 0.80); raw pyzmq with "
            "CURVE keeps 0.95 of raw pyzmq" in text
        )
        assert "c_events_1sub: CURVE on keeps 0.80 of CURVE off" in text  # the C-proxy line
        assert (
            "publish_rules: the broker's loop forwarded 600,000 events, refused 0 events and "
            "0 subscriptions" in text
        )
        assert "off: the broker's loop" not in text
        assert lines[-1] == "load average (1, 5, 15 min): start 0.50 0.75 1.00, end 1.50 1.00 1.25"

    def test_missing_patterns_are_left_out(self) -> None:
        assert security.report({}).splitlines() == [
            "| pattern | side | event path | rate | vs CURVE off | vs raw pyzmq |",
            "|---|---|---|---|---|---|",
        ]


class TestMain:
    def test_security_runs_the_security_group_only(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        seen: list[tuple[str, bool]] = []

        def run_security(quick: bool = False) -> dict[str, Any]:
            seen.append(("security", quick))
            return RESULTS

        def run_default(quick: bool = False) -> dict[str, Any]:
            seen.append(("default", quick))
            return {}

        monkeypatch.setattr(security, "run", run_security)
        monkeypatch.setattr(bench, "run", run_default)
        assert bench.main(["--security", "--quick"]) == 0
        assert seen == [("security", True)]
        assert capsys.readouterr().out == security.report(RESULTS) + "\n"


# --- the raw side's CURVE ---------------------------------------------------------------------


@pytest.fixture
def curve_echo() -> Iterator[tuple[str, bench.RawCurve, list[int]]]:
    """A CURVE ROUTER on loopback TCP (CURVE does not run over inproc) answering every request
    with its body; yields its endpoint, the keys and the count of requests it answered."""
    curve = bench.RawCurve.generate()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    router = zmq.Context.instance().socket(zmq.ROUTER)
    curve.server(router)
    router.bind(endpoint)
    answered = [0]
    halt = threading.Event()

    def serve() -> None:
        while not halt.is_set():
            if router.poll(10):
                frames = router.recv_multipart()
                # Counted before the answer goes out: the client may return as soon as it has
                # the last answer, before this thread runs again.
                answered[0] += 1
                router.send_multipart(frames)

    thread = threading.Thread(target=serve, name="bench-curve-echo", daemon=True)
    thread.start()
    try:
        yield endpoint, curve, answered
    finally:
        halt.set()
        thread.join(WAIT_S)
        router.close(linger=0)


def test_raw_round_trips_through_a_curve_server(
    curve_echo: tuple[str, bench.RawCurve, list[int]],
) -> None:
    endpoint, curve, answered = curve_echo
    figures = bench._raw_round_trips(endpoint, 20, 4, bench.SMALL, curve)
    assert answered[0] == 50 + 20 and figures["per_s"] > 0


def test_raw_curve_keys_are_two_pairs() -> None:
    curve = bench.RawCurve.generate()
    assert len({curve.server_public, curve.client_public}) == 2
    assert all(len(key) == 40 for key in curve)
    assert zmq.curve_public(curve.server_secret) == curve.server_public
    assert zmq.curve_public(curve.client_secret) == curve.client_public
