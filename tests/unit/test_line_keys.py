"""The client side of a secured line without processes (issue 10): the supervisor's keys
(``bus.supervisor.LineKeys`` and the children's environment), ``linebus keys generate``,
``linebus audit``, and the CLI's ``--key``/``--broker-key``."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from bus import cli
from bus.config import load
from bus.errors import ConfigError
from bus.security.audit import AuditLog, summarize_arguments
from bus.security.keys import generate_keypair, load_keypair, load_public_key
from bus.supervisor import SUPERVISOR_IDENTITY, LineKeys, Supervisor

KEY_VARS = ("LINEBUS_KEY_FILE", "LINEBUS_KEY", "LINEBUS_BROKER_KEY_FILE", "LINEBUS_BROKER_KEY")

LINE = """
[broker]
command = "tcp://127.0.0.1:{port}"

[[simulator]]
name = "sim"
module = "actors.flashrunner.simulator"

[[actor]]
name = "fr1"
kind = "flashrunner"

[[actor]]
name = "echo"
kind = "echo"
class = "bus.testing:EchoActor"
"""

SECURITY = """
[security]
key = "state/broker.key_secret"
keys = "state/keys"
audit_log = "state/audit.jsonl"

[security.acl]
operators = ["operator", "remote"]

[security.known]
remote = "{remote}"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*KEY_VARS, "LINEBUS_ENDPOINT", "LINEBUS_PUBLISH", "LINEBUS_SUBSCRIBE"):
        monkeypatch.delenv(var, raising=False)


