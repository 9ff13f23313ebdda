"""The Node.js client in clients/node, written from docs/PROTOCOL.md, against a real line.

Needs ``node`` and ``npm install`` in clients/node (``.ci/run`` does it); skipped otherwise, with
the reason shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bus.security.keys import generate_keypair, load_keypair, load_public_key
from tests.conftest import (
    ECHO,
    KEY_VARIABLES,
    ROOT,
    Endpoints,
    Line,
    Processes,
    scaled,
    write_config,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (ROOT / "clients" / "node" / "node_modules" / "zeromq").exists(),
        reason="run `npm install` in clients/node first",
    ),
]
NODE = ROOT / "clients" / "node"


def _node(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", *args],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        env={**os.environ, **(env or {})},
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


def test_node_keys_on_a_secured_line(
    tmp_path: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a line with CURVE, the Node client takes its keys from LINEBUS_KEY_FILE and
    LINEBUS_BROKER_KEY_FILE (or LINEBUS_KEY / LINEBUS_BROKER_KEY, Z85) and calls; with a key the
    broker does not know it fails at once with unauthenticated naming its key, not at its
    deadline; with one key variable and not the other it refuses to start."""
    keys, strangers = tmp_path / "keys", tmp_path / "strangers"
    generate_keypair(tmp_path, "broker")
    for name in ("node", "echo1"):
        generate_keypair(keys, name)
    mallory = generate_keypair(strangers, "mallory")
    security = f"""
[security]
key = "{tmp_path / "broker.key_secret"}"
keys = "{keys}"
"""
    endpoints = Endpoints.fresh()
    config = write_config(
        tmp_path / "line.toml", endpoints, [{"name": "echo1", **ECHO}], extra=security
    )
    for variable in KEY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LINEBUS_KEY_FILE", str(keys / "node.key_secret"))
    monkeypatch.setenv("LINEBUS_BROKER_KEY_FILE", str(tmp_path / "broker.key"))
    line = Line(config, endpoints, processes)  # its clients take node's key from the environment
    line.start_broker()
    actor = processes.start(
        "-m",
        "bus.cli",
        "actor",
        str(config),
        "echo1",
        env={"LINEBUS_KEY_FILE": str(keys / "echo1.key_secret")},
    )
    line.wait_up("echo1", pid=actor.pid)

    ok = _node("call.js", endpoints.command, "echo1", "add", '{"a": 2, "b": 40}')
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"result": 42}
    own, broker = (
        load_keypair(file=keys / "node.key_secret"),
        load_public_key(file=tmp_path / "broker.key"),
    )
    assert own.secret is not None
    z85 = {
        "LINEBUS_KEY_FILE": "",
        "LINEBUS_BROKER_KEY_FILE": "",
        "LINEBUS_KEY": own.secret.decode(),  # the public half is derived from it
        "LINEBUS_BROKER_KEY": broker.decode(),
    }
    ok = _node("call.js", endpoints.command, "echo1", "add", '{"a": 1, "b": 1}', env=z85)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"result": 2}

    started = time.monotonic()
    refused = _node(
        "call.js",
        endpoints.command,
        "echo1",
        "add",
        '{"a": 1}',
        env={"LINEBUS_KEY_FILE": str(mallory.secret_path)},
    )
    assert time.monotonic() - started < scaled(5)  # the call's own deadline is 10 s
    error = json.loads(refused.stdout)["error"]
    assert (refused.returncode, error["code"]) == (1, "unauthenticated")
    assert mallory.public_key.decode() in error["message"]

    half = _node(
        "call.js",
        endpoints.command,
        "echo1",
        "add",
        '{"a": 1}',
        env={"LINEBUS_BROKER_KEY_FILE": ""},
    )
    assert half.returncode == 1 and json.loads(half.stdout)["error"]["code"] == "config_error"
