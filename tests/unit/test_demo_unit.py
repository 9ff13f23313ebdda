"""The parts of ``linebus demo`` that need no line of processes: the runner's helpers and the bus
tour's listing and counters, against an in-process broker and echo actor.

The whole demo (simulators, actors, the tours of each kind, an actor killed and restarted) runs
in tests/integration/test_demo.py; ``line.tour`` with an echo actor is not called here, since it
kills the echo actor's process with SIGKILL (here, the test process).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from bus import demo
from bus.client import Client
from bus.config import parse
from bus.supervisor import SUPERVISOR_IDENTITY
from bus.tours import line as line_tour
from tests.unit.inproc_line import WAIT_S, Line

SERVICE = "echo"
KEY = zmq.curve_keypair()[0].decode()  # a public key given inline in [security.known]


@pytest.fixture(scope="module")
def line() -> Iterator[Line]:
    running = Line(SERVICE)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def bus(line: Line) -> Iterator[Client]:
    with Client(line.command, subscribe_endpoint=line.broker.subscribe, timeout=WAIT_S) as client:
        yield client


class Said(list[str]):
    """A ``say`` that keeps the lines."""

    def __call__(self, text: str) -> None:
        self.append(text)


class TestRunnerHelpers:
    def test_all_up(self, bus: Client) -> None:
        assert demo._all_up(bus, [SERVICE]) is True
        assert demo._all_up(bus, []) is True
        assert demo._all_up(bus, [SERVICE, "ghost"]) is False

    def test_a_kind_without_a_tour_gets_the_generic_part(
        self, bus: Client, capsys: pytest.CaptureFixture[str]
    ) -> None:
        demo._tour_kind(bus, SERVICE, "nosuchkind")
        lines = capsys.readouterr().out.splitlines()
        assert lines[:2] == ["", f"== {SERVICE} (nosuchkind) =="]
        assert lines[2].startswith("  ping -> {") and f"'pid': {os.getpid()}" in lines[2]
        count, names = lines[3].strip().split(" commands: ")
        assert names.split(", ") == sorted(names.split(", "))
        assert {"add", "echo", "ping", "work"} <= set(names.split(", "))
        assert int(count) == len(names.split(", "))

    @pytest.mark.parametrize(
        ("security", "identity"),
        [
            ({}, SUPERVISOR_IDENTITY),
            ({"acl": {"operators": ["alice", "bob"]}, "known": {"alice": KEY}}, "bob"),
            ({"acl": {"operators": ["alice"]}, "known": {"alice": KEY}}, SUPERVISOR_IDENTITY),
        ],
        ids=["no operators", "first operator with a key file", "inline keys only"],
    )
    def test_tour_identity(self, security: dict[str, Any], identity: str) -> None:
        """The tour calls as the first operator whose key is in the keys directory (not given
        inline), else as the supervisor."""
        config = parse({"security": security}, "/srv/line.toml")
        assert demo.tour_identity(config) == identity


class TestLineTour:
    def test_without_an_echo_actor_it_only_lists_the_line(self, bus: Client) -> None:
        said = Said()
        line_tour.tour(bus, None, said)
        assert said[0] == "\n== the line =="
        (row,) = said[1:]
        assert row.split() == [SERVICE, "echo", "up", "pid", str(os.getpid())]

    def test_generic(self, bus: Client) -> None:
        said = Said()
        line_tour.generic(bus, SERVICE, said)
        assert said[0].startswith("  ping -> {") and "'kind': 'echo'" in said[0]
        assert said[1].startswith("  13 commands: add, aecho, blob,")

    def test_counters(self, bus: Client) -> None:
        bus.call(SERVICE, "add", a=1)
        said = Said()
        line_tour.counters(bus, said)
        assert said[0] == "\n== broker counters =="
        assert said[1].startswith("  routed {") and "'request'" in said[1]
        assert said[2].startswith("  dropped {") and said[2].endswith(
            "(every drop is counted with its reason)"
        )

    def test_new_pid(self, bus: Client) -> None:
        """The restart wait of the tour: a pid other than the old one, once the service is up."""
        assert line_tour._new_pid(bus, SERVICE, os.getpid()) is None
        assert line_tour._new_pid(bus, SERVICE, 1) == os.getpid()
        assert line_tour._new_pid(bus, "ghost", 1) is None