def secured_config(tmp_path: Path) -> Path:
    remote = generate_keypair(tmp_path / "elsewhere", "remote").public_key.decode()
    path = tmp_path / "line.toml"
    path.write_text(LINE.format(port=9750) + SECURITY.format(remote=remote))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestLineKeys:
    def test_plaintext_line_has_no_keys(self, tmp_path: Path) -> None:
        path = tmp_path / "line.toml"
        path.write_text(LINE.format(port=9750))
        assert LineKeys.prepare(load(path)) is None

    def test_prepare_generates_what_is_missing_once(self, tmp_path: Path) -> None:
        """The broker's pair, one per actor, the supervisor's and the operators' without a
        known key are generated (secrets 0600); a second run generates nothing and keeps them."""
        config = load(secured_config(tmp_path))
        keys = LineKeys.prepare(config)
        assert keys is not None
        state = tmp_path / "state"
        assert keys.generated == (
            f"broker ({state / 'broker.key_secret'})",
            "fr1",
            "echo",
            SUPERVISOR_IDENTITY,
            "operator",
        )
        assert keys.keys_dir == state / "keys"
        for name in ("fr1", "echo", SUPERVISOR_IDENTITY, "operator"):
            assert mode(state / "keys" / f"{name}.key_secret") == 0o600
        assert not (state / "keys" / "remote.key").exists()  # known inline: not ours to make
        broker = load_keypair(file=state / "broker.key_secret")
        assert keys.broker_public == broker.public
        assert keys.broker_public_file == state / "broker.key"
        before = (state / "keys" / "fr1.key_secret").read_bytes()
        again = LineKeys.prepare(config)
        assert again is not None and again.generated == ()
        assert (state / "keys" / "fr1.key_secret").read_bytes() == before

    def test_environment_of_an_actor_names_paths_only(self, tmp_path: Path) -> None:
        """An actor gets the path of its own secret and the broker's public certificate."""
        keys = LineKeys.prepare(load(secured_config(tmp_path)))
        assert keys is not None
        env = keys.environment("fr1")
        assert env == {
            "LINEBUS_KEY_FILE": str(tmp_path / "state" / "keys" / "fr1.key_secret"),
            "LINEBUS_BROKER_KEY_FILE": str(tmp_path / "state" / "broker.key"),
        }
        client = keys.client_keys("operator")
        assert client.broker == load_public_key(file=tmp_path / "state" / "broker.key")

    def test_broker_key_from_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With key_env there is no broker file: actors get the public key itself."""
        pair = load_keypair(file=generate_keypair(tmp_path / "k", "b").secret_path)
        assert pair.secret is not None
        monkeypatch.setenv("BROKER_SECRET", pair.secret.decode())
        path = tmp_path / "line.toml"
        path.write_text(
            LINE.format(port=9750) + '[security]\nkey_env = "BROKER_SECRET"\nkeys = "keys"\n'
        )
        keys = LineKeys.prepare(load(path))
        assert keys is not None and keys.broker_public_file is None
        assert keys.environment("echo")["LINEBUS_BROKER_KEY"] == pair.public.decode()

    def test_a_secured_line_needs_a_keys_directory(self, tmp_path: Path) -> None:
        path = tmp_path / "line.toml"
        path.write_text(LINE.format(port=9750) + '[security]\nkey = "b.key_secret"\n')
        with pytest.raises(ConfigError) as info:
            LineKeys.prepare(load(path))
        assert "needs `keys`" in str(info.value)

    def test_children_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Actors of a secured line get their own key variables; simulators and the broker get
        none, even when the caller's shell has some; a plaintext line's children get none."""
        monkeypatch.setenv("LINEBUS_KEY", "from-the-shell")
        monkeypatch.setenv("LINEBUS_BROKER_KEY_FILE", "/from/the/shell")
        supervisor = Supervisor(load(secured_config(tmp_path)))
        supervisor.keys = LineKeys.prepare(supervisor.config)
        envs = {m.name: supervisor.environment(m) for m in supervisor.processes}
        assert envs["fr1"]["LINEBUS_KEY_FILE"].endswith("/fr1.key_secret")
        assert envs["echo"]["LINEBUS_KEY_FILE"].endswith("/echo.key_secret")
        assert "LINEBUS_KEY" not in envs["fr1"]
        for name in ("broker", "sim"):
            assert not set(KEY_VARS) & set(envs[name])
        plain = tmp_path / "plain.toml"
        plain.write_text(LINE.format(port=9750))
        supervisor = Supervisor(load(plain))
        for managed in supervisor.processes:
            assert not set(KEY_VARS) & set(supervisor.environment(managed))
        for managed in supervisor.processes:  # nor in the arguments, ever
            assert not any("key" in arg for arg in managed.argv)

    def test_a_broker_serving_metrics_gets_the_supervisors_key(self, tmp_path: Path) -> None:
        """With [broker] metrics on a secured line, the broker's scrapes ask actors as the
        supervisor: its key variables are the supervisor's, the actors' stay their own."""
        path = secured_config(tmp_path)
        path.write_text(
            path.read_text().replace("[broker]\n", '[broker]\nmetrics = "127.0.0.1:0"\n', 1)
        )
        supervisor = Supervisor(load(path))
        supervisor.keys = LineKeys.prepare(supervisor.config)
        envs = {m.name: supervisor.environment(m) for m in supervisor.processes}
        assert envs["broker"]["LINEBUS_KEY_FILE"].endswith(f"/{SUPERVISOR_IDENTITY}.key_secret")
        assert envs["broker"]["LINEBUS_BROKER_KEY_FILE"].endswith("/broker.key")
        assert envs["echo"]["LINEBUS_KEY_FILE"].endswith("/echo.key_secret")


