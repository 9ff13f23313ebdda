"""The Node.js package in clients/node (the npm package ``linebus``), run by node's test runner.

Three suites of clients/node/test/ run as child processes: the codec against every golden
vector with the error classes, keys and gap tracking (no line: plain pass only), and the
client against a real line started here, over TCP and over the broker's Unix sockets (both
passes: on the secured pass the Node client takes the session's CURVE keys from the
environment). Besides: a secured line of its own with keys the broker refuses, and ``npm pack``
giving a tarball that installs and imports elsewhere.

Needs ``node`` and the package's dependencies (``npm ci`` in clients/node, which ``make``
does). Skipped otherwise with the reason; under CI=true such a skip fails the run (the
``interop`` marker, tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bus import ipc
from bus.errors import WIRE_CODES
from bus.security.keys import generate_keypair, load_keypair, load_public_key
from tests.conftest import (
    ECHO,
    KEY_VARIABLES,
    ROOT,
    Endpoints,
    Line,
    Processes,
    free_port,
    scaled,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.interop]
NODE = ROOT / "clients" / "node"
VECTORS = ROOT / "tests" / "vectors"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the package's dependencies installed."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed (.ci/run installs Debian's nodejs and npm)")
    if not (NODE / "node_modules" / "zeromq").exists():
        pytest.skip(
            "the Node package's dependencies are missing: run `npm ci --prefix clients/node`"
        )
    return binary


def _node(
    node: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, *args],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        env={**os.environ, **(env or {})},
    )


def _run_suite(node: str, *files: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Run node's test runner on ``files``; return its closing counts after checking that every
    test passed and none was skipped or cancelled."""
    result = _node(node, "--test", "--test-reporter=tap", *files, env=env)
    counts = {
        key: int(value)
        for key, value in re.findall(
            r"^# (tests|pass|fail|skipped|cancelled|todo) (\d+)$", result.stdout, re.M
        )
    }
    assert result.returncode == 0 and counts.get("fail") == 0, result.stdout[-6000:] + result.stderr
    assert counts["skipped"] == counts["cancelled"] == counts["todo"] == 0, result.stdout[-6000:]
    assert counts["pass"] == counts["tests"] > 0
    return counts


def test_node_codec_errors_keys_and_gaps(node: str) -> None:
    """The codec passes every golden vector (decode, byte-exact encode, rejection with its code
    and stage), and the error classes are those of the Python client's WIRE_CODES."""
    counts = _run_suite(
        node,
        "test/vectors.test.js",
        "test/unit.test.js",
        env={"LINEBUS_WIRE_CODES": json.dumps(list(WIRE_CODES)), "LINEBUS_VECTORS": str(VECTORS)},
    )
    assert counts["pass"] > len(list(VECTORS.glob("*.json")))  # one test per vector at least


@pytest.fixture(params=["tcp", "ipc"])
def live_line(request: pytest.FixtureRequest, tmp_path: Path, processes: Processes) -> Line:
    """A broker and ``echo1`` running; the test reaches them over TCP, or over the broker's
    ``ipc_dir`` Unix sockets."""
    endpoints = Endpoints.fresh()
    folder = tmp_path / "run"
    config = write_config(
        tmp_path / "line.toml",
        endpoints,
        [{"name": "echo1", **ECHO}],
        broker={"ipc_dir": str(folder)},
    )
    line = Line(config, endpoints, processes)
    line.start_broker()
    line.start_actor("echo1")
    if request.param == "ipc":
        line.endpoints = Endpoints(**ipc.endpoints(folder))
    return line


