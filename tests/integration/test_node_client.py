"""The Node.js client in clients/node, written from docs/PROTOCOL.md, against a real line.

Needs ``node`` and ``npm install`` in clients/node (``.ci/run`` does it); skipped otherwise, with
the reason shown.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, scaled

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (ROOT / "clients" / "node" / "node_modules" / "zeromq").exists(),
        reason="run `npm install` in clients/node first",
    ),
]
NODE = ROOT / "clients" / "node"


def _node(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", *args], cwd=NODE, capture_output=True, text=True, timeout=scaled(timeout)
    )


def test_node_calls_a_command(running_line):
    """A Node program calls echo1.add through the broker and gets the result."""
    result = _node("call.js", running_line.endpoints.command, "echo1", "add", '{"a": 2, "b": 40}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"result": 42}


def test_node_gets_typed_errors(running_line):
    """A failing call reaches Node as the wire error code."""
    result = _node("call.js", running_line.endpoints.command, "echo1", "add", '{"a": "x"}')
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "invalid_arguments"


def test_node_subscribes_to_events(running_line):
    """A Node subscriber receives events by topic prefix with their sequence numbers."""
    proc = subprocess.Popen(
        ["node", "subscribe.js", running_line.endpoints.subscribe, "3", "echo1.tick"],
        cwd=NODE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stderr.readline().strip() == "subscribed"
        # ZeroMQ subscriptions propagate asynchronously: keep publishing until Node has seen 3.
        with running_line.client() as bus:
            deadline_calls = 200
            while proc.poll() is None and deadline_calls:
                bus.call("echo1", "emit", event="tick", count=1, data={"n": 1})
                deadline_calls -= 1
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.05)
        out, _ = proc.communicate(timeout=scaled(10))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 3
    assert {e["topic"] for e in events} == {"echo1.tick"}
    assert [e["seq"] - events[0]["seq"] for e in events] == [0, 1, 2]
    assert all(e["missed"] == 0 and e["data"] == {"n": 1} for e in events)
