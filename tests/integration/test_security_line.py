"""A secured line end to end (issue 10), client side: `linebus up` of a config with [security]
gives every actor its own key and the line works as before through the CLI and a facade, for
whoever holds a key the broker knows; a client without a key, or with an unknown one, is told so
at once; a known identity that is no operator cannot call privileged commands, and the audit log
shows both; no secret is in any actor's arguments or environment, nor in any log of the line or
of a full secured demo run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.client import Client, ClientKeys
from bus.errors import Forbidden
from bus.security.keys import generate_keypair, load_keypair
from bus.testing import wait_until
from clients.flashrunner import FlashRunner
from tests.conftest import ECHO, ROOT, Endpoints, Processes, free_port, scaled, write_config

pytestmark = pytest.mark.integration

KEY_VARS = ("LINEBUS_KEY_FILE", "LINEBUS_KEY", "LINEBUS_BROKER_KEY_FILE", "LINEBUS_BROKER_KEY")
#: A refusal is reported at once; the CLI's own deadline is 10 s.
FAST_S = 5.0

SECURITY = """
[security]
key = "state/broker.key_secret"
keys = "state/keys"
audit_log = "state/audit.jsonl"
audit_fsync = "never"

[security.acl]
operators = ["operator"]
"""


@dataclass
class SecureLine:
    """A `linebus up` line with [security]: echo and fr1 (on a FlashRunner simulator)."""

    root: Path
    config: Path
    endpoints: Endpoints
    up: subprocess.Popen[bytes]
    log: Path

    @property
    def keys_dir(self) -> Path:
        return self.root / "state" / "keys"

    @property
    def broker_key(self) -> Path:
        return self.root / "state" / "broker.key"

    def key(self, identity: str) -> Path:
        return self.keys_dir / f"{identity}.key_secret"

    def env(self, identity: str | None) -> dict[str, str]:
        """The environment of a CLI run as ``identity`` (None: no key at all)."""
        env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
        env["LINEBUS_ENDPOINT"] = self.endpoints.command
        env["LINEBUS_SUBSCRIBE"] = self.endpoints.subscribe
        if identity is not None:
            env["LINEBUS_KEY_FILE"] = str(self.key(identity))
            env["LINEBUS_BROKER_KEY_FILE"] = str(self.broker_key)
        return env

    def cli(
        self, *argv: str, identity: str | None = "operator", timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bus.cli", *argv],
            cwd=ROOT,
            env=self.env(identity),
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
        )

    def client(self, identity: str = "operator") -> Client:
        keys = ClientKeys.load(key_file=self.key(identity), broker_key_file=self.broker_key)
        return Client(
            self.endpoints.command,
            subscribe_endpoint=self.endpoints.subscribe,
            timeout=scaled(10),
            keys=keys,
        )

    def secrets(self) -> dict[str, str]:
        """Every secret of the line by where it comes from: the secret keys (Z85)."""
        found = {}
        for path in [*self.keys_dir.glob("*.key_secret"), self.root / "state/broker.key_secret"]:
            secret = load_keypair(file=path).secret
            assert secret is not None
            found[str(path)] = secret.decode()
        return found


@pytest.fixture(scope="module")
def secure_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureLine]:
    root = tmp_path_factory.mktemp("secure-line")
    endpoints = Endpoints.fresh()
    fr_port, log_port = free_port(), free_port()
    simulator = (
        "\n[[simulator]]\n"
        'name = "fr-sim"\n'
        'module = "actors.flashrunner.simulator"\n'
        f'args = ["--listen", "127.0.0.1:{fr_port}", "--logger-listen", "127.0.0.1:{log_port}"]\n'
    )
    fr1 = {
        "name": "fr1",
        "kind": "flashrunner",
        "options": {
            "port": "LAN",
            "settings": f"127.0.0.1:{fr_port}",
            "logger_address": f"127.0.0.1:{log_port}",
        },
    }
    config = write_config(
        root / "line.toml",
        endpoints,
        [{"name": "echo", **ECHO}, fr1],
        extra=SECURITY + simulator,
    )
    # A known identity that is no operator: its public key is in the keys directory.
    generate_keypair(root / "state" / "keys", "viewer")
    log = root / "up.log"
    processes = Processes()
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    env["LINEBUS_LOG_LEVEL"] = "info"  # everything a line logs, to look for secrets in it
    with log.open("wb") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "bus.cli", "up", str(config)],
            cwd=ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    processes.children.append(up)
    line = SecureLine(root, config, endpoints, up, log)
    try:
        wait_until(lambda: line.key("operator").exists(), scaled(20), "the operator's key")
        with line.client() as client:

            def all_up() -> bool:
                states = {row["name"]: row["state"] for row in client.services(timeout=1)}
                return states.get("echo") == "up" and states.get("fr1") == "up"

            wait_until(all_up, scaled(30), "echo and fr1 up", ignore=(Exception,))
        yield line
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                up.wait(timeout=scaled(20))
        processes.cleanup()


class TestWithAKey:
    def test_cli_from_the_environment(self, secure_line: SecureLine) -> None:
        """The operator's CLI, keys from LINEBUS_KEY_FILE/LINEBUS_BROKER_KEY_FILE: services,
        a call, a privileged call."""
        services = secure_line.cli("services", "--json")
        assert services.returncode == 0, services.stderr
        rows = {json.loads(line)["name"]: json.loads(line) for line in services.stdout.splitlines()}
        assert rows["echo"]["state"] == rows["fr1"]["state"] == "up"
        echo = secure_line.cli("call", "echo", "echo", "value=41")
        assert (echo.returncode, json.loads(echo.stdout)) == (0, 41)
        ping = secure_line.cli("call", "fr1", "FR_SendCommand", 'command="#55*SPING"')
        assert ping.returncode == 0, ping.stderr

    def test_cli_key_options(self, secure_line: SecureLine) -> None:
        """--key and --broker-key instead of the environment."""
        result = secure_line.cli(
            "call",
            "echo",
            "echo",
            "value=7",
            "--key",
            str(secure_line.key("viewer")),
            "--broker-key",
            str(secure_line.broker_key),
            identity=None,
        )
        assert (result.returncode, result.stdout.strip()) == (0, "7"), result.stderr

    def test_describe_marks_privileged_commands(self, secure_line: SecureLine) -> None:
        result = secure_line.cli("describe", "fr1")
        assert result.returncode == 0, result.stderr
        lines = {line.strip().split("(")[0]: line for line in result.stdout.splitlines()}
        assert "[privileged]" in lines["FR_SendCommand"]
        assert "[privileged]" not in lines["FR_GetDllVersion"]

    def test_facade(self, secure_line: SecureLine, monkeypatch: pytest.MonkeyPatch) -> None:
        """The FlashRunner facade over a keyed Client, and over an endpoint string with the
        keys in the environment."""
        with secure_line.client() as bus, FlashRunner(bus, "fr1") as fr:
            fr.FR_SendCommand("#55*SPING")
            assert fr.FR_GetAnswer(5000)
        for var, value in secure_line.env("operator").items():
            if var.startswith("LINEBUS_"):
                monkeypatch.setenv(var, value)
        with FlashRunner(secure_line.endpoints.command, "fr1") as fr:
            assert isinstance(fr.FR_GetDllVersion(), str)


class TestRefused:
    def test_no_key_is_told_at_once(self, secure_line: SecureLine) -> None:
        """A CLI without a key fails within seconds (not at its deadline) and says what to set."""
        start = time.monotonic()
        result = secure_line.cli("services", identity=None)
        assert time.monotonic() - start < scaled(FAST_S)
        assert result.returncode == 1
        assert "[unauthenticated]" in result.stderr
        assert "this client has no key" in result.stderr and "LINEBUS_KEY_FILE" in result.stderr

    def test_unknown_key_is_told_at_once(self, secure_line: SecureLine, tmp_path: Path) -> None:
        """A key the broker does not know: refused, and the message gives its public key."""
        made = secure_line.cli(
            "keys", "generate", "mallory", "--dir", str(tmp_path), "--json", identity=None
        )
        public = json.loads(made.stdout)["public_key"]
        start = time.monotonic()
        result = secure_line.cli(
            "call",
            "echo",
            "echo",
            "--key",
            str(tmp_path / "mallory.key_secret"),
            "--broker-key",
            str(secure_line.broker_key),
            "--json",
            identity=None,
        )
        assert time.monotonic() - start < scaled(FAST_S)
        assert result.returncode == 1
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "unauthenticated"
        assert error["details"]["key"] == public and public in error["message"]

    def test_privileged_call_of_a_non_operator(self, secure_line: SecureLine) -> None:
        """A known identity that is no operator reads but cannot call a privileged command; the
        audit log has the refusal, and the operator's privileged calls."""
        version = secure_line.cli("call", "fr1", "FR_GetDllVersion", identity="viewer")
        assert version.returncode == 0, version.stderr
        refused = secure_line.cli(
            "call", "fr1", "FR_SendCommand", 'command="#55*SPING"', identity="viewer"
        )
        assert refused.returncode == 1
        assert "[forbidden]" in refused.stderr
        assert "viewer" in refused.stderr and "FR_SendCommand" in refused.stderr
        with secure_line.client("viewer") as bus, pytest.raises(Forbidden) as info:
            bus.call("fr1", "FR_SendCommand", command="#55*SPING")
        assert info.value.details["identity"] == "viewer"
        assert (
            secure_line.cli("call", "fr1", "FR_SendCommand", 'command="#55*SPING"').returncode == 0
        )

        def records() -> list[dict[str, object]]:
            audit = secure_line.cli("audit", "--config", str(secure_line.config), "--json")
            assert audit.returncode == 0, audit.stderr
            return [json.loads(line) for line in audit.stdout.splitlines()]

        def both() -> list[dict[str, object]] | None:
            found = records()
            outcomes = {(r["identity"], r["command"], r["outcome"]) for r in found}
            wanted = {
                ("viewer", "FR_SendCommand", "forbidden"),
                ("operator", "FR_SendCommand", "ok"),
            }
            return found if wanted <= outcomes else None

        found = wait_until(both, scaled(10), "the audit records")
        assert not any(r["command"] == "FR_GetDllVersion" for r in found)  # reads are not audited
        viewer = secure_line.cli(
            "audit", "--config", str(secure_line.config), "--identity", "viewer"
        )
        lines = viewer.stdout.splitlines()
        assert len(lines) >= 2 and all(
            "  viewer  fr1.FR_SendCommand  forbidden" in x for x in lines
        )


