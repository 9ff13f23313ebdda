"""bus.options: typed, frozen dataclasses from config tables, and every actor's options through it."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest

from bus.errors import ConfigError
from bus.options import (
    FLATTEN,
    NON_BLANK,
    REDACTED,
    Check,
    Example,
    NonNegativeSeconds,
    Port,
    PositiveInt,
    Range,
    Seconds,
    Secret,
    from_table,
    known_keys,
    options,
    redacted,
)


class Mode(enum.Enum):
    FAST = "fast"
    PRECISE = "precise"


@options
class Link:
    timeout_s: Seconds = 1.0
    retries: PositiveInt = 3


@options
class Sample:
    address: Annotated[str, NON_BLANK, Example('address = "10.0.0.5:502"')]
    token: Secret | None = None
    pin: Secret = "0000"
    port: Port = 502
    poll_s: Seconds = 1.0
    linger_s: NonNegativeSeconds = 0.0
    enabled: bool = True
    channels: tuple[int, ...] = (1,)
    names: str | tuple[str, ...] = ()
    mode: Mode = Mode.PRECISE
    level: Literal["low", "high"] = "low"
    path: Path = Path("var/x.db")
    ratio: Annotated[float, Range(ge=0, le=1)] = 0.5
    even: Annotated[int, Check(lambda n: n % 2 == 0, "be even")] = 2
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    link: Annotated[Link, FLATTEN] = dataclasses.field(default_factory=Link)


def build(**table: Any) -> Sample:
    return from_table(Sample, {"address": "10.0.0.5:502", **table}, "thing t1", noun="option")


def refused(**table: Any) -> str:
    with pytest.raises(ConfigError) as info:
        build(**table)
    return info.value.message


class TestBuilt:
    def test_defaults(self) -> None:
        """Only the required key given: every other field has its default."""
        sample = build()
        assert sample == Sample(address="10.0.0.5:502")
        assert sample.link == Link()

    def test_every_type(self) -> None:
        """Each annotation turns its TOML value into the field's type."""
        sample = build(
            token="s3cret",
            port=1502,
            poll_s=2,
            linger_s=0,
            enabled=False,
            channels=[1, 2],
            names="one",
            mode="fast",
            level="high",
            path="/tmp/y.db",
            ratio=1,
            even=4,
            extra={"a": 1},
            timeout_s=3,
            retries=5,
        )
        assert sample.token == "s3cret"
        assert (sample.port, sample.poll_s, sample.linger_s) == (1502, 2.0, 0.0)
        assert type(sample.poll_s) is float  # an integer is accepted where seconds are float
        assert (sample.enabled, sample.channels, sample.names) == (False, (1, 2), "one")
        assert (sample.mode, sample.level, sample.path) == (Mode.FAST, "high", Path("/tmp/y.db"))
        assert (sample.ratio, sample.even, sample.extra) == (1.0, 4, {"a": 1})
        assert sample.link == Link(timeout_s=3.0, retries=5)
        assert build(names=["a", "b"]).names == ("a", "b")

    def test_frozen(self) -> None:
        """The result cannot be changed by accident."""
        with pytest.raises(dataclasses.FrozenInstanceError):
            build().__setattr__("port", 1)

    def test_known_keys_include_flattened_ones(self) -> None:
        """A flattened dataclass's keys are keys of the table; the field holding it is not."""
        keys = known_keys(Sample)
        assert {"timeout_s", "retries", "address"} <= set(keys)
        assert "link" not in keys
        assert keys == sorted(keys)

    def test_none_for_optional_fields(self) -> None:
        """Python callers may pass None where the type allows it (TOML has no null)."""
        assert build(token=None).token is None


