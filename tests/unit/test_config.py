"""Line configs (bus.config): what a valid TOML file gives, and the mistakes that are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq
import zmq.utils.z85

from bus.config import BrokerConfig, SecurityConfig, SupervisorConfig, load, parse
from bus.errors import ConfigError
from bus.security.errors import KeyFileError
from bus.security.keys import generate_keypair

VALID = """
[broker]
command = "tcp://127.0.0.1:8750"
publish = "tcp://127.0.0.1:8751"
subscribe = "tcp://127.0.0.1:8752"
heartbeat_s = 1
heartbeat_timeout_s = 3.5
max_message_bytes = 1048576

[supervisor]
backoff_initial_s = 0.25
flap_max_restarts = 2

[[simulator]]
name = "fr-sim"
module = "actors.flashrunner.simulator"
args = ["--port", 21234]

[[actor]]
name = "fr1"
kind = "flashrunner"
[actor.options]
address = "127.0.0.1:21234"
channels = [1, 2]

[[actor]]
name = "echo"
kind = "echo"
class = "bus.testing:EchoActor"
"""


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's LINEBUS_* variables must not leak into these tests."""
    for name in ("LINEBUS_ENDPOINT", "LINEBUS_PUBLISH", "LINEBUS_SUBSCRIBE"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "line.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> ConfigError:
    """The ConfigError loading ``text`` raises."""
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    return info.value


class TestValid:
    def test_every_section(self, tmp_path: Path) -> None:
        """A full config gives the broker, supervisor, simulators and actors it describes."""
        path = write(tmp_path, VALID)
        line = load(path)
        assert line.path == str(path)
        assert line.broker == BrokerConfig(
            command="tcp://127.0.0.1:8750",
            publish="tcp://127.0.0.1:8751",
            subscribe="tcp://127.0.0.1:8752",
            heartbeat_s=1.0,
            heartbeat_timeout_s=3.5,
            max_message_bytes=1048576,
        )
        assert (
            type(line.broker.heartbeat_s) is float
        )  # an integer is accepted where seconds are float
        assert line.supervisor == SupervisorConfig(backoff_initial_s=0.25, flap_max_restarts=2)
        (sim,) = line.simulators
        assert (sim.name, sim.module, sim.args, sim.wait_ready) == (
            "fr-sim",
            "actors.flashrunner.simulator",
            ("--port", "21234"),
            True,
        )
        fr1, echo = line.actors
        assert (fr1.name, fr1.kind, fr1.class_path, fr1.options) == (
            "fr1",
            "flashrunner",
            "actors.flashrunner.actor:ACTOR",
            {"address": "127.0.0.1:21234", "channels": [1, 2]},
        )
        assert (echo.class_path, echo.options) == ("bus.testing:EchoActor", {})
        assert line.actor("echo") is echo

    def test_empty_file_is_the_defaults(self, tmp_path: Path) -> None:
        """An empty config is a broker with the documented defaults and no actors."""
        line = load(write(tmp_path, ""))
        assert (line.broker, line.supervisor, line.simulators, line.actors) == (
            BrokerConfig(),
            SupervisorConfig(),
            (),
            (),
        )
        assert line.broker.command == "tcp://127.0.0.1:7750"

    def test_unknown_actor_name_lists_the_names(self) -> None:
        """Asking for an actor the config does not have names the ones it has."""
        line = parse({"actor": [{"name": "echo", "kind": "echo"}]})
        with pytest.raises(ConfigError, match=r"'fr9'.*echo"):
            line.actor("fr9")


class TestRefused:
    @pytest.mark.parametrize(
        "text, words",
        [
            ("[brokr]\n", "brokr"),
            ("[broker]\nheartbeat = 1.0\n", "heartbeat"),
            ("[supervisor]\nretries = 3\n", "retries"),
            ('[[actor]]\nname = "a"\nkind = "echo"\nport = 1\n', "port"),
            ('[[simulator]]\nname = "s"\nmodule = "m"\nready = true\n', "ready"),
        ],
        ids=["section", "broker key", "supervisor key", "actor key", "simulator key"],
    )
    def test_unknown_key(self, tmp_path: Path, text: str, words: str) -> None:
        """A key or section the config does not know is an error naming it, not ignored."""
        assert words in refused(tmp_path, text).message

    @pytest.mark.parametrize(
        "text",
        [
            '[broker]\nheartbeat_s = "fast"\n',
            "[broker]\nmax_message_bytes = 1.5\n",
            "[broker]\nmax_message_bytes = true\n",
            "[broker]\ncommand = 7750\n",
            '[supervisor]\nflap_max_restarts = "3"\n',
            '[[simulator]]\nname = "s"\nmodule = "m"\nwait_ready = "yes"\n',
            '[[actor]]\nname = "a"\nkind = "echo"\noptions = 3\n',
        ],
        ids=[
            "float as str",
            "int as float",
            "int as bool",
            "str as int",
            "supervisor int as str",
            "bool as str",
            "options not a table",
        ],
    )
    def test_wrong_type(self, tmp_path: Path, text: str) -> None:
        """A value of the wrong type is refused."""
        refused(tmp_path, text)

    @pytest.mark.parametrize(
        "text",
        [
            "[broker]\nheartbeat_s = 0\n",
            "[broker]\ndefault_timeout_s = -1\n",
            "[supervisor]\nstop_timeout_s = 0.0\n",
        ],
        ids=["zero heartbeat", "negative timeout", "zero stop timeout"],
    )
    def test_durations_must_be_positive(self, tmp_path: Path, text: str) -> None:
        """A duration (*_s) of zero or less is refused."""
        assert "positive" in refused(tmp_path, text).message

    def test_heartbeat_timeout_must_exceed_heartbeat(self, tmp_path: Path) -> None:
        """heartbeat_timeout_s not above heartbeat_s is refused."""
        refused(tmp_path, "[broker]\nheartbeat_s = 2.0\nheartbeat_timeout_s = 2.0\n")

    def test_required_field_of_wrong_type(self, tmp_path: Path) -> None:
        """A required field of the wrong type (an actor's kind = 5) is refused."""
        refused(tmp_path, '[[actor]]\nname = "a"\nkind = 5\n')

    @pytest.mark.parametrize(
        "text",
        ["broker = 5\n", "actor = 5\n", "actor = [5]\n"],
        ids=["broker", "actor", "actor item"],
    )
    def test_section_of_wrong_type(self, tmp_path: Path, text: str) -> None:
        """A section that is not a table (or array of tables) is a ConfigError."""
        refused(tmp_path, text)

    def test_supervisor_section_of_wrong_type(self, tmp_path: Path) -> None:
        """[supervisor] that is not a table is a ConfigError."""
        assert "table" in refused(tmp_path, "supervisor = 5\n").message

    def test_duplicate_actor_names(self, tmp_path: Path) -> None:
        """Two actors with one name are refused, naming it."""
        text = '[[actor]]\nname = "fr1"\nkind = "echo"\n\n[[actor]]\nname = "fr1"\nkind = "flux"\n'
        assert "'fr1'" in refused(tmp_path, text).message

    @pytest.mark.parametrize(
        "name", ["", "has space", "-dash-first", ".dot-first", "a/b", "x" * 129, "é"]
    )
    def test_invalid_service_name(self, tmp_path: Path, name: str) -> None:
        """An actor name that is not a valid service name is refused."""
        refused(tmp_path, f'[[actor]]\nname = "{name}"\nkind = "echo"\n')

    def test_reserved_service_name(self, tmp_path: Path) -> None:
        """An actor named `broker` (reserved for the broker itself) is refused."""
        refused(tmp_path, '[[actor]]\nname = "broker"\nkind = "echo"\n')

    @pytest.mark.parametrize("missing", ["name", "kind"])
    def test_actor_without_name_or_kind(self, tmp_path: Path, missing: str) -> None:
        """An actor needs a name and a kind."""
        table = {"name": '"a"', "kind": '"echo"'}
        del table[missing]
        text = "[[actor]]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
        assert missing in refused(tmp_path, text).message

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config path that does not exist is a ConfigError saying so."""
        with pytest.raises(ConfigError, match="not found"):
            load(tmp_path / "nowhere.toml")

    def test_not_toml(self, tmp_path: Path) -> None:
        """A file that is not TOML is a ConfigError naming the file."""
        error = refused(tmp_path, "[broker\ncommand = \n")
        assert "line.toml" in error.message and "TOML" in error.message


class TestEnvironment:
    def test_endpoint_override(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """LINEBUS_ENDPOINT, LINEBUS_PUBLISH and LINEBUS_SUBSCRIBE replace the file's endpoints."""
        monkeypatch.setenv("LINEBUS_ENDPOINT", "tcp://10.0.0.5:9750")
        monkeypatch.setenv("LINEBUS_PUBLISH", "tcp://10.0.0.5:9751")
        monkeypatch.setenv("LINEBUS_SUBSCRIBE", "tcp://10.0.0.5:9752")
        broker = load(write(tmp_path, VALID)).broker
        assert (broker.command, broker.publish, broker.subscribe) == (
            "tcp://10.0.0.5:9750",
            "tcp://10.0.0.5:9751",
            "tcp://10.0.0.5:9752",
        )
        assert broker.heartbeat_timeout_s == 3.5  # the rest of [broker] still comes from the file

    def test_override_without_broker_section(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The override applies even when the file has no [broker] table."""
        monkeypatch.setenv("LINEBUS_ENDPOINT", "ipc:///tmp/linebus-cmd")
        assert load(write(tmp_path, "")).broker.command == "ipc:///tmp/linebus-cmd"

    def test_empty_variable_is_no_override(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An empty LINEBUS_ENDPOINT leaves the file's endpoint."""
        monkeypatch.setenv("LINEBUS_ENDPOINT", "")
        assert load(write(tmp_path, VALID)).broker.command == "tcp://127.0.0.1:8750"


SECURE = """
[security]
key = "keys/broker.key_secret"
keys = "keys"
audit_log = "/var/log/linebus/audit.jsonl"
audit_fsync = "always"
reject_log_limit = 3

[security.known]
mes = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"

[security.acl]
operators = ["alice"]

[security.acl.identity.bench]
call = ["*.*", "!flux*.*"]
"""


class TestSecurity:
    def test_absent_table_is_off(self, tmp_path: Path) -> None:
        """A line without [security] has the default, CURVE-off SecurityConfig."""
        security = load(write(tmp_path, VALID)).security
        assert security == SecurityConfig()
        assert not security.curve and not security.insecure and security.broker_public_file is None

    def test_values_and_paths_relative_to_the_file(self, tmp_path: Path) -> None:
        """Relative paths are taken from the config file's directory; absolute ones are kept."""
        (tmp_path / "conf").mkdir()
        security = load(write(tmp_path / "conf", SECURE)).security
        assert security.curve
        assert security.key == tmp_path / "conf" / "keys" / "broker.key_secret"
        assert security.keys == tmp_path / "conf" / "keys"
        assert security.broker_public_file == tmp_path / "conf" / "keys" / "broker.key"
        assert security.audit_log == Path("/var/log/linebus/audit.jsonl")
        assert (security.audit_fsync, security.reject_log_limit) == ("always", 3)
        assert security.reject_log_window_s == 10.0 and security.audit_fsync_interval_s == 1.0
        assert set(security.known) == {"mes"}
        acl = security.access_list(frozenset({"alice", "bench"}))
        assert acl.operators == {"alice"}
        assert not acl.may_call("bench", "flux1", "info", privileged=False)

    def test_key_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """key_env names a variable holding the broker's Z85 secret."""
        public, secret = zmq.curve_keypair()
        monkeypatch.setenv("TEST_BROKER_SECRET", secret.decode())
        security = load(write(tmp_path, '[security]\nkey_env = "TEST_BROKER_SECRET"\n')).security
        assert security.curve and security.broker_public_file is None
        assert security.load_broker_keys().public == public

    def test_keys_load_from_files(self, tmp_path: Path) -> None:
        """load_broker_keys and load_keyring read what `linebus keys generate` writes."""
        broker = generate_keypair(tmp_path / "keys", "broker")
        alice = generate_keypair(tmp_path / "keys", "alice")
        security = load(write(tmp_path, SECURE)).security
        assert security.load_broker_keys().public == broker.public_key
        ring = security.load_keyring()
        assert ring.names == {"broker", "alice", "mes"}
        assert ring.identity_of(zmq.utils.z85.decode(alice.public_key)) == "alice"

    def test_missing_key_file_is_an_error_not_plaintext(self, tmp_path: Path) -> None:
        """A configured key that is missing fails loudly (KeyFileError naming the file)."""
        security = load(write(tmp_path, SECURE)).security
        with pytest.raises(KeyFileError, match=r"broker\.key_secret") as caught:
            security.load_broker_keys()
        assert caught.value.problem == "missing"
        with pytest.raises(ConfigError, match="no broker key"):
            SecurityConfig().load_broker_keys()

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ('key = "a.key_secret"\nkey_env = "X"', "key or key_env, not both"),
            ("insecure = 1", "insecure must be true or false"),
            ('audit_fsync = "sometimes"', "audit_fsync must be one of"),
            ("reject_log_limit = 0", "reject_log_limit must be positive"),
            ("nonsense = 1", "unknown key(s) ['nonsense']"),
            ('[security.known]\nmes = "short"', "[security.known]"),
            ("[security.acl]\noperators = 1", "[security.acl].operators"),
            ('[security.acl.default]\npublish = ["presence."]', "presence."),
        ],
    )
    def test_mistakes_are_refused(self, tmp_path: Path, text: str, message: str) -> None:
        """Bad [security] values fail at load with the file and the key named."""
        error = refused(tmp_path, "[security]\n" + text + "\n")
        assert message in error.message and "line.toml" in error.message