class TestSecrets:
    def test_private_files(self, secure_line: SecureLine) -> None:
        """Secret keys and the audit log are 0600."""
        for path in [
            *secure_line.keys_dir.glob("*.key_secret"),
            secure_line.root / "state/audit.jsonl",
        ]:
            assert oct(path.stat().st_mode & 0o777) == "0o600", path

    def test_actor_processes_hold_paths_not_keys(self, secure_line: SecureLine) -> None:
        """Each actor's environment names its own secret key file; no process of the line has a
        secret key in its arguments or its environment, and simulators have no key variable."""
        secrets = secure_line.secrets()
        with secure_line.client() as client:
            pids = {row["name"]: row["pid"] for row in client.services()}
        for name in ("echo", "fr1"):
            environ = dict(
                item.split("=", 1)
                for item in Path(f"/proc/{pids[name]}/environ").read_text().split("\0")
                if "=" in item
            )
            assert environ["LINEBUS_KEY_FILE"] == str(secure_line.key(name))
            assert environ["LINEBUS_BROKER_KEY_FILE"] == str(secure_line.broker_key)
        children = subprocess.run(
            ["pgrep", "-P", str(secure_line.up.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) >= 4  # broker, simulator, two actors
        for pid in children:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            environ = Path(f"/proc/{pid}/environ").read_text()
            for secret in secrets.values():
                assert secret not in cmdline and secret not in environ, cmdline
            if "simulator" in cmdline:
                assert "LINEBUS_KEY" not in environ

    def test_no_secret_in_the_log(self, secure_line: SecureLine) -> None:
        """The whole log of `linebus up` (broker, actors, simulator, at info level) holds no
        secret key."""
        secure_line.cli("call", "echo", "echo", "value=1")
        text = secure_line.log.read_text(errors="replace")
        assert "line_keys_ready" in text and "process_started" in text
        for source, secret in secure_line.secrets().items():
            assert secret not in text, f"the secret key of {source} is in the log"


def test_secured_demo_tour_leaves_no_secret_in_its_output(tmp_path: Path) -> None:
    """`linebus demo configs/demo-secure.toml` (on free ports) runs the whole tour secured, with
    every log line of every process at info level; none of the line's secrets (secret keys,
    device password, FLUX client key, provisioning and registration tokens) appears in its
    output or its audit log, and every secret file it made is 0600."""
    text = (ROOT / "configs" / "demo-secure.toml").read_text()
    ports = {port: str(free_port()) for port in set(re.findall(r"127\.0\.0\.\d+:(\d+)", text))}
    text = re.sub(r"(127\.0\.0\.\d+):(\d+)", lambda m: f"{m.group(1)}:{ports[m.group(2)]}", text)
    text = text.replace('"../var/', f'"{tmp_path}/var/').replace('"var/', f'"{tmp_path}/var/')
    config = tmp_path / "demo-secure.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    env["LINEBUS_LOG_LEVEL"] = "info"
    result = subprocess.run(
        [sys.executable, "-m", "bus.cli", "demo", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(240),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "the line is secured (CURVE); the tour calls as 'operator'" in result.stdout
    assert "the line is shut down" in result.stdout
    state = tmp_path / "var" / "demo-secure"
    secrets = {
        "flux-password": (state / "flux-password").read_text().strip(),
        "provisioning-token": (state / "provisioning-token").read_text().strip(),
        "rerobots-token": (state / "rerobots-token").read_text().strip(),
    }
    import sqlite3

    with sqlite3.connect(state / "ingest.sqlite") as db:
        for (token,) in db.execute("SELECT token FROM devices"):
            secrets["registration token"] = token
    for path in [*state.glob("keys/*.key_secret"), state / "broker.key_secret"]:
        secret = load_keypair(file=path).secret
        assert secret is not None
        secrets[path.name] = secret.decode()
    assert "registration token" in secrets
    # The FLUX client's RSA private key (the printers trust its public half): each full line.
    pem = (state / "flux-client-key.pem").read_text().splitlines()
    for number, body in enumerate(x for x in pem if len(x) >= 16 and not x.startswith("-----")):
        secrets[f"flux-client-key.pem line {number + 1}"] = body
    # The logs: everything the demo's processes printed, and the audit log it wrote.
    output += (state / "audit.jsonl").read_text()
    for name, secret in secrets.items():
        assert len(secret) >= 16 and secret not in output, f"{name} is in the demo's logs"
    private = [
        *state.glob("keys/*.key_secret"),
        state / "broker.key_secret",
        state / "flux-password",
        state / "flux-client-key.pem",
        state / "provisioning-token",
        state / "telemetry.db",
        state / "ingest.sqlite",
        state / "audit.jsonl",
    ]
    for path in private:
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
