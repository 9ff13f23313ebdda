"""Run one configured actor in this process (what the supervisor starts for each actor)."""

from __future__ import annotations

import importlib

import structlog

from bus.actor import Actor, ActorSettings
from bus.config import ActorSpec, LineConfig
from bus.errors import ConfigError

__all__ = ["load_actor_class", "run_actor", "settings_for"]

log = structlog.get_logger()

#: The pip extra that brings each built-in kind's dependencies, for a helpful import error.
EXTRAS = {
    "flashrunner": "flashrunner",
    "flux": "flux",
    "discovery": "discovery",
    "telemetry": "telemetry",
    "remotelab": "remotelab",
}


def load_actor_class(spec: ActorSpec) -> type[Actor]:
    """Import the actor class named by ``spec`` (``module:Class``).

    Raises:
        ConfigError: the module or class does not exist, or a dependency of the kind is missing.
    """
    module_name, _, attr = spec.class_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and not module_name.startswith(exc.name):
            extra = EXTRAS.get(spec.kind)
            hint = f"; install it with: pip install 'linebus[{extra}]'" if extra else ""
            raise ConfigError(
                f"actor {spec.name!r} ({spec.kind}) needs the module {exc.name!r}{hint}"
            ) from exc
        raise ConfigError(
            f"actor {spec.name!r}: no actor kind {spec.kind!r} (module {module_name} not found)"
        ) from exc
    cls = getattr(module, attr or "ACTOR", None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ConfigError(f"actor {spec.name!r}: {spec.class_path} is not an Actor subclass")
    return cls


def settings_for(config: LineConfig) -> ActorSettings:
    """Actor settings matching the line's broker."""
    b = config.broker
    return ActorSettings(
        b.command,
        b.publish,
        subscribe_endpoint=b.subscribe,
        heartbeat_s=b.heartbeat_s,
        heartbeat_timeout_s=b.heartbeat_timeout_s,
    )


def run_actor(config: LineConfig, name: str) -> None:
    """Build the actor ``name`` of ``config`` and serve until SIGTERM."""
    spec = config.actor(name)
    cls = load_actor_class(spec)
    actor = cls(spec.name, spec.options)
    actor.run(settings_for(config))
