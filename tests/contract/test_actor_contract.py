"""The contract every actor kind keeps, run against each kind in ``targets.TARGETS`` with a real
broker process, the kind's simulators and the actor as its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bus.errors import Cancelled, DeadlineExceeded, InvalidArguments, Unavailable, UnknownCommand
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
from tests.contract.targets import TARGETS, ContractTarget

pytestmark = pytest.mark.integration

HEARTBEAT_S = 0.5


@pytest.fixture(params=TARGETS, ids=[t.kind for t in TARGETS])
def target_line(
    request: pytest.FixtureRequest, tmp_path: Path, processes: Processes
) -> tuple[Line, ContractTarget]:
    """A broker, the target's simulators and its actor (service ``dut``), all running."""
    target: ContractTarget = request.param
    ports = {name: free_port() for name in target.ports}
    for module, args in target.simulators:
        sim = processes.start(
            "-m",
            module,
            *(a.format(port=ports, tmp=tmp_path) if "{" in a else a for a in args),
            stdout=subprocess.PIPE,
        )
        wait_ready_line(sim, scaled(20))
    actor = {"name": "dut", **target.actor}
    if target.options is not None:
        actor["options"] = target.options(ports, tmp_path)
    endpoints = Endpoints.fresh()
    config = write_config(tmp_path / "contract.toml", endpoints, [actor], heartbeat_s=HEARTBEAT_S)
    line = Line(config, endpoints, processes)
    line.start_broker()
    line.start_actor("dut")
    return line, target


def _start_slow(bus: Any, target: ContractTarget, timeout: float = 60.0) -> Any:
    command, args = target.slow
    return bus.start("dut", command, args, timeout=scaled(timeout))


class TestIntrospection:
    def test_ping_answers_with_service_and_kind(self, target_line):
        """ping names the service and the actor kind."""
        line, target = target_line
        with line.client() as bus:
            pong = bus.call("dut", "ping")
        assert pong["service"] == "dut" and pong["kind"] == target.kind

    def test_describe_documents_every_command(self, target_line):
        """describe lists ping, describe and the kind's commands, each with a docstring."""
        line, target = target_line
        with line.client() as bus:
            info = bus.call("dut", "describe")
            via_broker = bus.describe("dut")
        commands = info["commands"]
        assert {"ping", "describe", target.quick[0], target.slow[0]} <= set(commands)
        undocumented = [name for name, spec in commands.items() if not spec["doc"].strip()]
        assert undocumented == []
        assert set(via_broker["commands"]) == set(commands)


class TestBadRequests:
    def test_unknown_command(self, target_line):
        """An unknown command gets unknown_command naming it."""
        line, _ = target_line
        with line.client() as bus, pytest.raises(UnknownCommand) as caught:
            bus.call("dut", "no_such_command")
        assert caught.value.details["command"] == "no_such_command"

    def test_unknown_argument_is_named(self, target_line):
        """An argument the command does not take gets invalid_arguments naming it."""
        line, target = target_line
        command, args = target.quick
        with line.client() as bus, pytest.raises(InvalidArguments) as caught:
            bus.call("dut", command, {**args, "no_such_argument": 1})
        assert caught.value.details["argument"] == "no_such_argument"

    def test_wrong_type_is_named(self, target_line):
        """A describe-declared typed argument given the wrong type gets invalid_arguments."""
        line, _target = target_line
        with line.client() as bus:
            spec = bus.call("dut", "describe")["commands"]
            typed = [
                (name, arg["name"])
                for name, cmd in spec.items()
                for arg in cmd["args"]
                if arg["required"] and arg["type"] in ("int", "str", "float", "bytes")
            ]
            assert typed, "the kind should have at least one command with a typed required argument"
            command, argument = typed[0]
            with pytest.raises(InvalidArguments) as caught:
                bus.call("dut", command, {argument: [["not", "this"]]})
        assert caught.value.details["argument"] == argument


class TestLongCommands:
    def test_deadline_exceeded_then_usable(self, target_line):
        """A slow command past its deadline fails with deadline_exceeded; the actor stays usable."""
        line, target = target_line
        command, args = target.slow
        with line.client() as bus:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                bus.call("dut", command, args, timeout=0.5)
            assert time.monotonic() - started < scaled(3.0)
            quick, quick_args = target.quick
            wait_until(
                lambda: _succeeds(bus, quick, quick_args), scaled(10), "actor usable after deadline"
            )

    def test_cancel_then_usable(self, target_line):
        """A cancelled long command ends with cancelled, and the actor takes the next command."""
        line, target = target_line
        with line.client() as bus:
            call = _start_slow(bus, target)
            first = next(iter(call.updates(timeout=scaled(10))), None)
            assert first is not None, "the slow command should report progress"
            call.cancel()
            with pytest.raises(Cancelled):
                call.result()
            quick, quick_args = target.quick
            bus.call("dut", quick, quick_args)


class TestFailures:
    def test_actor_death_fails_callers_at_once(self, target_line):
        """kill -9 of the actor fails its in-flight caller with unavailable, not a timeout."""
        line, target = target_line
        with line.client() as bus:
            call = _start_slow(bus, target)
            next(iter(call.updates(timeout=scaled(10))), None)
            os.kill(line.actors["dut"].pid, signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(Unavailable):
                call.result()
            assert time.monotonic() - killed < 2 * HEARTBEAT_S + scaled(1.5)

    def test_clean_shutdown(self, target_line):
        """SIGTERM: the queued request fails with unavailable, the running one ends (finished or
        cancelled), and the process exits 0 within a few seconds."""
        line, target = target_line
        with line.client() as bus:
            running = _start_slow(bus, target)
            next(iter(running.updates(timeout=scaled(10))), None)
            queued = _start_slow(bus, target)
            proc = line.actors["dut"]
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(Unavailable):
                queued.result()
            with pytest.raises((Cancelled, Unavailable)):
                running.result()
            assert proc.wait(timeout=scaled(10)) == 0


def _succeeds(bus: Any, command: str, args: dict[str, Any]) -> bool:
    try:
        bus.call("dut", command, args)
        return True
    except Exception:  # still busy finishing the cancelled command
        return False
