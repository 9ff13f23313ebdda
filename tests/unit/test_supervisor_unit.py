"""The supervisor's logic with stand-in children: start order and ready lines, restarts with
capped back-off, giving up on a flapping process, and the ordered stop with SIGKILL for what
outlives ``stop_timeout_s``.

The supervisor runs every child as ``PYTHON -m MODULE ARGS``; here ``PYTHON`` is the stand-in
interpreter of ``stand_in.Children``, a shell script that plays each child with the behaviour
the test wrote for it (serve until SIGTERM, crash, print a ready line, ignore SIGTERM) and
records each start and each orderly stop. The broker the supervisor waits for is an in-process
one (``inproc_line.BrokerThread``). No child is a Python interpreter, so each starts in
milliseconds; every wait is bounded.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bus.config import LineConfig, parse
from bus.errors import ConfigError, DeadlineExceeded
from bus.supervisor import BACKOFF, FAILED, RUNNING, STOPPED, ManagedProcess, Supervisor
from bus.testing import free_port, wait_until
from tests.unit.inproc_line import WAIT_S, BrokerThread
from tests.unit.stand_in import CRASH, READY, SERVE, STUBBORN, Children


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerThread]:
    running = BrokerThread()
    running.start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def children(tmp_path: Path) -> Children:
    return Children(tmp_path)


class Lines:
    """Makes supervisors of test lines and stops them all at teardown."""

    def __init__(self, root: Path, children: Children, broker: BrokerThread) -> None:
        self.root = root
        self.children = children
        self.broker = broker
        self.made: list[Supervisor] = []

    def config(
        self,
        actors: tuple[str, ...] = ("a1",),
        simulators: tuple[str, ...] = (),
        command: str | None = None,
        **policy: Any,
    ) -> LineConfig:
        supervisor = {
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.04,
            "flap_window_s": 30.0,
            "flap_max_restarts": 3,
            "stop_timeout_s": 5.0,
            "ready_timeout_s": 5.0,
            **policy,
        }
        data = {
            "broker": {
                "command": command or self.broker.command,
                "publish": self.broker.endpoints["publish"],
                "subscribe": self.broker.subscribe,
            },
            "supervisor": supervisor,
            "simulator": [{"name": s, "module": s, "args": ["--port", 21234]} for s in simulators],
            "actor": [{"name": a, "kind": "echo"} for a in actors],
        }
        return parse(data, str(self.root / "line.toml"))

    def supervisor(
        self, *args: Any, clock: Callable[[], float] = time.monotonic, **kwargs: Any
    ) -> Supervisor:
        made = Supervisor(
            self.config(*args, **kwargs), python=str(self.children.python), clock=clock
        )
        self.made.append(made)
        return made

    def stop_all(self) -> None:
        for made in self.made:
            made.stop()


@pytest.fixture
def lines(tmp_path: Path, children: Children, broker: BrokerThread) -> Iterator[Lines]:
    made = Lines(tmp_path, children, broker)
    try:
        yield made
    finally:
        made.stop_all()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def poll_until(supervisor: Supervisor, managed: ManagedProcess, state: str, what: str) -> None:
    """Poll the supervisor until ``managed`` is in ``state``."""

    def reached() -> bool:
        supervisor.poll()
        return managed.state == state

    wait_until(reached, WAIT_S, what, interval=0.005)


def terminate(managed: ManagedProcess) -> None:
    """Stop a child behind the supervisor's back (it sees an exit, as after a crash)."""
    assert managed.proc is not None
    managed.proc.terminate()
    managed.proc.wait(WAIT_S)


def restart_delays(logs: list[dict[str, Any]], name: str) -> list[float]:
    return [e["restart_in_s"] for e in logs if e["event"] == "process_exited" and e["name"] == name]


# --- the processes of a line ------------------------------------------------------------------


