"""Run one configured actor in this process (what the supervisor starts for each actor)."""

from __future__ import annotations

import importlib

import structlog

from bus.actor import Actor, ActorSettings
from bus.client import ENV_BROKER_KEY_FILE, ENV_KEY_FILE, ClientKeys
from bus.config import ActorSpec, LineConfig
from bus.errors import ConfigError
from bus.priority import apply_nice

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
    """Actor settings matching the line's broker, with the keys of the environment.

    The broker is reached over its ``ipc_dir`` sockets when they are on this host
    (``BrokerConfig.endpoints_from_here``), else over its configured endpoints.

    On a secured line the supervisor gives each actor ``LINEBUS_KEY_FILE`` (its own secret key
    file, never its content, and never in the process arguments) and ``LINEBUS_BROKER_KEY_FILE``.

    Raises:
        KeyFileError: keys are configured in the environment but cannot be used.
        ConfigError: the line is secured (CURVE) and the environment gives the actor no key.
    """
    b = config.broker
    keys = ClientKeys.load()
    if keys is None and config.security.curve:
        raise ConfigError(
            f"{config.path or 'config'}: the line is secured (CURVE) but this actor has no key:"
            f" set {ENV_KEY_FILE} and {ENV_BROKER_KEY_FILE} (`linebus up` does)"
        )
    here = b.endpoints_from_here()
    return ActorSettings(
        here["command"],
        here["publish"],
        subscribe_endpoint=here["subscribe"],
        heartbeat_s=b.heartbeat_s,
        heartbeat_timeout_s=b.heartbeat_timeout_s,
        keys=keys,
    )


def run_actor(config: LineConfig, name: str) -> None:
    """Build the actor ``name`` of ``config`` and serve until SIGTERM."""
    spec = config.actor(name)
    apply_nice(spec.nice, f"actor {name!r}")  # before the first thread starts
    cls = load_actor_class(spec)
    actor = cls(spec.name, spec.options)
    settings = settings_for(config)
    settings.event_ring, settings.event_ring_age_s = spec.event_ring, spec.event_ring_age_s
    actor.run(settings)
