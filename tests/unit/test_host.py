"""Running one configured actor: finding its class and the settings that match the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bus.actor import Actor, ActorSettings
from bus.config import ActorSpec, BrokerConfig, LineConfig
from bus.errors import ConfigError
from bus.host import load_actor_class, run_actor, settings_for
from bus.testing import EchoActor


class TestLoadActorClass:
    def test_class_path(self) -> None:
        """``module:Class`` names the actor class."""
        assert load_actor_class(ActorSpec("e1", "echo", "bus.testing:EchoActor")) is EchoActor

    def test_unknown_kind(self) -> None:
        """A kind with no module says so."""
        with pytest.raises(ConfigError, match="no actor kind 'nosuch'"):
            load_actor_class(ActorSpec("x1", "nosuch"))

    def test_missing_dependency_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A module that needs an uninstalled package points at the kind's pip extra."""
        (tmp_path / "linebus_needs_dep.py").write_text("import linebus_absent_dependency\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        spec = ActorSpec("p1", "flux", "linebus_needs_dep:Actor")
        with pytest.raises(ConfigError, match=r"pip install 'linebus\[flux\]'"):
            load_actor_class(spec)

    def test_not_an_actor(self) -> None:
        """Something that is not an Actor subclass is refused."""
        with pytest.raises(ConfigError, match="is not an Actor subclass"):
            load_actor_class(ActorSpec("x1", "echo", "bus.testing:free_port"))


def test_settings_follow_the_broker() -> None:
    """Actors connect to the line's broker endpoints and use its heartbeat timing."""
    broker = BrokerConfig(
        command="tcp://h:1", publish="tcp://h:2", subscribe="tcp://h:3", heartbeat_s=0.5
    )
    settings = settings_for(LineConfig(broker=broker))
    assert (settings.endpoint, settings.publish_endpoint, settings.subscribe_endpoint) == (
        "tcp://h:1",
        "tcp://h:2",
        "tcp://h:3",
    )
    assert (settings.heartbeat_s, settings.heartbeat_timeout_s) == (0.5, 2.5)


def test_run_actor_builds_and_runs_the_named_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_actor builds the named actor with its options and runs it with the line's settings."""
    ran: list[tuple[Actor, ActorSettings | None]] = []

    def run(self: Actor, settings: ActorSettings | None = None) -> None:
        ran.append((self, settings))

    monkeypatch.setattr(EchoActor, "run", run)
    options: dict[str, Any] = {"x": 1}
    config = LineConfig(actors=(ActorSpec("e1", "echo", "bus.testing:EchoActor", options),))
    run_actor(config, "e1")
    [(actor, settings)] = ran
    assert isinstance(actor, EchoActor)
    assert (actor.name, actor.options) == ("e1", options)
    assert settings is not None and settings.endpoint == config.broker.command