def test_node_client_against_a_live_line(node: str, live_line: Line) -> None:
    """Calls (results, typed errors, progress, cancel, deadline, bulk frames both ways, an
    unreachable broker) and subscriptions (prefix, readiness, sequence, gaps) on a real line;
    over TCP and over the broker's Unix sockets (the same protocol on another transport)."""
    endpoints = live_line.endpoints
    _run_suite(
        node,
        "test/live.test.js",
        env={
            "LINEBUS_ENDPOINT": endpoints.command,
            "LINEBUS_SUBSCRIBE": endpoints.subscribe,
            "LINEBUS_PUBLISH": endpoints.publish,
            "LINEBUS_TEST_ECHO": "echo1",
            "LINEBUS_TEST_DEAD_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
        },
    )


def test_node_keys_on_a_secured_line(
    node: str, tmp_path: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a line with CURVE, the Node client takes its keys from LINEBUS_KEY_FILE and
    LINEBUS_BROKER_KEY_FILE (or LINEBUS_KEY / LINEBUS_BROKER_KEY, Z85) and calls; with a key the
    broker does not know it fails at once with unauthenticated naming its key, not at its
    deadline, and so does a subscriber; with one key variable and not the other it refuses to
    start."""
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
    example = ["examples/call.js", endpoints.command, "echo1", "add"]

    ok = _node(node, *example, '{"a": 2, "b": 40}')
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
    ok = _node(node, *example, '{"a": 1, "b": 1}', env=z85)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"result": 2}

    started = time.monotonic()
    refused = _node(node, *example, '{"a": 1}', env={"LINEBUS_KEY_FILE": str(mallory.secret_path)})
    assert time.monotonic() - started < scaled(5)  # the call's own deadline is 10 s
    error = json.loads(refused.stdout)["error"]
    assert (refused.returncode, error["code"]) == (1, "unauthenticated")
    assert mallory.public_key.decode() in error["message"]

    started = time.monotonic()
    subscriber = _node(
        node,
        "examples/subscribe.js",
        endpoints.subscribe,
        "1",
        "echo1.",
        env={"LINEBUS_KEY_FILE": str(mallory.secret_path)},
    )
    assert time.monotonic() - started < scaled(5)  # refused, not left waiting for events
    assert subscriber.returncode == 1
    assert f"[unauthenticated]: the broker at {endpoints.subscribe}" in subscriber.stderr

    half = _node(node, *example, '{"a": 1}', env={"LINEBUS_BROKER_KEY_FILE": ""})
    assert half.returncode == 1 and json.loads(half.stdout)["error"]["code"] == "config_error"


def test_npm_pack_gives_a_tarball_that_installs_and_imports(node: str, tmp_path: Path) -> None:
    """``npm pack`` makes a tarball with the library, its types and README and without the
    tests; installed into an empty project it is importable and its Client class works."""
    npm = shutil.which("npm")
    assert npm is not None, "node without npm"
    packed = subprocess.run(
        [npm, "pack", "--json", "--pack-destination", str(tmp_path)],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=True,
    )
    (info,) = json.loads(packed.stdout)
    files = {entry["path"] for entry in info["files"]}
    assert {"package.json", "index.js", "index.d.ts", "README.md", "lib/client.js"} <= files
    assert not any(path.startswith("test/") for path in files)
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true}')
    install = subprocess.run(
        # --prefer-offline: the pinned zeromq comes from npm's cache when `npm ci` put it there.
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
            str(tmp_path / info["filename"]),
        ],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert install.returncode == 0, install.stderr
    script = (
        "const lb = require('linebus');"
        "const c = new lb.Client('tcp://127.0.0.1:1', {keys: null});"
        "const call = c.start('echo1', 'add', {a: 1}, {timeout: 0});"
        "call.result.catch((e) => { console.log(JSON.stringify({code: e.code, sent: call.sent,"
        " classes: typeof lb.Subscriber + typeof lb.DeviceFault})); c.close(); });"
    )
    imported = subprocess.run(
        [node, "-e", script], cwd=app, capture_output=True, text=True, timeout=scaled(30)
    )
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) == {
        "code": "deadline_exceeded",
        "sent": False,
        "classes": "functionfunction",
    }
