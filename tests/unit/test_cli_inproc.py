"""The ``linebus`` command line in-process: ``bus.cli.main([...])`` against a broker and an echo
actor that run in threads of this process, on loopback TCP ports the broker picks itself.

Output is read with ``capsys``; exit codes are ``main``'s return value. The commands that serve
until a signal (``broker``, ``actor``, ``up``) run in the test's main thread, and a helper
thread sends this process SIGTERM once what they serve answers (and only if their handler is
installed); the signal handlers are put back after each test.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import bus.demo
import bus.logs
import bus.supervisor
from bus import cli
from bus.client import Client
from bus.errors import BusError
from bus.supervisor import Supervisor
from bus.terminal.tables import ago
from bus.testing import free_port, wait_until
from tests.unit.inproc_line import WAIT_S, BrokerThread, Line
from tests.unit.stand_in import SERVE, Children

SERVICE = "echo"


@pytest.fixture(scope="module")
def line() -> Iterator[Line]:
    running = Line()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(autouse=True)
def quiet_logging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """``main`` configures structlog for the whole process: let it write to this test's stderr
    without caching loggers (a cached logger would keep the captured stream after the test), and
    put the previous configuration back afterwards. Environment settings of the machine are
    left out."""
    saved = structlog.get_config()
    real = bus.logs.configure_logging

    def configure(**kwargs: Any) -> None:
        real(**kwargs)
        structlog.configure(cache_logger_on_first_use=False)

    for name in ("LINEBUS_LOG_JSON", "LINEBUS_ENDPOINT", "LINEBUS_SUBSCRIBE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LINEBUS_LOG_LEVEL", "warning")
    monkeypatch.setattr(bus.logs, "configure_logging", configure)
    configure()  # the line's threads log here until main configures again
    try:
        yield
    finally:
        structlog.configure(**saved)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``main(argv)``: the exit code, stdout and stderr."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- argument parsing -----------------------------------------------------------------------


class TestParseAssignments:
    def test_values_are_json_when_they_parse(self) -> None:
        args = cli.parse_assignments(
            ["n=3", "x=2.5", "ok=true", "none=null", "ch=[1,2]", 'm={"a": 1}', 's="07"']
        )
        assert args == {
            "n": 3,
            "x": 2.5,
            "ok": True,
            "none": None,
            "ch": [1, 2],
            "m": {"a": 1},
            "s": "07",
        }

    def test_other_values_are_plain_strings(self) -> None:
        args = cli.parse_assignments(["name=fw", "empty=", "at=@", "eq=a=b", "text=07x"])
        assert args == {"name": "fw", "empty": "", "at": "@", "eq": "a=b", "text": "07x"}

    def test_a_later_word_overrides_an_earlier_one(self) -> None:
        assert cli.parse_assignments(["a=1", "a=2"]) == {"a": 2}

    def test_at_path_reads_the_file_bytes(self, tmp_path: Path) -> None:
        blob = tmp_path / "fw.bin"
        blob.write_bytes(b"\x00\x01binary")
        assert cli.parse_assignments([f"data=@{blob}"]) == {"data": b"\x00\x01binary"}

    @pytest.mark.parametrize("word", ["novalue", "=3", ""])
    def test_a_word_without_key_and_equals_is_refused(self, word: str) -> None:
        with pytest.raises(cli.UsageError, match="is not key=value"):
            cli.parse_assignments([word])

    def test_an_unreadable_file_is_refused(self, tmp_path: Path) -> None:
        missing = tmp_path / "missing.bin"
        with pytest.raises(cli.UsageError, match=f"argument data: cannot read {missing}"):
            cli.parse_assignments([f"data=@{missing}"])


class TestJsonForm:
    def test_bytes_become_length_and_base64_at_any_depth(self) -> None:
        value = {1: [b"xyz", bytearray(b"\x00"), (memoryview(b"ab"), "s")], "n": None}
        assert cli._jsonable(value) == {
            "1": [
                {"$bytes": 3, "base64": "eHl6"},
                {"$bytes": 1, "base64": "AA=="},
                [{"$bytes": 2, "base64": "YWI="}, "s"],
            ],
            "n": None,
        }

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(0, "0s ago"), (89, "89s ago"), (90, "2m ago"), (5399, "90m ago"), (7200, "2.0h ago")],
    )
    def test_ago(self, seconds: float, text: str) -> None:
        assert ago(seconds) == text


class TestParser:
    def test_help_lists_every_subcommand(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            cli.main(["--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        for name in ("up", "demo", "broker", "actor", "call", "watch", "services", "stats"):
            assert f"    {name} " in out
        assert "describe" in out and "bench" in out and "ingest" in out

    def test_unknown_subcommand_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            cli.main(["frobnicate"])
        assert exited.value.code == 2
        assert "invalid choice: 'frobnicate'" in capsys.readouterr().err

    def test_endpoints_default_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LINEBUS_ENDPOINT", "tcp://10.0.0.1:7750")
        monkeypatch.setenv("LINEBUS_SUBSCRIBE", "tcp://10.0.0.1:7752")
        args = cli.build_parser().parse_args(["services"])
        assert (args.endpoint, args.subscribe, args.timeout, args.json) == (
            "tcp://10.0.0.1:7750",
            "tcp://10.0.0.1:7752",
            10.0,
            False,
        )

    def test_bench_hands_its_arguments_over_untouched(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`bench --help` reaches the benchmark's own parser (argparse here would reject it)."""
        with pytest.raises(SystemExit) as exited:
            cli.main(["bench", "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: linebus bench") and "--quick" in out

    def test_ingest_hands_its_arguments_over_untouched(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            cli.main(["ingest", "--help"])
        assert exited.value.code == 0
        assert "--port" in capsys.readouterr().out


# --- calls ----------------------------------------------------------------------------------


class TestCall:
    def test_prints_the_result(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        assert run(line.at("call", SERVICE, "add", "a=2", "b=3"), capsys) == (0, "5\n", "")
        assert run(line.at("call", SERVICE, "aecho", "value=7"), capsys) == (0, "7\n", "")

    def test_structured_results_are_indented_json(
        self, line: Line, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(
            line.at("call", SERVICE, "echo", 'value={"n": [1, 2], "s": "é"}'), capsys
        )
        assert code == 0
        assert out == '{\n  "n": [\n    1,\n    2\n  ],\n  "s": "é"\n}\n'

    def test_json(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(line.at("call", SERVICE, "echo", "value=[1,true]", "--json"), capsys)
        assert (code, json_lines(out)) == (0, [{"result": [1, True]}])

    def test_bytes_result_as_json(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(line.at("call", SERVICE, "blob", "size=3", "--json"), capsys)
        assert (code, json_lines(out)) == (0, [{"result": {"$bytes": 3, "base64": "eHh4"}}])

    def test_bytes_result_to_a_file(
        self, line: Line, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        target = tmp_path / "out.bin"
        code, out, _ = run(
            line.at("call", SERVICE, "blob", "size=100", "--out", str(target)), capsys
        )
        assert code == 0
        assert json.loads(out) == {"written": str(target), "bytes": 100}
        assert len(target.read_bytes()) == 100

    def test_out_leaves_other_results_on_stdout(
        self, line: Line, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        target = tmp_path / "out.bin"
        code, out, _ = run(line.at("call", SERVICE, "add", "a=1", "--out", str(target)), capsys)
        assert (code, out, target.exists()) == (0, "1\n", False)

    def test_bytes_argument_from_a_file(
        self, line: Line, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """``data=@file`` sends the file's bytes (100 000 of them: a bulk frame)."""
        blob = tmp_path / "fw.bin"
        blob.write_bytes(os.urandom(100_000))
        code, out, _ = run(line.at("call", SERVICE, "length", f"data=@{blob}"), capsys)
        assert (code, out) == (0, "100000\n")

    def test_progress_goes_to_stderr(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(line.at("call", SERVICE, "work", "steps=3", "step_s=0"), capsys)
        assert code == 0
        assert json.loads(out) == {"steps": 3}
        # Piped: plain lines, the first and the last at once (the one between within a second
        # of the first is held back; bus.terminal.progress is tested in tests/unit/test_terminal.py).
        progress = [ln.split()[:3] for ln in err.splitlines() if ln.startswith("progress ")]
        assert progress == [["progress", "1/3", "33%"], ["progress", "3/3", "100%"]]

    def test_progress_as_json_lines(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(
            line.at("call", SERVICE, "work", "steps=2", "step_s=0", "--json"), capsys
        )
        assert code == 0
        assert json_lines(out) == [
            {"progress": {"done": 1, "total": 2}},
            {"progress": {"done": 2, "total": 2}},
            {"result": {"steps": 2}},
        ]


class TestExitCodes:
    def test_typed_failure_is_1(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(line.at("call", SERVICE, "fail"), capsys)
        assert (code, out) == (1, "")
        assert err.startswith("linebus: ") and "device_fault" in err
        assert "simulated failure" in err

    def test_typed_failure_as_json(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(line.at("call", SERVICE, "fail", "--json"), capsys)
        assert code == 1
        assert json_lines(out) == [
            {
                "error": {
                    "code": "device_fault",
                    "message": "echo.fail: simulated failure",
                    "details": {"device_code": "SIMULATED"},
                }
            }
        ]

    @pytest.mark.parametrize(
        ("argv", "code"),
        [
            (["fail", "code=device_timeout"], "device_timeout"),
            (["crash"], "internal"),
        ],
        ids=["typed", "bug in the actor"],
    )
    def test_the_error_code_is_the_one_sent(
        self, line: Line, capsys: pytest.CaptureFixture[str], argv: list[str], code: str
    ) -> None:
        exit_code, out, _ = run(line.at("call", SERVICE, *argv, "--json"), capsys)
        assert exit_code == 1
        ((error,),) = [list(row.values()) for row in json_lines(out)]
        assert error["code"] == code

    def test_unknown_service_is_1(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(line.at("call", "nosuch", "echo"), capsys)
        assert code == 1 and "unknown_service" in err

    def test_invalid_argument_is_1(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(line.at("call", SERVICE, "add", "a=x"), capsys)
        assert code == 1 and "invalid_arguments" in err and "'a'" in err

    def test_argument_without_equals_is_2(
        self, line: Line, capsys: pytest.CaptureFixture[str]
    ) -> None:
        calls = line.actor.actor.calls
        code, out, err = run(line.at("call", SERVICE, "echo", "value"), capsys)
        assert (code, out) == (2, "")
        assert err.startswith("linebus: argument 'value' is not key=value")
        assert run(line.at("call", SERVICE, "echo"), capsys)[0] == 0
        assert line.actor.actor.calls == calls + 1  # only the second call was sent

    def test_unreadable_file_is_2(
        self, line: Line, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        code, _, err = run(
            line.at("call", SERVICE, "length", f"data=@{tmp_path / 'missing.bin'}"), capsys
        )
        assert code == 2 and "cannot read" in err and "No such file" in err

    def test_unreachable_broker_is_3(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Nothing listens at the endpoint: exit code 3 once the timeout has passed (the error
        as JSON here; as text, typed errors look alike: see the exit code 1 tests)."""
        argv = ["services", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.05"]
        code, out, err = run([*argv, "--json"], capsys)
        assert (code, err) == (3, "")
        ((error,),) = [list(row.values()) for row in json_lines(out)]
        assert error["code"] == "broker_unreachable"

    def test_watch_without_a_broker_is_3_within_the_timeout(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A subscription alone never learns there is no broker: watch asks it first, so it
        exits 3 like every other command instead of waiting silently (issue 14)."""
        argv = ["watch", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.05"]
        code, out, err = run(argv, capsys)
        assert (code, out) == (3, "")
        assert err.startswith("linebus: [broker_unreachable]") and "is it running?" in err

    def test_an_endpoint_zeromq_cannot_use_is_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """One clear line, no traceback (issue 14)."""
        for command in (["services"], ["call", SERVICE, "echo"], ["watch"], ["health"]):
            code, out, err = run([*command, "--endpoint", "notanendpoint"], capsys)
            assert (code, out) == (2, ""), command
            assert err.splitlines() == [
                "linebus: 'notanendpoint' is not a usable broker endpoint (Invalid argument"
                " (addr='notanendpoint')); expected tcp://host:port or ipc://path"
            ]

    @pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
    def test_a_timeout_that_is_no_positive_duration_is_2(
        self, value: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Refused by the parser before anything is sent (it was deadline_exceeded, exit 1)."""
        for option in ("--timeout", "--idle"):
            argv = ["watch", f"{option}={value}", "--endpoint", "tcp://127.0.0.1:9"]
            with pytest.raises(SystemExit) as exited:
                cli.main(argv)
            out, err = capsys.readouterr()
            assert (exited.value.code, out) == (2, "")
            assert f"argument {option}: " in err.splitlines()[-1]
            assert "seconds" in err.splitlines()[-1]

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ('[broker]\nheartbeat_s = "fast"\n', "heartbeat_s"),
            ("[broker\n", "bad.toml"),
            ("[brokr]\n", "brokr"),
        ],
        ids=["wrong type", "not TOML", "unknown section"],
    )
    def test_bad_config_is_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
    ) -> None:
        config = tmp_path / "bad.toml"
        config.write_text(content)
        for argv in (["up", str(config)], ["actor", str(config), "a"], ["demo", str(config)]):
            code, out, err = run(argv, capsys)
            assert (code, out) == (2, ""), argv
            assert err.startswith("linebus: ") and message in err and "Traceback" not in err

    def test_missing_config_is_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(["up", str(tmp_path / "nowhere.toml")], capsys)
        assert code == 2 and "not found" in err

    def test_unknown_actor_is_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        config = tmp_path / "line.toml"
        config.write_text(
            '[[actor]]\nname = "a1"\nkind = "echo"\nclass = "bus.testing:EchoActor"\n'
        )
        code, _, err = run(["actor", str(config), "a2"], capsys)
        assert code == 2
        assert "no actor named 'a2' (have ['a1'])" in err

    def test_broken_pipe_is_a_quiet_exit(
        self, line: Line, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reader that goes away (``linebus services | head -1``) ends the command quietly."""

        def closed_pipe(*_: Any, **__: Any) -> None:
            raise BrokenPipeError

        monkeypatch.setattr(cli, "_print_json", closed_pipe)
        assert run(line.at("stats", "--json"), capsys) == (0, "", "")


# --- listings -------------------------------------------------------------------------------


class TestListings:
    def test_services_table(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(line.at("services"), capsys)
        assert code == 0
        header, *rows = out.splitlines()
        assert header.split() == ["NAME", "KIND", "STATE", "SINCE", "RESTARTS", "PID"]
        (row,) = rows
        words = row.split()
        assert words[:3] == [SERVICE, "echo", "up"]
        assert words[-2:] == ["0", str(os.getpid())]  # no restarts
        assert words[-3] == "ago)" and words[-4].endswith("s")  # "(12s ago)" beside the date

    def test_services_json(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(line.at("services", "--json"), capsys)
        assert code == 0
        (row,) = json_lines(out)
        assert (row["name"], row["kind"], row["state"], row["pid"], row["restarts"]) == (
            SERVICE,
            "echo",
            "up",
            os.getpid(),
            0,
        )

    def test_no_services(self, capsys: pytest.CaptureFixture[str]) -> None:
        empty = BrokerThread()
        empty.start()
        try:
            argv = ["services", "--endpoint", empty.command, "--timeout", str(WAIT_S)]
            assert run(argv, capsys) == (0, "no services have registered\n", "")
            assert run([*argv, "--json"], capsys) == (0, "", "")
        finally:
            empty.close()

    def test_describe(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(line.at("describe", SERVICE), capsys)
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == f"echo (echo), up, pid {os.getpid()}"
        assert (
            lines[1] == "  A device-less actor for tests, benchmarks and the bus part of the demo."
        )
        assert "  add(a: int, b: int = 0) -> int" in lines
        assert "      Return ``a + b`` (exercises argument validation)." in lines
        assert (
            "  work(steps: int, step_s: float, fail_at: int = 0) -> dict[str, int] [progress]"
            in lines
        )
        assert "  echo(value: any = None) -> any" in lines
        assert "  crash() -> nil" in lines
        fail = "  fail(code: str = 'device_fault', message: str = 'simulated failure') -> nil"
        assert fail in lines
        commands = [ln.split("(")[0].strip() for ln in lines if ln.startswith("  ") and "->" in ln]
        assert commands == sorted(commands) and "ping" in commands

    def test_describe_json(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(line.at("describe", SERVICE, "--json"), capsys)
        assert code == 0
        (info,) = json_lines(out)
        assert (info["name"], info["kind"], info["pid"]) == (SERVICE, "echo", os.getpid())
        assert info["commands"]["add"]["args"][0] == {"name": "a", "type": "int", "required": True}

    def test_describe_unknown_service_is_1(
        self, line: Line, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = run(line.at("describe", "ghost"), capsys)
        assert code == 1 and "ghost" in err

    def test_stats(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        run(line.at("call", SERVICE, "add", "a=1"), capsys)
        code, out, _ = run(line.at("stats"), capsys)
        assert code == 0
        tables = out.split("\n\n")  # the broker's numbers, then one table per map or list
        broker = dict(line.split(maxsplit=1) for line in tables[0].splitlines())
        assert broker["BROKER"] == "VALUE" and broker["services_up"] == "1"
        routed = dict(line.split() for line in tables[1].splitlines())
        assert routed["ROUTED"] == "VALUE" and int(routed["request"]) >= 1
        assert all(line == line.rstrip() for line in out.splitlines())  # piped: no trailing blanks
        run(line.at("call", SERVICE, "add", "a=2"), capsys)
        code, out, _ = run(line.at("stats", "--json"), capsys)
        (again,) = json_lines(out)
        assert code == 0 and again["routed"]["request"] > int(routed["request"])


# --- watch ----------------------------------------------------------------------------------


class TestHealth:
    """`linebus health [SERVICE]`: the health check of a container, one line, exit 0/1/3."""

    def test_the_broker_itself(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(line.at("health"), capsys)
        assert (code, out, err) == (0, f"healthy: broker is up at {line.command}\n", "")

    def test_a_service_that_is_up(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(line.at("health", SERVICE), capsys)
        assert (code, out) == (0, f"healthy: echo is up at {line.command}, pid {os.getpid()}\n")

    def test_a_service_nobody_registered_is_1(
        self, line: Line, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = run(line.at("health", "nobody", "--json"), capsys)
        assert code == 1
        assert json_lines(out) == [
            {"service": "nobody", "state": "unregistered", "healthy": False, "name": "nobody"}
        ]

    def test_no_broker_is_3(self, capsys: pytest.CaptureFixture[str]) -> None:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        code, out, _ = run(["health", "--endpoint", endpoint, "--timeout", "0.05"], capsys)
        assert (code, out) == (3, f"unhealthy: the broker at {endpoint} does not answer\n")


class TestLineCommands:
    """`linebus simulator`, `linebus keys prepare` and `linebus tour`: what a container runs."""

    def test_simulator_replaces_itself_with_the_configured_module(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = tmp_path / "line.toml"
        config.write_text(
            '[[simulator]]\nname = "sim"\nmodule = "actors.flux.simulator"\nargs = ["--x", 1]\n'
        )
        execs: list[tuple[str, list[str]]] = []
        monkeypatch.setattr(os, "execv", lambda path, argv: execs.append((path, argv)))
        assert cli.main(["simulator", str(config), "sim"]) == 0
        assert execs == [
            (sys.executable, [sys.executable, "-m", "actors.flux.simulator", "--x", "1"])
        ]

    def test_unknown_simulator_is_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        config = tmp_path / "line.toml"
        config.write_text('[[simulator]]\nname = "sim"\nmodule = "m"\n')
        assert cli.main(["simulator", str(config), "other"]) == 2
        assert "no simulator named 'other' (have ['sim'])" in capsys.readouterr().err

    def test_keys_prepare_makes_every_key_of_a_secured_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        config = tmp_path / "line.toml"
        config.write_text(
            '[security]\nkey = "broker.key_secret"\nkeys = "keys"\n'
            '[security.acl]\noperators = ["alice"]\n'
            '[[actor]]\nname = "a1"\nkind = "echo"\nclass = "bus.testing:EchoActor"\n'
        )
        assert cli.main(["keys", "prepare", str(config), "--json"]) == 0
        made = json.loads(capsys.readouterr().out)
        assert made["keys_dir"] == str(tmp_path / "keys")
        assert sorted(made["generated"]) == sorted(
            [f"broker ({tmp_path / 'broker.key_secret'})", "a1", "supervisor", "alice"]
        )
        for name in ("a1", "supervisor", "alice"):
            assert stat.S_IMODE((tmp_path / "keys" / f"{name}.key_secret").stat().st_mode) == 0o600
        assert cli.main(["keys", "prepare", str(config)]) == 0  # nothing replaced
        assert "generated nothing: every key existed" in capsys.readouterr().out

    def test_keys_prepare_of_a_plaintext_line_is_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        config = tmp_path / "line.toml"
        config.write_text("[broker]\n")
        assert cli.main(["keys", "prepare", str(config)]) == 2
        assert "the line is not secured" in capsys.readouterr().err

    def test_tour_of_a_running_line(
        self, line: Line, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`tour` starts nothing: it tours the line at the config's endpoints, as `demo` does."""
        config = line_config(tmp_path, line, '[[actor]]\nname = "echo"\nkind = "gadget"\n')
        code, out, _ = run(["tour", str(config)], capsys)
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == f"linebus tour: touring the running line of {config}"
        assert "== echo (gadget) ==" in lines
        assert lines[-2:] == ["", "linebus tour: done."]


class Emitter(threading.Thread):
    """Calls ``echo.emit`` every 20 ms until told to stop (the subscription of `watch` becomes
    active at some moment after it starts: events are sent until it has seen enough)."""

    def __init__(self, line: Line, event: str) -> None:
        super().__init__(name="cli-test-emitter", daemon=True)
        self.line = line
        self.event = event
        self.done = threading.Event()
        self.sent = 0

    def run(self) -> None:
        with Client(self.line.command, timeout=WAIT_S) as client:
            while not self.done.wait(0.02) and self.sent < 500:
                client.call(SERVICE, "emit", event=self.event, data={"n": self.sent})
                self.sent += 1

    def __enter__(self) -> Emitter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(WAIT_S)


class TestWatch:
    def test_count_and_json(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        with Emitter(line, "tick"):
            code, out, _ = run(
                line.at("watch", f"{SERVICE}.tick", "--count", "2", "--json", "--idle", "5"),
                capsys,
            )
        assert code == 0
        first, second = json_lines(out)
        assert (first["topic"], first["src"], first["missed"]) == ("echo.tick", SERVICE, 0)
        assert (second["topic"], second["seq"], second["missed"]) == (
            "echo.tick",
            first["seq"] + 1,
            0,
        )
        assert second["data"] == {"n": first["data"]["n"] + 1}
        assert isinstance(first["ts"], float)

    def test_text_lines(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        with Emitter(line, "tock"):
            code, out, _ = run(
                line.at("watch", f"{SERVICE}.tock", "--count", "3", "--idle", "5"), capsys
            )
        assert code == 0
        rows = out.splitlines()
        assert len(rows) == 3
        for row in rows:
            stamp, topic, seq, data = row.split(" ", 3)
            assert len(stamp) == 8 and stamp[2] == stamp[5] == ":"
            assert topic == "echo.tock" and seq.startswith("#")
            assert json.loads(data).keys() == {"n"}

    def test_idle_ends_a_quiet_watch(self, line: Line, capsys: pytest.CaptureFixture[str]) -> None:
        assert run(line.at("watch", "nothing.here.", "--idle", "0.05"), capsys) == (0, "", "")


# --- the serving subcommands ----------------------------------------------------------------


class SignalWhen(threading.Thread):
    """Send this process SIGTERM once ``ready()`` holds (or after ``WAIT_S``, to unblock the
    test), provided the command under test has installed its handler by then."""

    def __init__(self, ready: Callable[[], object], what: str, original: Any) -> None:
        super().__init__(name="cli-test-signal", daemon=True)
        self.ready = ready
        self.what = what
        self.original = original
        self.error: Exception | None = None
        self.signalled = False

    def run(self) -> None:
        try:
            wait_until(self.ready, WAIT_S, self.what, interval=0.05, ignore=(BusError,))
        except Exception as exc:  # reported by the test; the signal must still be sent
            self.error = exc
        if signal.getsignal(signal.SIGTERM) is not self.original:
            self.signalled = True
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def sigterm_when() -> Iterator[Callable[[Callable[[], object], str], SignalWhen]]:
    """``sigterm_when(ready, what)`` starts a ``SignalWhen``; handlers are restored after."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    started: list[SignalWhen] = []

    def arm(ready: Callable[[], object], what: str) -> SignalWhen:
        waiter = SignalWhen(ready, what, saved[signal.SIGTERM])
        waiter.start()
        started.append(waiter)
        return waiter

    try:
        yield arm
    finally:
        for waiter in started:
            waiter.join(WAIT_S * 2)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def pings(endpoint: str) -> Callable[[], bool]:
    def check() -> bool:
        with Client(endpoint, timeout=0.5) as client:
            return client.ping()["pong"] is True

    return check


def write_line(path: Path, command: str, publish: str, subscribe: str, actors: str = "") -> Path:
    path.write_text(
        f'[broker]\ncommand = "{command}"\npublish = "{publish}"\nsubscribe = "{subscribe}"\n'
        + actors
    )
    return path


def loopback() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def line_config(tmp_path: Path, line: Line, actors: str) -> Path:
    """A config on the endpoints of the in-process ``line``."""
    endpoints = line.broker.endpoints
    return write_line(
        tmp_path / "line.toml",
        endpoints["command"],
        endpoints["publish"],
        endpoints["subscribe"],
        actors,
    )


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Children:
    """The supervisor of `up` and `demo` runs the stand-in children (``stand_in.Children``)
    instead of Python interpreters; the broker they wait for is the in-process one."""
    root = tmp_path / "children"
    root.mkdir()
    children = Children(root)
    supervisor = functools.partial(Supervisor, python=str(children.python))
    monkeypatch.setattr(bus.supervisor, "Supervisor", supervisor)
    monkeypatch.setattr(bus.demo, "Supervisor", supervisor)
    return children


class TestServing:
    def test_broker_runs_until_sigterm(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        sigterm_when: Callable[[Callable[[], object], str], SignalWhen],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`broker --config` binds the config's endpoints but for those given as options, and
        with --json its log lines are JSON."""
        monkeypatch.setenv("LINEBUS_LOG_LEVEL", "info")
        config = write_line(tmp_path / "line.toml", loopback(), loopback(), loopback())
        command = loopback()
        waiter = sigterm_when(pings(command), "the broker to answer")
        code, _, err = run(["broker", "--config", str(config), "--bind", command, "--json"], capsys)
        assert (code, waiter.error, waiter.signalled) == (0, None, True)
        assert os.environ["LINEBUS_LOG_JSON"] == "1"  # what the children of `up` inherit
        events = {line["event"]: line for line in json_lines(err)}
        assert events["broker_listening"]["command"] == command
        assert "broker_stopped" in events

    def test_broker_without_config_binds_the_options(
        self,
        capsys: pytest.CaptureFixture[str],
        sigterm_when: Callable[[Callable[[], object], str], SignalWhen],
    ) -> None:
        command, publish, subscribe = loopback(), loopback(), loopback()
        waiter = sigterm_when(pings(command), "the broker to answer")
        argv = ["broker", "--bind", command, "--publish-bind", publish]
        code, _, _ = run([*argv, "--subscribe-bind", subscribe], capsys)
        assert (code, waiter.error, waiter.signalled) == (0, None, True)

    def test_actor_serves_until_sigterm(
        self,
        line: Line,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        sigterm_when: Callable[[Callable[[], object], str], SignalWhen],
    ) -> None:
        """`actor CONFIG NAME` serves that actor of the config in this process."""
        config = write_line(
            tmp_path / "line.toml",
            line.command,
            line.broker.endpoints["publish"],
            line.broker.subscribe,
            '[[actor]]\nname = "echo2"\nkind = "echo"\nclass = "bus.testing:EchoActor"\n',
        )

        def answers() -> bool:
            with Client(line.command, timeout=1.0) as client:
                return bool(client.call("echo2", "add", a=2, b=2) == 4)

        waiter = sigterm_when(answers, "echo2 to answer")
        code, _, _ = run(["actor", str(config), "echo2"], capsys)
        assert (code, waiter.error, waiter.signalled) == (0, None, True)
        with Client(line.command, timeout=WAIT_S) as client:
            rows = {row["name"]: row["state"] for row in client.services()}
        assert rows["echo2"] == "down"  # it said goodbye on its way out

    def test_up_runs_the_line_until_sigterm(
        self,
        line: Line,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        sigterm_when: Callable[[Callable[[], object], str], SignalWhen],
        stand_in: Children,
    ) -> None:
        """`up` starts the line's processes under a supervisor and stops them on SIGTERM,
        actors first."""
        stand_in.behave(broker=SERVE, a1=SERVE)
        config = line_config(tmp_path, line, '[[actor]]\nname = "a1"\nkind = "gadget"\n')

        def serving() -> bool:
            return {"serving broker", "serving a1"} <= set(stand_in.events())

        waiter = sigterm_when(serving, "the line's processes serving")
        code, _, err = run(["up", str(config)], capsys)
        assert (code, waiter.error, waiter.signalled) == (0, None, True)
        assert "linebus is up (2 processes). Ctrl-C stops it." in err
        assert [e for e in stand_in.events() if e.startswith("stop")] == ["stop a1", "stop broker"]

    def test_demo(
        self, line: Line, tmp_path: Path, capsys: pytest.CaptureFixture[str], stand_in: Children
    ) -> None:
        """`demo` brings the line up, tours it (an actor kind without a tour of its own gets
        ping and describe), and takes it down."""
        stand_in.behave(broker=SERVE, echo=SERVE)
        # The stand-in child "echo" serves nothing: the service is the in-process echo actor.
        config = line_config(tmp_path, line, '[[actor]]\nname = "echo"\nkind = "gadget"\n')
        code, out, _ = run(["demo", str(config)], capsys)
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == f"linebus demo: starting the line of {config} (0 simulators, 1 actors)"
        assert lines[1:3] == ["", "== the line =="]
        assert f"  {SERVICE:<12} {'echo':<12} up    pid {os.getpid()}" in lines
        tour = lines.index("== echo (gadget) ==")
        assert lines[tour + 1].startswith("  ping -> {")
        assert lines[tour + 2].startswith("  13 commands: add, aecho, blob,")
        assert lines[tour + 3 : tour + 5] == ["", "== broker counters =="]
        assert lines[tour + 5].startswith("  routed {") and lines[tour + 6].startswith(
            "  dropped {"
        )
        assert lines[-2:] == [
            "",
            "linebus demo: the line is shut down; every process has exited. Done.",
        ]
        assert [e for e in stand_in.events() if e.startswith("stop")] == [
            "stop echo",
            "stop broker",
        ]
