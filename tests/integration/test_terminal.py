"""The terminal against a real line (a broker and an echo actor as processes, one line for the
module): job events over the wire, `linebus call`'s progress bar on a pseudo-terminal,
`linebus top --once`, and the live `linebus top` quitting on q.

The renderers themselves are tested in process (tests/unit/test_terminal.py).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.errors import Cancelled, DeviceFault
from tests.conftest import (
    ECHO,
    ROOT,
    Endpoints,
    Line,
    Processes,
    scaled,
    wait_until,
    write_config,
)
from tests.integration.test_cli import LINEBUS, clean_env

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def line() -> Iterator[Line]:
    """One line for the module: the broker and ``echo1``."""
    processes = Processes()
    with tempfile.TemporaryDirectory() as folder:
        endpoints = Endpoints.fresh()
        config = write_config(Path(folder) / "line.toml", endpoints, [{"name": "echo1", **ECHO}])
        running = Line(config, endpoints, processes)
        try:
            running.start_broker()
            running.start_actor("echo1")
            yield running
        finally:
            processes.cleanup()


def connection(line: Line) -> list[str]:
    return ["--endpoint", line.endpoints.command, "--subscribe", line.endpoints.subscribe]


def test_job_events_arrive_in_order_and_end_ok_error_or_cancelled(line: Line) -> None:
    with line.client(timeout=scaled(10)) as bus, bus.subscribe("echo1.job") as sub:
        sub.wait_ready(scaled(5))
        ok = bus.start("echo1", "work", {"steps": 3, "step_s": 0.01})
        assert ok.result() == {"steps": 3}
        failing = bus.start("echo1", "work", {"steps": 5, "step_s": 0.01, "fail_at": 2})
        with pytest.raises(DeviceFault):
            failing.result()
        cancelled = bus.start("echo1", "work", {"steps": 500, "step_s": 0.02})
        next(cancelled.updates(timeout=scaled(5)))  # it runs: cancel it now
        cancelled.cancel()
        with pytest.raises(Cancelled):
            cancelled.result()

        events: dict[str, list[dict[str, Any]]] = {}

        def all_ended() -> bool:
            while (event := sub.next(timeout=0.05)) is not None:
                assert event.missed == 0 and event.topic == "echo1.job"
                events.setdefault(event.data["job"], []).append(event.data)
            return len(events) == 3 and all(e[-1]["state"] == "ended" for e in events.values())

        wait_until(all_ended, scaled(10), lambda: f"three ended jobs; heard {events}")
    for call, outcome, code in (
        (ok, "ok", None),
        (failing, "error", "device_fault"),
        (cancelled, "cancelled", "cancelled"),
    ):
        job = events[call.msg_id]
        states = [e["state"] for e in job]
        assert states[0] == "started" and states[-1] == "ended", states
        assert set(states[1:-1]) == {"progress"}, states
        assert {e["command"] for e in job} == {"work"}
        assert (job[-1]["outcome"], job[-1].get("code")) == (outcome, code)
        assert job[-1]["duration_s"] >= 0
    # The last update always goes out before the end (the throttle holds only the ones between).
    assert events[ok.msg_id][-2]["progress"] == {"done": 3, "total": 3}
    assert events[failing.msg_id][-2]["progress"] == {"done": 2, "total": 5}


class Terminal:
    """A child process on a pseudo-terminal of 120 columns: what it draws, and keys to send."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**clean_env(), "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        self.output = b""

    def read(self, seconds: float) -> None:
        """Read what the child draws for up to ``seconds`` (less if it closes the terminal)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if not select.select([self.master], [], [], min(left, 0.1))[0]:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the child is gone and the terminal closed
                return
            if not chunk:
                return
            self.output += chunk

    @property
    def text(self) -> str:
        return ANSI.sub("", self.output.decode(errors="replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=scaled(5))
        os.close(self.master)


def test_call_draws_a_progress_bar_on_a_terminal(line: Line) -> None:
    term = Terminal(
        [*LINEBUS, "call", "echo1", "work", "steps=20", "step_s=0.02", *connection(line)]
    )
    try:
        wait_until(
            lambda: term.read(0.2) or term.proc.poll() is not None, scaled(20), "the call to end"
        )
        term.read(0.5)  # what is left in the terminal
        assert term.proc.returncode == 0, term.text
    finally:
        term.close()
    frames = [f for f in term.text.split("\r") if "echo1 work" in f]
    assert frames, term.text
    last = " ".join(frames[-1].split())
    assert re.match(r"echo1 work ━+ 100% 20/20 [\d.]+/s 0:00 left", last), last
    assert '"steps": 20' in term.text  # the result, below the bar


def test_top_once_shows_the_actor_and_a_running_job(line: Line) -> None:
    with line.client(timeout=scaled(10)) as bus:
        job = bus.start("echo1", "work", {"steps": 1000, "step_s": 0.02})
        next(job.updates(timeout=scaled(5)))
        try:
            result = subprocess.run(
                [*LINEBUS, "top", "--once", *connection(line)],
                cwd=ROOT,
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=scaled(20),
                check=False,
            )
        finally:
            job.cancel()
            with pytest.raises(Cancelled):
                job.result()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"linebus top  {line.endpoints.command}  broker up "), lines
    assert lines[0].endswith("services 1 up / 1")
    (echo,) = [ln.split() for ln in lines if ln.startswith("echo1 ") and " echo " in ln]
    assert echo[:3] == ["echo1", "echo", "up"] and echo[-1] == str(line.actors["echo1"].pid)
    (running,) = [ln.split() for ln in lines if ln.startswith("echo1 ") and " work " in ln]
    assert running[1] == "work" and running[3].endswith("%") and running[4].endswith("/1000")
    assert lines[1].startswith("requests ") and "progress " in lines[1]  # the rates


def test_top_quits_on_q_and_without_a_broker_exits_3(line: Line) -> None:
    term = Terminal([*LINEBUS, "top", "--interval", "0.2", *connection(line)])
    try:
        wait_until(lambda: term.read(0.1) or "echo1" in term.text, scaled(15), "a frame of top")
        os.write(term.master, b"q")
        assert term.proc.wait(timeout=scaled(10)) == 0
    finally:
        term.close()
    gone = subprocess.run(
        [*LINEBUS, "top", "--once", "--timeout", "0.5", "--endpoint", "tcp://127.0.0.1:1"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=scaled(20),
        check=False,
    )
    assert gone.returncode == 3, gone.stderr