class TestRefused:
    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"port": "502"}, "port must be an integer, got '502'"),
            ({"port": 1.5}, "port must be an integer, got 1.5"),
            ({"port": True}, "port must be an integer, got true"),
            ({"poll_s": "fast"}, "poll_s must be a number, got 'fast'"),
            ({"poll_s": False}, "poll_s must be a number, got false"),
            ({"enabled": "yes"}, "enabled must be true or false, got 'yes'"),
            ({"enabled": 1}, "enabled must be true or false, got 1"),
            ({"address": 5}, "address must be a string, got 5"),
            ({"channels": [1, "2"]}, "channels must be a list of integers, got [1, '2']"),
            ({"channels": 1}, "channels must be a list of integers, got 1"),
            ({"names": 3}, "names must be a string or a list of strings, got 3"),
            ({"mode": "slow"}, "mode must be one of ['fast', 'precise'], got 'slow'"),
            ({"level": "mid"}, "level must be one of ['low', 'high'], got 'mid'"),
            ({"path": 3}, "path must be a path (a string), got 3"),
            ({"extra": [1]}, "extra must be a table, got [1]"),
            ({"retries": 2.0}, "retries must be an integer, got 2.0"),
        ],
    )
    def test_wrong_type(self, table: dict[str, Any], message: str) -> None:
        """A value of another type is refused with the key, the type wanted and the value."""
        assert refused(**table) == f"thing t1: {message}"

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"poll_s": 0}, "poll_s must be positive, got 0"),
            ({"poll_s": -1.5}, "poll_s must be positive, got -1.5"),
            ({"linger_s": -0.1}, "linger_s must be zero or more, got -0.1"),
            ({"port": 0}, "port must be between 1 and 65535, got 0"),
            ({"port": 70000}, "port must be between 1 and 65535, got 70000"),
            ({"ratio": 1.5}, "ratio must be between 0 and 1, got 1.5"),
            ({"retries": 0}, "retries must be positive, got 0"),
            ({"timeout_s": 0}, "timeout_s must be positive, got 0"),
            ({"address": "  "}, "address must not be empty, got '  '"),
            ({"even": 3}, "even must be even, got 3"),
        ],
    )
    def test_out_of_range(self, table: dict[str, Any], message: str) -> None:
        """Ranges and checks name the rule that was broken."""
        assert refused(**table) == f"thing t1: {message}"

    def test_unknown_keys_are_named_with_the_known_ones(self) -> None:
        """A typo is an error listing what the table may have, flattened keys included."""
        message = refused(adress="x", colour="blue")
        assert message.startswith("thing t1: unknown option(s) ['adress', 'colour']; known: [")
        assert "'address'" in message and "'timeout_s'" in message

    def test_missing_required_key_shows_an_example(self) -> None:
        """A required key that is missing is named, with how it is written."""
        with pytest.raises(ConfigError) as info:
            from_table(Sample, {}, "thing t1", noun="option")
        assert info.value.message == (
            "thing t1: missing required option 'address' (e.g. address = \"10.0.0.5:502\")"
        )

    def test_not_a_table(self) -> None:
        """Options that are not a table are refused."""
        with pytest.raises(ConfigError, match="thing t1 must be a table"):
            from_table(Sample, ["address"], "thing t1")

    def test_nested_table(self) -> None:
        """A dataclass field that is not flattened is a sub-table, checked the same way."""

        @options
        class Outer:
            link: Link = dataclasses.field(default_factory=Link)

        assert from_table(Outer, {"link": {"retries": 2}}, "o").link.retries == 2
        with pytest.raises(ConfigError) as info:
            from_table(Outer, {"link": {"retries": 0}}, "o")
        assert "link must be a valid table" in info.value.message
        assert "retries must be positive" in info.value.message

    def test_unsupported_annotation_is_a_bug_not_a_config_error(self) -> None:
        """A field type the mechanism cannot read fails loudly for the developer."""

        @options
        class Odd:
            when: complex = 0j

        with pytest.raises(TypeError, match="cannot be of type"):
            from_table(Odd, {"when": 1}, "odd")


