"""`linebus up`: one OS process per part of the line, a clean stop on a signal, and giving up on
an actor that keeps crashing while the rest of the line keeps working."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from bus import protocol
from bus.errors import Unavailable
from tests.conftest import (
    ECHO,
    Endpoints,
    Line,
    Processes,
    scaled,
    secure_socket,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration


def broker_pid(endpoint: str) -> int:
    """The broker's pid, from its answer to HELLO."""
    sock = secure_socket(zmq.Context.instance().socket(zmq.DEALER))
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(protocol.encode_hello([1], {}))
        assert sock.poll(scaled(5) * 1000), "no HELLO answer from the broker"
        header = msgpack.unpackb(sock.recv_multipart()[0], strict_map_key=False)
        assert header[1] == protocol.Kind.HELLO, header
        return int(header[3]["pid"])
    finally:
        sock.close(linger=0)


def children_of(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:  # exited while we looked
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.add(int(entry))
    return found


def gone(pid: int) -> bool:
    """True when process ``pid`` has exited (no such process, or a zombie awaiting its reaper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


class JsonLines:
    """Reads a child's stderr in a thread and keeps every JSON log line, in order."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            try:
                line = json.loads(raw)
            except ValueError:  # tracebacks and other plain text
                continue
            if isinstance(line, dict):
                self.lines.put(line)

    def wait_for(self, event: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """The first line (from now on) of ``event`` with ``fields``; fails after ``timeout``."""

        def matching() -> dict[str, Any] | None:
            while not self.lines.empty():
                line = self.lines.get_nowait()
                self.seen.append(line)
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            return None

        def what() -> str:
            return f"a {event} {fields} log line; saw {[x.get('event') for x in self.seen][-20:]}"

        return wait_until(matching, timeout, what)


class TestLineUp:
    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_processes_are_separate_and_a_signal_stops_them_all(
        self, line: Line, processes: Processes, sig: signal.Signals
    ) -> None:
        """The broker and each actor run as their own process under `linebus up`, and a signal
        to it stops every one of them within a few seconds, leaving no child behind."""
        up = processes.start("-m", "bus.cli", "up", str(line.config))
        actor_pids = {name: line.wait_up(name, timeout=30)["pid"] for name in ("echo1", "echo2")}
        pids = [broker_pid(line.endpoints.command), *actor_pids.values()]
        assert len(set(pids)) == 3 and up.pid not in pids
        assert children_of(up.pid) == set(pids)

        up.send_signal(sig)
        try:
            code = up.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            pytest.fail(f"`linebus up` still running {scaled(10):.0f} s after {sig.name}")
        assert code == 0
        for pid in pids:
            wait_until(lambda pid=pid: gone(pid), scaled(5), f"process {pid} gone")

    def test_kill_9_of_the_supervisor_takes_the_line_down(
        self, line: Line, processes: Processes
    ) -> None:
        """When `linebus up` itself is killed with SIGKILL, its children get SIGTERM and exit."""
        up = processes.start("-m", "bus.cli", "up", str(line.config))
        pids = [line.wait_up(name, timeout=30)["pid"] for name in ("echo1", "echo2")]
        pids.append(broker_pid(line.endpoints.command))
        up.kill()
        up.wait(timeout=scaled(5))
        try:
            for pid in pids:
                wait_until(
                    lambda pid=pid: gone(pid),
                    scaled(15),
                    f"process {pid} gone after the supervisor died",
                )
        finally:
            for pid in pids:  # orphans would outlive the test: nothing else knows them
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)


class TestRecovery:
    def test_a_healthy_actor_is_restarted_at_once_and_an_orderly_stop_logs_at_info(
        self, tmp_path: Path, processes: Processes
    ) -> None:
        """kill -9 of an actor that ran past healthy_run_s (0.5 s here): the supervisor restarts
        it in the poll that sees the exit (restart_in_s 0, no back-off) and it serves again.
        Then SIGTERM stops the line: the broker logs the actor's orderly DISCONNECT at info
        (actor_disconnected), and nothing of the stop is a warning."""
        endpoints = Endpoints.fresh()
        config = write_config(tmp_path / "line.toml", endpoints, [{"name": "echo1", **ECHO}])
        config.write_text(
            config.read_text().replace("[supervisor]\n", "[supervisor]\nhealthy_run_s = 0.5\n", 1)
        )
        line = Line(config, endpoints, processes)
        up = processes.start(
            "-m",
            "bus.cli",
            "up",
            str(config),
            env={"LINEBUS_LOG_JSON": "1", "LINEBUS_LOG_LEVEL": "info"},
            stderr=subprocess.PIPE,
        )
        logs = JsonLines(up.stderr)
        logs.wait_for("process_started", scaled(30), name="echo1")
        spawned = time.monotonic()
        old_pid = line.wait_up("echo1", timeout=30)["pid"]
        # A healthy run: past healthy_run_s by the supervisor's clock, which started before ours.
        wait_until(lambda: time.monotonic() > spawned + 0.6, 5, "a healthy run")

        os.kill(old_pid, signal.SIGKILL)
        exited = logs.wait_for("process_exited", scaled(10), name="echo1")
        assert (exited["restart_in_s"], exited["exit_code"]) == (0.0, -signal.SIGKILL)
        assert exited["ran_s"] >= 0.5
        restarted = logs.wait_for("process_started", scaled(10), name="echo1")
        assert restarted["pid"] != old_pid
        line.wait_up("echo1", pid=restarted["pid"], timeout=30)
        with line.client() as bus:
            assert bus.call("echo1", "add", a=2, b=3) == 5
        logs.wait_for("actor_up", scaled(10), service="echo1", pid=restarted["pid"])
        mark = len(logs.seen)

        up.send_signal(signal.SIGTERM)
        logs.wait_for("line_down", scaled(15))
        assert up.wait(timeout=scaled(10)) == 0
        stop = logs.seen[mark:]
        assert [
            (x["event"], x["level"])
            for x in stop
            if x.get("service") == "echo1" and x["event"] in ("actor_down", "actor_disconnected")
        ] == [("actor_disconnected", "info")]
        assert [x for x in stop if x.get("level") not in ("info", "debug")] == []


class TestFlapping:
    def test_crashing_actor_is_given_up_and_the_rest_keeps_working(
        self, tmp_path: Path, processes: Processes
    ) -> None:
        """An actor whose start-up always fails is restarted flap_max_restarts (3) times, then
        given up with a process_given_up log line, while the other actor keeps serving."""
        modules = tmp_path / "modules"
        modules.mkdir()
        (modules / "flappy_actor.py").write_text(
            textwrap.dedent(
                '''
                from bus.actor import Actor


                class Flappy(Actor):
                    """An actor whose device never opens."""

                    kind = "flappy"

                    async def on_start(self) -> None:
                        raise RuntimeError("device does not open")
                '''
            )
        )
        endpoints = Endpoints.fresh()
        config = write_config(
            tmp_path / "line.toml",
            endpoints,
            [
                {"name": "echo1", **ECHO},
                {"name": "flappy", "kind": "flappy", "class": "flappy_actor:Flappy"},
            ],
        )
        line = Line(config, endpoints, processes)
        python_path = os.pathsep.join(
            p for p in (str(modules), os.environ.get("PYTHONPATH", "")) if p
        )
        up = processes.start(
            "-m",
            "bus.cli",
            "up",
            str(config),
            env={"PYTHONPATH": python_path, "LINEBUS_LOG_JSON": "1"},
            stderr=subprocess.PIPE,
        )
        logs = JsonLines(up.stderr)

        given_up = logs.wait_for("process_given_up", scaled(60), name="flappy")
        assert given_up["level"] == "error"
        assert given_up["restarts"] == 3
        assert given_up["exit_code"] != 0
        starts = [
            x
            for x in logs.seen
            if x.get("event") == "process_started" and x.get("name") == "flappy"
        ]
        assert len(starts) == 4, "one start and three restarts"

        line.wait_up("echo1")
        with line.client() as bus:
            assert bus.call("echo1", "add", a=2, b=3) == 5
            # The line runs it, so callers are told to retry (unavailable), not that it does not
            # exist: the broker cannot know the supervisor gave up (PROTOCOL.md §6).
            with pytest.raises(Unavailable, match="has not registered yet"):
                bus.call("flappy", "ping")
        assert up.poll() is None, "the supervisor itself keeps running"