class TestProcesses:
    def test_broker_then_simulators_then_actors(self, lines: Lines) -> None:
        config = lines.config(actors=("a1", "a2"), simulators=("sim1",))
        supervisor = Supervisor(config)
        assert [(m.name, m.role, m.wait_ready) for m in supervisor.processes] == [
            ("broker", "broker", False),
            ("sim1", "simulator", True),
            ("a1", "actor", False),
            ("a2", "actor", False),
        ]
        broker, sim, a1, _ = supervisor.processes
        assert broker.argv[0] == sys.executable  # this interpreter unless told otherwise
        assert broker.argv[1:4] == ["-m", "bus.cli", "broker"] and config.path in broker.argv
        assert sim.argv[1:] == ["-m", "sim1", "--port", "21234"]
        assert a1.argv[1:] == ["-m", "bus.cli", "actor", config.path, "a1"]
        assert supervisor.process("a2").name == "a2"
        with pytest.raises(KeyError):
            supervisor.process("a3")
        assert {row["state"] for row in supervisor.status()} == {STOPPED}
        assert all(m.pid is None for m in supervisor.processes)

    def test_a_config_not_read_from_a_file_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="needs a config loaded from a file"):
            Supervisor(LineConfig())


# --- start --------------------------------------------------------------------------------------