class TestKeysGenerate:
    def test_writes_a_pair(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`linebus keys generate NAME --dir D`: NAME.key (0644) and NAME.key_secret (0600)."""
        assert cli.main(["keys", "generate", "alice", "--dir", str(tmp_path / "keys")]) == 0
        out = capsys.readouterr().out
        public = load_public_key(file=tmp_path / "keys" / "alice.key")
        assert public.decode() in out and "0600" in out
        assert mode(tmp_path / "keys" / "alice.key_secret") == 0o600
        assert mode(tmp_path / "keys" / "alice.key") == 0o644
        secret = load_keypair(file=tmp_path / "keys" / "alice.key_secret").secret
        assert secret is not None and secret.decode() not in out

    def test_refuses_to_replace_unless_forced(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        folder = str(tmp_path / "keys")
        assert cli.main(["keys", "generate", "alice", "--dir", folder, "--json"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert cli.main(["keys", "generate", "alice", "--dir", folder]) == cli.EXIT_USAGE
        assert "already exists" in capsys.readouterr().err
        assert cli.main(["keys", "generate", "alice", "--dir", folder, "--force", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["public_key"] != first["public_key"]

    def test_refuses_a_bad_name(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli.main(["keys", "generate", "../x", "--dir", str(tmp_path)]) == cli.EXIT_USAGE
        assert "not a valid key name" in capsys.readouterr().err


class TestAudit:
    @pytest.fixture
    def audit_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "audit.jsonl"
        now = time.time()
        with AuditLog(path, fsync="never") as log:
            for age, identity, service, command, outcome in (
                (7200, "alice", "fr1", "FR_SendFile", "ok"),
                (600, "bench", "fr1", "FR_RunProject", "forbidden"),
                (60, "alice", "p1", "upload_file", "ok"),
            ):
                log.record(
                    identity=identity,
                    service=service,
                    command=command,
                    args=summarize_arguments({"password": "hunter2", "path": "/SD/a.fc"}),
                    outcome=outcome,
                    at=now - age,
                )
        return path

    def test_filters(self, audit_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--identity, --service, --since and --last select records; secrets stay redacted."""
        assert cli.main(["audit", "--file", str(audit_file), "--identity", "alice"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [("FR_SendFile" in lines[0]), ("upload_file" in lines[1])] == [True, True]
        assert len(lines) == 2 and "hunter2" not in "".join(lines)
        assert cli.main(["audit", "--file", str(audit_file), "--since", "1h", "--json"]) == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["command"] for r in records] == ["FR_RunProject", "upload_file"]
        assert records[0]["outcome"] == "forbidden"
        assert (
            cli.main(["audit", "--file", str(audit_file), "--service", "fr1", "--last", "1"]) == 0
        )
        assert "FR_RunProject" in capsys.readouterr().out

    def test_from_the_config(
        self, tmp_path: Path, audit_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--config reads the audit_log of the line's [security] (relative to the config)."""
        config = secured_config(tmp_path)
        (tmp_path / "state").mkdir(exist_ok=True)
        os.replace(audit_file, tmp_path / "state" / "audit.jsonl")
        assert cli.main(["audit", "--config", str(config), "--json"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 3

    def test_usage_errors(
        self, tmp_path: Path, audit_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad time, or a config without an audit log, is a usage error (exit 2)."""
        bad = ["audit", "--file", str(audit_file), "--since", "yesterday"]
        assert cli.main(bad) == cli.EXIT_USAGE
        assert "not a time" in capsys.readouterr().err
        plain = tmp_path / "plain.toml"
        plain.write_text(LINE.format(port=9750))
        assert cli.main(["audit", "--config", str(plain)]) == cli.EXIT_USAGE
        assert "no audit_log" in capsys.readouterr().err


class TestClientKeysOptions:
    def test_unusable_key_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--key naming a missing file stops before any connection, exit 2, naming the file."""
        generate_keypair(tmp_path, "broker")
        argv = [
            "services",
            "--endpoint",
            "tcp://127.0.0.1:9",
            "--key",
            str(tmp_path / "nobody.key_secret"),
            "--broker-key",
            str(tmp_path / "broker.key"),
        ]
        assert cli.main(argv) == cli.EXIT_USAGE
        assert "nobody.key_secret: key file not found" in capsys.readouterr().err

    def test_half_a_pair_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        generate_keypair(tmp_path, "alice")
        argv = ["services", "--key", str(tmp_path / "alice.key_secret")]
        assert cli.main(argv) == cli.EXIT_USAGE
        assert "broker's public key" in capsys.readouterr().err