class TestSecrets:
    def test_repr_hides_secrets(self) -> None:
        """Secrets are *** in the repr (so in logs and tracebacks); None stays None."""
        text = repr(build(token="s3cret", pin="4321"))
        assert "s3cret" not in text and "4321" not in text
        assert f"token={REDACTED!r}" in text
        assert "address='10.0.0.5:502'" in text
        assert "token=None" in repr(build())

    def test_error_hides_the_value(self) -> None:
        """A secret of the wrong type is refused without echoing it."""
        assert refused(pin=1234) == "thing t1: pin must be a string, got ***"

    def test_redacted_dict(self) -> None:
        """``redacted`` gives the whole configuration, nested parts too, without secrets."""
        shown = redacted(build(token="s3cret"))
        assert shown["token"] == REDACTED and shown["pin"] == REDACTED
        assert shown["link"] == {"timeout_s": 1.0, "retries": 3}
        assert shown["address"] == "10.0.0.5:502"


class TestSecretSources:
    """A secret may come from a file (``KEY_file``) or the environment (``KEY_env``) instead of
    the config itself, so that passwords and tokens need not sit in the config file."""

    def secret_file(self, tmp_path: Path, text: str = "s3cret\n", mode: int = 0o600) -> Path:
        path = tmp_path / "token"
        path.write_text(text)
        path.chmod(mode)
        return path

    def test_from_a_file(self, tmp_path: Path) -> None:
        """The file's text is the secret (a trailing newline dropped); the repr hides it."""
        sample = build(token_file=str(self.secret_file(tmp_path)))
        assert sample.token == "s3cret"
        assert "s3cret" not in repr(sample)

    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SAMPLE_PIN", "4321")
        assert build(pin_env="SAMPLE_PIN").pin == "4321"

    def test_required_secret_by_any_source(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A required secret is satisfied by any of the three; the error names all three."""

        @options
        class Needs:
            token: Secret

        monkeypatch.setenv("NEEDS_TOKEN", "t")
        assert from_table(Needs, {"token_env": "NEEDS_TOKEN"}, "n").token == "t"
        with pytest.raises(ConfigError) as info:
            from_table(Needs, {}, "n")
        assert (
            info.value.message == "n: missing required key 'token' (or 'token_file', 'token_env')"
        )

    def test_the_forms_are_known_keys(self) -> None:
        assert {"token", "token_file", "token_env", "pin_file"} <= set(known_keys(Sample))

    def test_refusals(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Two sources, a missing or empty file, a file others can read, an unset variable:
        each refused with the file or variable named, never the secret."""
        monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
        good = str(self.secret_file(tmp_path))
        assert refused(token="x", token_file=good) == (
            "thing t1: give one of ['token', 'token_file'], not several"
        )
        missing = tmp_path / "nope"
        assert refused(token_file=str(missing)) == f"thing t1: token_file: {missing} not found"
        open_file = tmp_path / "open"
        open_file.write_text("s3cret")
        open_file.chmod(0o644)
        message = refused(token_file=str(open_file))
        assert "chmod 600" in message and "s3cret" not in message
        empty = tmp_path / "empty"
        empty.write_text("\n")
        empty.chmod(0o600)
        assert refused(token_file=str(empty)) == f"thing t1: token_file: {empty} is empty"
        assert refused(token_env="NOT_SET_ANYWHERE") == (
            "thing t1: token_env names $NOT_SET_ANYWHERE, which is not set or empty"
        )
        assert refused(token_env=3) == (
            "thing t1: token_env must be the name of an environment variable"
        )


# --- every actor reads its options through from_table ------------------------------------


def _flashrunner(options: dict[str, Any]) -> Any:
    from actors.flashrunner.actor import FlashRunnerActor

    return FlashRunnerActor("fr1", options)


def _flux(options: dict[str, Any]) -> Any:
    from actors.flux.actor import FluxActor

    return FluxActor("p1", options)


def _discovery(options: dict[str, Any]) -> Any:
    from actors.discovery.actor import DiscoveryActor

    return DiscoveryActor("disc", options)


def _telemetry(options: dict[str, Any]) -> Any:
    from actors.telemetry.actor import TelemetryActor

    # The store's writer thread starts with the actor (on_start), not in the constructor.
    return TelemetryActor("tel", options)


FR = {"port": "LAN", "settings": "127.0.0.1:1234"}
FLUX = {"host": "127.0.0.1"}
TEL = {"db": "t.db", "instance_url": "http://127.0.0.1:1", "provisioning_token": "tok"}


@pytest.mark.parametrize(
    ("make", "table", "message"),
    [
        (_flashrunner, {"settings": "h:1"}, "flashrunner fr1: missing required option 'port'"),
        (_flashrunner, {**FR, "port": " "}, "flashrunner fr1: port must not be empty"),
        (_flashrunner, {**FR, "colour": 1}, "flashrunner fr1: unknown option(s) ['colour']"),
        (_flashrunner, {**FR, "chunk_bytes": 0}, "flashrunner fr1: chunk_bytes must be positive"),
        (_flashrunner, {**FR, "poll_interval_s": "1"}, "poll_interval_s must be a number"),
        (_flashrunner, {**FR, "multi_channel": "all"}, "must be one of ['mask', 'each']"),
        (_flashrunner, {**FR, "high_baudrate": 1}, "high_baudrate must be true or false"),
        (_flashrunner, {**FR, "logger": "no"}, "flashrunner fr1: logger must be true or false"),
        (_flashrunner, {**FR, "logger_address": "h:x"}, "flashrunner fr1: logger_address: bad"),
        (_flux, {}, "flux p1: missing required option 'host' (e.g. host = \"192.168.1.30\")"),
        (_flux, {**FLUX, "port": 1.5}, "flux p1: port must be an integer, got 1.5"),
        (_flux, {**FLUX, "reply_timeout_s": 0}, "flux p1: reply_timeout_s must be positive"),
        (_flux, {**FLUX, "password": 1234}, "flux p1: password must be a string, got ***"),
        (_flux, {**FLUX, "manage": "h:x"}, "flux p1: manage must be host:port with a port"),
        (_flux, {"host": "h:port"}, "flux p1: host must be host:port with a port number"),
        (_flux, {**FLUX, "pasword": "x"}, "flux p1: unknown option(s) ['pasword']"),
        (_discovery, {"colour": 1}, "discovery disc: unknown option(s) ['colour']"),
        (_discovery, {"port": "1901"}, "discovery disc: port must be an integer"),
        (_discovery, {"poke": 5}, "poke must be a string or a list of strings"),
        (_discovery, {"presence": "no"}, "discovery disc: presence must be true or false"),
        (_discovery, {"listen": "h:x"}, "discovery disc: listen must be host or host:port"),
        (_telemetry, {}, "telemetry tel: missing required option 'db'"),
        (_telemetry, {**TEL, "overflow": "x"}, "telemetry tel: overflow must be one of"),
    ],
)
def test_actor_options_are_checked(
    make: Callable[[dict[str, Any]], Any], table: dict[str, Any], message: str
) -> None:
    """Each actor kind refuses bad options with a ConfigError naming the actor and the key."""
    with pytest.raises(ConfigError) as info:
        make(table)
    assert message in info.value.message


def test_actor_options_are_typed() -> None:
    """Good options come out typed, with the driver settings split off where there are some."""
    fr = _flashrunner({**FR, "backoff_max_s": 1, "multi_channel": "each", "logger": False})
    assert (fr.config.port, fr.config.driver.backoff_max_s) == ("LAN", 1.0)
    assert fr.config.driver.multi_channel.value == "each"
    flux = _flux({"host": "10.1.2.3:2000", "manage": "10.1.2.3:1902", "chunk_bytes": 1024})
    assert (flux.host, flux.config.port, flux.manage_port) == ("10.1.2.3", 2000, 1902)
    assert flux.config.chunk_bytes == 1024
    disc = _discovery({"listen": "127.0.0.1:3901", "poke": "10.0.0.7", "group": ""})
    assert (disc.driver.port, disc.driver.listen, disc.driver.group) == (3901, "127.0.0.1", None)
    tel = _telemetry({**TEL, "linger_s": 0, "quota_bytes": 4096})
    assert (tel.config.forwarder.linger_s, tel.config.quota_bytes) == (0.0, 4096)