class TestStart:
    def test_starts_in_order_and_stops_in_reverse(
        self, lines: Lines, children: Children, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Broker, simulator (its ready line read), actors; stopped actors first, broker last."""
        children.behave(broker=SERVE, sim1=READY, a1=SERVE, a2=SERVE)
        supervisor = lines.supervisor(actors=("a1", "a2"), simulators=("sim1",))
        with capture_logs() as logs:
            supervisor.start()
        steps = {"process_started", "simulator_ready", "line_up"}
        assert [(e["event"], e.get("name")) for e in logs if e["event"] in steps] == [
            ("process_started", "broker"),  # and answered before anything else started
            ("process_started", "sim1"),
            ("simulator_ready", "sim1"),
            ("process_started", "a1"),
            ("process_started", "a2"),
            ("line_up", None),
        ]
        sim = supervisor.process("sim1")
        assert sim.ready_info == {"event": "ready", "port": 21234, "logger": "sim"}
        (ready,) = [e for e in logs if e["event"] == "simulator_ready"]
        assert ready["endpoints"] == {"port": 21234, "logger": "sim"}
        children.wait("serving broker", "serving sim1", "serving a1", "serving a2")
        rows = supervisor.status()
        assert [(r["name"], r["state"], r["restarts"]) for r in rows] == [
            ("broker", RUNNING, 0),
            ("sim1", RUNNING, 0),
            ("a1", RUNNING, 0),
            ("a2", RUNNING, 0),
        ]
        assert all(isinstance(r["pid"], int) for r in rows)
        # Whatever a simulator prints besides its ready line goes on to our stderr.
        wait_until(lambda: "warming up" in capfd.readouterr().err, WAIT_S, "the chatter")

        supervisor.stop()
        stops = [e for e in children.events() if e.startswith("stop ")]
        assert sorted(stops[:2]) == ["stop a1", "stop a2"]
        assert stops[2:] == ["stop sim1", "stop broker"]
        assert [(r["state"], r["pid"]) for r in supervisor.status()] == [(STOPPED, None)] * 4
        assert sim.proc is not None and sim.proc.stdout is not None and sim.proc.stdout.closed

    def test_a_broker_that_exits_at_start_up(self, lines: Lines, children: Children) -> None:
        children.behave(broker=CRASH)
        unused = f"tcp://127.0.0.1:{free_port()}"
        supervisor = lines.supervisor(command=unused)
        with pytest.raises(ConfigError, match="broker exited at start-up with code 3"):
            supervisor.start()
        assert children.starts("a1") == 0

    def test_a_broker_that_never_answers(self, lines: Lines, children: Children) -> None:
        children.behave(broker=SERVE)
        unused = f"tcp://127.0.0.1:{free_port()}"
        supervisor = lines.supervisor(command=unused, ready_timeout_s=0.3)
        with pytest.raises(DeadlineExceeded, match="did not answer within ready_timeout_s"):
            supervisor.start()
        assert children.starts("a1") == 0

    def test_a_broker_that_never_answers_is_asked_for_its_stacks(
        self, lines: Lines, children: Children
    ) -> None:
        """Before giving up, the supervisor sends the broker the stack-dump signal (a linebus
        broker writes every thread's stack to the line's stderr: where it hangs)."""
        # The trap is the script's first line; 3 s leaves the shell ample time to reach it.
        children.behave(broker='trap \'echo "stacks $name" >> "$log"\' USR1\n' + SERVE)
        unused = f"tcp://127.0.0.1:{free_port()}"
        supervisor = lines.supervisor(command=unused, ready_timeout_s=3.0)
        with capture_logs() as logs, pytest.raises(DeadlineExceeded):
            supervisor.start()
        children.wait("stacks broker")
        assert [e["name"] for e in logs if e["event"] == "process_not_answering"] == ["broker"]

    def test_a_simulator_without_its_ready_line(
        self, lines: Lines, children: Children, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A simulator that exits before its ready line fails the start at once, and what it
        printed is shown."""
        children.behave(broker=SERVE, sim1='echo "port busy"\nexit 1\n')
        supervisor = lines.supervisor(simulators=("sim1",))
        with pytest.raises(DeadlineExceeded, match="simulator 'sim1' did not print its ready line"):
            supervisor.start()
        assert children.starts("a1") == 0
        assert "port busy" in capfd.readouterr().err


# --- restarts -----------------------------------------------------------------------------------


class TestRestarts:
    def test_a_crashing_actor_backs_off_then_is_given_up(
        self, lines: Lines, children: Children
    ) -> None:
        """Delays double up to the cap; the fourth exit within the window is one too many; the
        rest of the line is left alone."""
        children.behave(broker=SERVE, a1=CRASH, a2=SERVE)
        supervisor = lines.supervisor(actors=("a1", "a2"))
        supervisor.start()
        a1, a2 = supervisor.process("a1"), supervisor.process("a2")
        a2_pid = a2.pid
        with capture_logs() as logs:
            poll_until(supervisor, a1, FAILED, "a1 given up")
        assert restart_delays(logs, "a1") == [0.01, 0.02, 0.04]
        (given_up,) = [e for e in logs if e["event"] == "process_given_up"]
        assert (given_up["name"], given_up["exit_code"], given_up["restarts"]) == ("a1", 3, 3)
        assert children.starts("a1") == 4
        # Given up means given up: no more starts, however long we poll.
        supervisor.poll()
        assert (a1.state, children.starts("a1")) == (FAILED, 4)
        assert (a2.state, a2.pid, supervisor.process("broker").state) == (RUNNING, a2_pid, RUNNING)

    def test_a_healthy_run_is_restarted_at_once(self, lines: Lines, children: Children) -> None:
        """Dying young backs off (0.01, 0.02); an exit after a healthy run restarts within the
        same poll, and the back-off starts over for the next young death."""
        children.behave(broker=SERVE, a1=SERVE)
        clock = FakeClock()
        supervisor = lines.supervisor(clock=clock, healthy_run_s=5.0)
        supervisor.start()
        a1 = supervisor.process("a1")
        with capture_logs() as logs:
            for restarts, ran_s in enumerate((1.0, 1.0, 60.0, 1.0)):
                children.wait(*["serving a1"] * (restarts + 1))
                pid = a1.pid
                clock.now += ran_s
                terminate(a1)
                supervisor.poll()
                if ran_s >= 5.0:  # restarted in the very poll that saw the exit
                    assert a1.state == RUNNING and a1.pid not in (None, pid)
                    continue
                assert a1.state == BACKOFF and a1.pid is None
                supervisor.poll()
                assert a1.state == BACKOFF, "restarted before its back-off elapsed"
                clock.now = a1.restart_at
                supervisor.poll()
                assert a1.state == RUNNING and a1.pid not in (None, pid)
        assert restart_delays(logs, "a1") == [0.01, 0.02, 0.0, 0.01]
        exits = [(e["exit_code"], e["ran_s"]) for e in logs if e["event"] == "process_exited"]
        assert exits == [(0, 1.0), (0, 1.0), (0, 60.0), (0, 1.0)]  # any exit counts
        # The two exits before the 60 s run fell out of the 30 s flap window.
        assert supervisor.status()[1]["restarts"] == 2

    def test_a_restarted_simulator_is_awaited_again(self, lines: Lines, children: Children) -> None:
        children.behave(broker=SERVE, sim1=READY)
        supervisor = lines.supervisor(actors=(), simulators=("sim1",))
        supervisor.start()
        sim = supervisor.process("sim1")
        sim.ready_info = {}
        children.wait("serving sim1")
        terminate(sim)
        poll_until(supervisor, sim, BACKOFF, "sim1 exit noticed")
        poll_until(supervisor, sim, RUNNING, "sim1 restarted")
        assert sim.ready_info["port"] == 21234  # read again before poll() returned
        assert children.starts("sim1") == 2
        children.wait("serving sim1", "serving sim1")

    def test_nothing_is_restarted_once_stopping(self, lines: Lines, children: Children) -> None:
        children.behave(broker=SERVE, a1=CRASH)
        supervisor = lines.supervisor()
        supervisor.start()
        a1 = supervisor.process("a1")
        poll_until(supervisor, a1, BACKOFF, "a1 exit noticed")
        supervisor.stop()
        wait_until(lambda: time.monotonic() > a1.restart_at, WAIT_S, "the restart time")
        supervisor.poll()
        assert (a1.state, children.starts("a1")) == (BACKOFF, 1)

    def test_run_polls_until_told_to_stop(self, lines: Lines, children: Children) -> None:
        children.behave(broker=SERVE, a1=SERVE)
        supervisor = lines.supervisor()
        supervisor.start()
        children.wait("serving broker", "serving a1")
        terminate(supervisor.process("a1"))
        stop = threading.Event()

        def stop_once_restarted() -> None:
            try:
                children.wait("serving a1", "serving a1")
            finally:
                stop.set()

        helper = threading.Thread(target=stop_once_restarted, daemon=True)
        helper.start()
        supervisor.run(stop, interval_s=0.005)
        helper.join(WAIT_S)
        assert children.starts("a1") == 2
        assert children.events()[-2:] == ["stop a1", "stop broker"]
        assert {row["state"] for row in supervisor.status()} == {STOPPED}


# --- stop ---------------------------------------------------------------------------------------


class TestStop:
    def test_what_ignores_sigterm_is_killed(self, lines: Lines, children: Children) -> None:
        children.behave(broker=SERVE, a1=STUBBORN)
        supervisor = lines.supervisor(stop_timeout_s=0.2)
        supervisor.start()
        children.wait("serving broker", "stubborn a1")
        a1 = supervisor.process("a1")
        with capture_logs() as logs:
            supervisor.stop()
        assert [(e["event"], e["name"]) for e in logs if e["event"] == "process_killed"] == [
            ("process_killed", "a1")
        ]
        assert a1.proc is not None and a1.proc.returncode == -9
        assert a1.state == STOPPED
        assert children.events()[-1] == "stop broker"  # the broker still went the orderly way

    def test_stop_twice_and_stop_before_start(self, lines: Lines, children: Children) -> None:
        children.behave(broker=SERVE, a1=SERVE)
        never_started = lines.supervisor()
        never_started.stop()
        assert {row["state"] for row in never_started.status()} == {STOPPED}
        supervisor = lines.supervisor()
        supervisor.start()
        children.wait("serving broker", "serving a1")
        supervisor.stop()
        supervisor.stop()
        assert children.events().count("stop a1") == 1
        broker = supervisor.process("broker").proc
        assert isinstance(broker, subprocess.Popen) and broker.returncode == 0
