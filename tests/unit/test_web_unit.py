"""bus.web without a line: tokens files, the JSON codec, launch settings, the [web] table, the
supervisor's web process, and the event stream's gap reports."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from bus._calls import TrackedEvent
from bus.config import loads
from bus.demo import web_url
from bus.errors import BadRequest, ConfigError
from bus.security.files import write_private_file
from bus.supervisor import Supervisor
from bus.web.auth import Tokens
from bus.web.codec import from_json, sse, to_json
from bus.web.gateway import _event_stream
from bus.web.launch import launch_settings

TOKEN = "a-token-long-enough-0123"


def _tokens(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    write_private_file(path, text.encode())
    os.chmod(path, mode)
    return path


def test_tokens_file(tmp_path: Path) -> None:
    tokens = Tokens.load(_tokens(tmp_path, f"# who token\noperator {TOKEN}  # the MES\n\n"))
    assert tokens.identity(TOKEN) == "operator"
    assert tokens.identity(TOKEN[:-1]) is None
    assert tokens.names == {"operator"}


@pytest.mark.parametrize(
    ("text", "mode", "problem"),
    [
        (f"operator {TOKEN}\n", 0o644, "readable or writable by other users"),
        ("operator short\n", 0o600, "at least 16 are needed"),
        (f"operator {TOKEN} extra\n", 0o600, "expected `IDENTITY TOKEN`"),
        (f"-bad {TOKEN}\n", 0o600, "not a valid key name"),
        (f"a {TOKEN}\nb {TOKEN}\n", 0o600, "also given to 'a'"),
        ("# nothing\n", 0o600, "holds no token"),
    ],
)
def test_bad_tokens_files(tmp_path: Path, text: str, mode: int, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Tokens.load(_tokens(tmp_path, text, mode))


def test_json_codec() -> None:
    value = {1: b"\x00\xff", "x": [float("nan"), float("inf"), -float("inf"), 2.5]}
    shown = to_json(value)
    assert shown == {
        "1": {"$bytes": 2, "base64": "AP8="},
        "x": ["NaN", "Infinity", "-Infinity", 2.5],
    }
    assert from_json(shown["1"]) == b"\x00\xff"  # a result passes back as an argument
    assert from_json({"a": [{"base64": "aGk="}], "b": {"base64": 1}}) == {
        "a": [b"hi"],
        "b": {"base64": 1},  # not text: an ordinary object
    }
    with pytest.raises(BadRequest, match=r"args.a\[0\]: base64 text expected"):
        from_json({"a": [{"base64": "%%"}]})
    with pytest.raises(BadRequest, match="'\\$bytes' is 3 but the base64 text holds 2 bytes"):
        from_json({"$bytes": 3, "base64": "AP8="})
    assert sse({"n": b"x"}, "progress") == (
        'event: progress\ndata: {"n": {"$bytes": 1, "base64": "eA=="}}\n\n'
    )


def test_listening_beyond_loopback_needs_tokens_or_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reachable from the network"):
        launch_settings(None, listen="0.0.0.0:8750", key=None)
    assert launch_settings(None, listen="0.0.0.0:8750", insecure=True).listen == "0.0.0.0:8750"
    tokens = _tokens(tmp_path, f"operator {TOKEN}\n")
    launched = launch_settings(None, listen="0.0.0.0:8750", tokens=str(tokens))
    assert launched.settings.tokens is not None
    assert launched.settings.identity_keys == {"operator": None}  # plaintext: labels only


LINE = """
[[actor]]
name = "echo"
kind = "echo"
"""


def test_web_table(tmp_path: Path) -> None:
    path = str(tmp_path / "line.toml")
    assert loads(LINE, path).web is None
    web = loads(LINE + '[web]\nlisten = "127.0.0.1:9000"\ntokens = "tokens"\n', path).web
    assert web is not None
    assert (web.listen, web.identity, web.tokens) == ("127.0.0.1:9000", "web", tmp_path / "tokens")
    assert web.nice == 10  # the bus's processes come first
    line = loads(LINE + "[web]\nnice = 0\n", path)
    assert launch_settings(line).nice == 0
    assert launch_settings(line, nice=5).nice == 5
    for table, problem in (
        ('listen = "nowhere"', "is not HOST:PORT"),
        ('identity = "-x"', "not a valid key name"),
        ("port = 1", "port"),
        ("nice = 20", "between 0 and 19"),
    ):
        with pytest.raises(ConfigError, match=problem):
            loads(LINE + f"[web]\n{table}\n", path)


def test_supervisor_runs_the_web_process_last(tmp_path: Path) -> None:
    path = tmp_path / "line.toml"
    path.write_text(LINE + "[web]\n")
    supervisor = Supervisor(loads(path.read_text(), str(path)))
    web = supervisor.processes[-1]
    assert (web.name, web.role) == ("web", "web")
    assert web.argv[1:] == ["-m", "bus.cli", "web", "--config", str(path)]


def test_web_url() -> None:
    assert web_url("127.0.0.1:8750") == "http://127.0.0.1:8750/"
    assert web_url("0.0.0.0:80") == "http://127.0.0.1:80/"
    assert web_url("[::1]:8750") == "http://[::1]:8750/"


class _Gappy:
    """A subscription that yields one event after a gap of 3, then none."""

    def __init__(self) -> None:
        self.events = [TrackedEvent("fr1.job", "fr1", 9, 1.5, {"done": 1}, missed=3)]
        self.closed = False

    async def next(self, timeout: float | None = None) -> TrackedEvent | None:
        return self.events.pop(0) if self.events else None

    def close(self) -> None:
        self.closed = True


def test_event_stream_reports_gaps() -> None:
    subscription = _Gappy()

    async def first(stream: AsyncGenerator[str, None], n: int) -> list[str]:
        out = [await anext(stream) for _ in range(n)]
        await stream.aclose()
        return out

    ready, gap, event, idle = asyncio.run(first(_event_stream(subscription, ["fr1."]), 4))
    assert ready == 'event: ready\ndata: {"prefixes": ["fr1."]}\n\n'
    assert gap.startswith("event: gap\n")
    assert json.loads(gap.split("data: ")[1]) == {"topic": "fr1.job", "src": "fr1", "missed": 3}
    assert json.loads(event.removeprefix("data: ")) == {
        "topic": "fr1.job",
        "src": "fr1",
        "seq": 9,
        "ts": 1.5,
        "data": {"done": 1},
    }
    assert idle == ": keep-alive\n\n"
    assert subscription.closed
