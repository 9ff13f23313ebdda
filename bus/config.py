"""Read a line's TOML config into frozen dataclasses: broker, supervisor, simulators, actors.

A config names the broker's endpoints and timing, then one ``[[actor]]`` table per actor process
and, for the demo and tests, one ``[[simulator]]`` table per simulated device::

    [broker]
    command = "tcp://127.0.0.1:7750"

    [[simulator]]
    name = "fr-sim"
    module = "actors.flashrunner.simulator"
    args = ["--port", "21234"]

    [[actor]]
    name = "fr1"
    kind = "flashrunner"
    [actor.options]
    address = "127.0.0.1:21234"

Every table is read by ``bus.options.from_table`` into the dataclass that describes it: unknown
keys are errors (a typo should not silently fall back to a default), types are exact, durations
(``*_s``) are positive. Each actor reads its own ``[actor.options]`` table the same way, into its
kind's options dataclass.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.errors import BadRequest, ConfigError
from bus.options import Seconds, from_table
from bus.protocol import (
    BROKER_SERVICE,
    DEFAULT_COMMAND_ENDPOINT,
    DEFAULT_PUBLISH_ENDPOINT,
    DEFAULT_SUBSCRIBE_ENDPOINT,
    validate_service_name,
)

__all__ = [
    "ActorSpec",
    "BrokerConfig",
    "LineConfig",
    "SimulatorSpec",
    "SupervisorConfig",
    "load",
    "parse",
]


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the broker binds and how it times peers.

    ``heartbeat_timeout_s`` is how long an actor may be silent before it is declared down and its
    callers fail with ``unavailable``; a dead process is noticed sooner, by its closed connection.
    """

    command: str = DEFAULT_COMMAND_ENDPOINT
    publish: str = DEFAULT_PUBLISH_ENDPOINT
    subscribe: str = DEFAULT_SUBSCRIBE_ENDPOINT
    heartbeat_s: Seconds = 1.0
    heartbeat_timeout_s: Seconds = 2.5
    default_timeout_s: Seconds = 30.0
    max_timeout_s: Seconds = 3600.0
    max_message_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """Restart policy: back-off doubles from ``backoff_initial_s`` up to ``backoff_max_s``; a
    process restarted more than ``flap_max_restarts`` times within ``flap_window_s`` is given up."""

    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 10.0
    flap_window_s: Seconds = 60.0
    flap_max_restarts: int = 5
    stop_timeout_s: Seconds = 5.0
    ready_timeout_s: Seconds = 20.0


@dataclass(frozen=True, slots=True)
class SimulatorSpec:
    """A device simulator the supervisor runs as ``python -m MODULE ARGS`` before the actors."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    wait_ready: bool = True


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """One actor process: its service name, kind, actor class and the kind's options."""

    name: str
    kind: str
    actor_class: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def class_path(self) -> str:
        """``module:Class`` of the actor; by default ``actors.<kind>.actor:ACTOR``."""
        return self.actor_class or f"actors.{self.kind}.actor:ACTOR"


@dataclass(frozen=True, slots=True)
class LineConfig:
    """A whole line: broker, supervisor policy, simulators and actors."""

    broker: BrokerConfig = field(default_factory=BrokerConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    simulators: tuple[SimulatorSpec, ...] = ()
    actors: tuple[ActorSpec, ...] = ()
    path: str = ""

    def actor(self, name: str) -> ActorSpec:
        """Return the actor named ``name`` or raise ConfigError listing the names there are."""
        for spec in self.actors:
            if spec.name == name:
                return spec
        raise ConfigError(
            f"{self.path or 'config'}: no actor named {name!r} (have {[a.name for a in self.actors]})"
        )


def _env_overrides(broker: dict[str, Any]) -> dict[str, Any]:
    """Let ``LINEBUS_ENDPOINT`` etc. move the broker without editing the file (containers)."""
    merged = dict(broker)
    for key, env in (
        ("command", "LINEBUS_ENDPOINT"),
        ("publish", "LINEBUS_PUBLISH"),
        ("subscribe", "LINEBUS_SUBSCRIBE"),
    ):
        if os.environ.get(env):
            merged[key] = os.environ[env]
    return merged


def parse(data: dict[str, Any], path: str = "") -> LineConfig:
    """Validate a decoded TOML document and return the line it describes."""
    where = path or "config"
    unknown = sorted(set(data) - {"broker", "supervisor", "simulator", "actor"})
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}")
    for section in ("broker", "supervisor"):
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
    for section in ("simulator", "actor"):
        tables = data.get(section, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ConfigError(f"{where}: [[{section}]] must be an array of tables")
    broker = from_table(BrokerConfig, _env_overrides(data.get("broker", {})), f"{where} [broker]")
    if broker.heartbeat_timeout_s <= broker.heartbeat_s:
        raise ConfigError(f"{where} [broker]: heartbeat_timeout_s must exceed heartbeat_s")
    supervisor = from_table(SupervisorConfig, data.get("supervisor", {}), f"{where} [supervisor]")
    simulators = []
    for i, table in enumerate(data.get("simulator", [])):
        table = dict(table)
        if isinstance(table.get("args"), list):  # numbers are fine as arguments: "--port", 21234
            table["args"] = [str(a) for a in table["args"]]
        for key in ("name", "module"):
            if key not in table:
                raise ConfigError(f"{where} [[simulator]] #{i + 1}: missing {key!r}")
        simulators.append(
            from_table(SimulatorSpec, table, f"{where} [[simulator]] {table['name']}")
        )
    actors = []
    names: set[str] = set()
    for i, table in enumerate(data.get("actor", [])):
        table = dict(table)
        if "class" in table:
            table["actor_class"] = table.pop("class")
        for key in ("name", "kind"):
            if key not in table:
                raise ConfigError(f"{where} [[actor]] #{i + 1}: missing {key!r}")
        spec = from_table(ActorSpec, table, f"{where} [[actor]] {table['name']}")
        try:
            validate_service_name(spec.name)
        except BadRequest as exc:
            raise ConfigError(f"{where} [[actor]]: {exc.message}") from None
        if spec.name == BROKER_SERVICE:
            raise ConfigError(
                f"{where} [[actor]]: the name {BROKER_SERVICE!r} is reserved for the broker"
            )
        if spec.name in names:
            raise ConfigError(f"{where}: two actors named {spec.name!r}")
        names.add(spec.name)
        actors.append(spec)
    return LineConfig(broker, supervisor, tuple(simulators), tuple(actors), path)


def load(path: str | os.PathLike[str]) -> LineConfig:
    """Read and validate a TOML config file.

    Raises:
        ConfigError: the file is missing, not TOML, or names an unknown key or a wrong type.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse(data, str(p))
