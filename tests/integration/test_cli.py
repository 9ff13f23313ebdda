"""The `linebus` command line against a running line: listings, calls, progress, events, and exit
codes (0 ok, 1 typed failure, 2 bad usage or config, 3 broker unreachable)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Line, free_port, key_environment, scaled, wait_until

pytestmark = pytest.mark.integration

_SCRIPT = Path(sys.executable).with_name("linebus")
LINEBUS = [str(_SCRIPT)] if _SCRIPT.exists() else [shutil.which("linebus") or "linebus"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any LINEBUS_* setting of the machine, plus the test process's own
    key (in the secured pass) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEBUS_")}
    return {**env, "PYTHONUNBUFFERED": "1", **key_environment(), **extra}


def linebus(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``linebus argv...`` to completion and capture its output."""
    return subprocess.run(
        [*LINEBUS, *argv],
        cwd=ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        check=False,
    )


def at(line: Line, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``linebus argv... --endpoint <the line's broker>``."""
    return linebus(
        *argv, "--endpoint", line.endpoints.command, "--subscribe", line.endpoints.subscribe
    )


def json_lines(text: str) -> list[Any]:
    """Every line of ``text`` parsed as JSON."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class TestServices:
    def test_table(self, running_line: Line) -> None:
        """`services` prints a table with a row per service: name, kind, state and pid."""
        result = at(running_line, "services")
        assert result.returncode == 0, result.stderr
        header, *rows = result.stdout.splitlines()
        assert header.split()[:4] == ["NAME", "KIND", "STATE", "SINCE"]
        (row,) = rows
        words = row.split()
        assert words[:3] == ["echo1", "echo", "up"]
        assert words[-1] == str(running_line.actors["echo1"].pid)

    def test_json(self, running_line: Line) -> None:
        """`services --json` prints one object per service with name, kind, state and since."""
        result = at(running_line, "services", "--json")
        assert result.returncode == 0, result.stderr
        (row,) = json_lines(result.stdout)
        assert (row["name"], row["kind"], row["state"], row["pid"]) == (
            "echo1",
            "echo",
            "up",
            running_line.actors["echo1"].pid,
        )
        assert abs(row["since"] - time.time()) < 3600


class TestCall:
    def test_prints_the_result(self, running_line: Line) -> None:
        """`call echo1 add a=2 b=3` prints 5."""
        result = at(running_line, "call", "echo1", "add", "a=2", "b=3")
        assert (result.returncode, result.stdout.strip()) == (0, "5"), result.stderr

    def test_json(self, running_line: Line) -> None:
        """`call --json` prints {"result": ...}; bytes appear as their length and base64."""
        result = at(
            running_line, "call", "echo1", "echo", 'value={"n": [1, 2], "s": "x"}', "--json"
        )
        assert result.returncode == 0, result.stderr
        assert json_lines(result.stdout) == [{"result": {"n": [1, 2], "s": "x"}}]
        result = at(running_line, "call", "echo1", "blob", "size=3", "--json")
        assert json_lines(result.stdout) == [{"result": {"$bytes": 3, "base64": "eHh4"}}]

    def test_progress_lines(self, running_line: Line) -> None:
        """Progress of `work` goes to stderr as plain lines (piped: at most one a second, the
        first and the last always), and the result to stdout."""
        result = at(running_line, "call", "echo1", "work", "steps=3", "step_s=0.01")
        assert result.returncode == 0, result.stderr
        progress = [
            ln.split()[1] for ln in result.stderr.splitlines() if ln.startswith("progress ")
        ]
        assert progress[0] == "1/3" and progress[-1] == "3/3"
        assert json.loads(result.stdout) == {"steps": 3}

    def test_progress_json(self, running_line: Line) -> None:
        """With --json, each progress update and then the result is one JSON line on stdout."""
        result = at(running_line, "call", "echo1", "work", "steps=2", "step_s=0.01", "--json")
        assert result.returncode == 0, result.stderr
        assert json_lines(result.stdout) == [
            {"progress": {"done": 1, "total": 2}},
            {"progress": {"done": 2, "total": 2}},
            {"result": {"steps": 2}},
        ]

    def test_bytes_argument_from_file(self, running_line: Line, tmp_path: Path) -> None:
        """`data=@file` sends the file's bytes (here 100 000 of them, a bulk frame)."""
        blob = tmp_path / "fw.bin"
        blob.write_bytes(os.urandom(100_000))
        result = at(running_line, "call", "echo1", "length", f"data=@{blob}")
        assert (result.returncode, result.stdout.strip()) == (0, "100000"), result.stderr

    def test_endpoint_from_environment(self, running_line: Line) -> None:
        """LINEBUS_ENDPOINT stands in for --endpoint."""
        result = linebus(
            "call",
            "echo1",
            "add",
            "a=4",
            env=clean_env(LINEBUS_ENDPOINT=running_line.endpoints.command),
        )
        assert (result.returncode, result.stdout.strip()) == (0, "4"), result.stderr


class TestDescribeAndStats:
    def test_describe(self, running_line: Line) -> None:
        """`describe echo1` shows the service and each command's signature and documentation."""
        result = at(running_line, "describe", "echo1")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert out.startswith(f"echo1 (echo), up, pid {running_line.actors['echo1'].pid}")
        assert "add(a: int, b: int = 0) -> int" in out
        assert "Return ``a + b``" in out
        assert (
            "work(steps: int, step_s: float, fail_at: int = 0) -> dict[str, int] [progress]" in out
        )

    def test_stats_json(self, running_line: Line) -> None:
        """`stats --json` prints the broker's counters as one JSON object."""
        at(running_line, "call", "echo1", "add", "a=1")
        result = at(running_line, "stats", "--json")
        assert result.returncode == 0, result.stderr
        (stats,) = json_lines(result.stdout)
        assert stats["services_up"] == 1 and stats["services_known"] == 1
        assert stats["routed"]["request"] >= 1 and stats["routed"]["reply"] >= 1
        assert isinstance(stats["dropped"], dict) and stats["uptime_s"] > 0


class TestWatch:
    def test_prints_events_as_json_lines(self, running_line: Line) -> None:
        """`watch echo1. --count 2 --json` prints the next two events and exits."""
        watch = subprocess.Popen(
            [
                *LINEBUS,
                "watch",
                "echo1.",
                "--count",
                "2",
                "--json",
                "--endpoint",
                running_line.endpoints.command,
                "--subscribe",
                running_line.endpoints.subscribe,
            ],
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The subscription becomes active at some moment after start: emit until it has seen two.
            with running_line.client() as bus:

                def emit_until_done() -> bool:
                    if watch.poll() is not None:
                        return True
                    bus.call("echo1", "emit", event="tick", data={"n": 1})
                    return False

                wait_until(emit_until_done, scaled(20), "watch to see two events", interval=0.1)
            out, err = watch.communicate(timeout=scaled(5))
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()
        assert watch.returncode == 0, err
        first, second = json_lines(out)
        assert (first["topic"], first["src"], first["data"], first["missed"]) == (
            "echo1.tick",
            "echo1",
            {"n": 1},
            0,
        )
        assert (second["topic"], second["seq"], second["missed"]) == (
            "echo1.tick",
            first["seq"] + 1,
            0,
        )


class TestExitCodes:
    def test_unknown_service_is_1(self, running_line: Line) -> None:
        """A call to an unknown service fails with exit code 1 and names the error."""
        result = at(running_line, "call", "nosuch", "echo")
        assert result.returncode == 1
        assert "unknown_service" in result.stderr

    def test_invalid_argument_is_1(self, running_line: Line) -> None:
        """A call with an argument of the wrong type fails with exit code 1 naming the argument."""
        result = at(running_line, "call", "echo1", "add", "a=x")
        assert result.returncode == 1
        assert "invalid_arguments" in result.stderr and "'a'" in result.stderr

    def test_typed_failure_as_json(self, running_line: Line) -> None:
        """With --json a typed failure is printed as {"error": {code, message, details}}."""
        result = at(running_line, "call", "echo1", "fail", "--json")
        assert result.returncode == 1
        (error,) = json_lines(result.stdout)
        assert error["error"]["code"] == "device_fault"
        assert error["error"]["details"] == {"device_code": "SIMULATED"}

    def test_argument_without_equals_is_2(self, running_line: Line) -> None:
        """`a` instead of `a=...` is a usage error: exit code 2, nothing sent."""
        result = at(running_line, "call", "echo1", "add", "a")
        assert result.returncode == 2
        assert "not key=value" in result.stderr

    def test_unreadable_file_argument_is_2(self, running_line: Line, tmp_path: Path) -> None:
        """`data=@missing` is a usage error: exit code 2."""
        result = at(running_line, "call", "echo1", "length", f"data=@{tmp_path / 'missing.bin'}")
        assert result.returncode == 2
        assert "cannot read" in result.stderr

    @pytest.mark.parametrize(
        "content",
        ['[broker]\nheartbeat_s = "fast"\n', "[broker\n", "[brokr]\n"],
        ids=["wrong type", "not TOML", "unknown section"],
    )
    def test_bad_config_file_is_2(self, tmp_path: Path, content: str) -> None:
        """`up` with an invalid config exits with code 2 and a one-line reason, no traceback."""
        config = tmp_path / "bad.toml"
        config.write_text(content)
        result = linebus("up", str(config))
        assert result.returncode == 2
        assert result.stderr.startswith("linebus: ") and "Traceback" not in result.stderr

    def test_a_broker_on_a_port_in_use_is_2_and_names_the_endpoint(self) -> None:
        """A bind the system refuses is a one-line reason with the endpoint, no traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
            free = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
            result = linebus(
                "broker", "--publish-bind", busy, "--bind", free[0], "--subscribe-bind", free[1]
            )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"linebus: the broker cannot listen on {busy} (publish): Address already in use;"
            " another process listens there (another broker?)"
        )
        assert "Traceback" not in result.stderr

    def test_missing_config_file_is_2(self, tmp_path: Path) -> None:
        """`up` with a config file that does not exist exits with code 2."""
        result = linebus("up", str(tmp_path / "nowhere.toml"))
        assert result.returncode == 2
        assert "not found" in result.stderr

    def test_unreachable_broker_is_3(self) -> None:
        """With nothing listening at the endpoint, the command exits with code 3 after its timeout."""
        result = linebus(
            "services", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5"
        )
        assert result.returncode == 3
        assert "broker_unreachable" in result.stderr


class TestStackDump:
    def test_usr1_writes_every_threads_stack_and_the_broker_goes_on(
        self, line: Line, tmp_path: Path
    ) -> None:
        """`kill -USR1` of a linebus process writes each thread's Python stack to its stderr
        (where a hung broker is stuck) and does not stop it: it answers afterwards."""
        from bus.logs import STACK_DUMP_SIGNAL

        err_path = tmp_path / "broker.err"
        with err_path.open("wb") as err:
            broker = line.processes.start(
                "-m", "bus.cli", "broker", "--config", str(line.config), stderr=err
            )
        line.broker = broker
        line.wait_broker()
        broker.send_signal(STACK_DUMP_SIGNAL)

        def dumped() -> str | None:
            text = err_path.read_text(errors="replace")
            return text if "Current thread" in text and "bus/broker.py" in text else None

        dump = wait_until(dumped, scaled(10), "a stack dump in the broker's stderr")
        assert "bus/_eventpath.py" in dump  # every thread: the event path's too
        assert broker.poll() is None
        with line.client(timeout=2.0) as client:
            assert client.ping()["pong"] is True
