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

An optional ``[web]`` table has ``linebus up`` run ``linebus web`` (the dashboard and the HTTP/JSON
gateway, ``WebConfig``) as one more supervised process of the line.

An optional ``[security]`` table turns on CURVE, access lists and the audit log (``SecurityConfig``;
docs/PROTOCOL.md §18). Without it, or without a broker key, the bus runs in plaintext, and the
broker refuses to bind beyond loopback or ipc unless ``insecure = true``.

Every table is read by ``bus.options.from_table`` into the dataclass that describes it: unknown
keys are errors (a typo should not silently fall back to a default), types are exact, durations
(``*_s``) are positive. Each actor reads its own ``[actor.options]`` table the same way, into its
kind's options dataclass.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from bus import ipc
from bus._eventring import DEFAULT_RING_AGE_S, DEFAULT_RING_SIZE
from bus.errors import BadRequest, ConfigError
from bus.options import Check, NonNegativeSeconds, PositiveInt, Range, Seconds, from_table
from bus.priority import Nice
from bus.protocol import (
    BROKER_SERVICE,
    DEFAULT_COMMAND_ENDPOINT,
    DEFAULT_PUBLISH_ENDPOINT,
    DEFAULT_SUBSCRIBE_ENDPOINT,
    validate_service_name,
)
from bus.security.acl import Acl
from bus.security.keyring import Keyring
from bus.security.keys import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    KeyPair,
    load_keypair,
    validate_key_name,
)

__all__ = [
    "ActorSpec",
    "BrokerConfig",
    "LineConfig",
    "SecurityConfig",
    "SimulatorSpec",
    "SupervisorConfig",
    "WebConfig",
    "load",
    "loads",
    "parse",
    "parse_listen",
]


_LISTEN = 'be "host:port" with a port of 0-65535 (0: a free one), e.g. "127.0.0.1:9750"'


def _listens(text: str) -> bool:
    try:
        parse_listen(text)
    except ConfigError:
        return False
    return True


#: A ``"host:port"`` to listen on (``parse_listen``).
ListenAddress = Annotated[str, Check(_listens, _LISTEN)]


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the broker binds and how it times peers.

    ``heartbeat_timeout_s`` is how long an actor may be silent before it is declared down and its
    callers fail with ``unavailable``; a dead process is noticed sooner, by its closed connection.

    ``subscriber_queue`` is how many events the broker holds for one subscriber that does not
    keep up, past what the kernel's socket buffers hold; beyond it that subscriber's events are
    dropped (it sees the gap), and the others are not slowed. It bounds the broker's memory per
    stalled subscriber at about ``subscriber_queue`` times (event size + 100 bytes): see
    docs/BENCHMARKS.md, "Slow subscribers".

    ``registration_grace_s``: for this long after the broker starts, a call to a name no actor
    has registered is answered ``unavailable`` (retryable), not ``unknown_service``, as for the
    names the line's config lists: for actors the broker's config does not name (run from
    configs of their own), which register again within about ``heartbeat_s`` of a broker
    restart. 0 (the default): only the config's names.

    ``metrics``: ``"host:port"`` where the broker serves its figures in the Prometheus text
    format over HTTP (``bus.metrics``; port 0 picks a free one); unset (the default): no HTTP
    listener. It has no authentication: bind it to loopback or a monitoring network.

    ``nice``: an adjustment of the broker process's priority, as ``nice -n`` (``bus.priority``):
    negative for more of the CPU (that needs root or CAP_SYS_NICE); unset (the default): none.

    ``ipc_dir``: a directory where the broker also listens on Unix sockets (``command``,
    ``publish``, ``subscribe``; ``bus.ipc``), the quicker way in for the processes on its host:
    actors run from this config connect there when the broker's socket is found in it, and over
    TCP otherwise (another host). A relative path is taken from the config file's directory;
    unset (the default): TCP only.
    """

    command: str = DEFAULT_COMMAND_ENDPOINT
    publish: str = DEFAULT_PUBLISH_ENDPOINT
    subscribe: str = DEFAULT_SUBSCRIBE_ENDPOINT
    heartbeat_s: Seconds = 1.0
    heartbeat_timeout_s: Seconds = 2.5
    default_timeout_s: Seconds = 30.0
    max_timeout_s: Seconds = 3600.0
    max_message_bytes: int = 256 * 1024 * 1024
    subscriber_queue: PositiveInt = 100_000
    registration_grace_s: NonNegativeSeconds = 0.0
    metrics: ListenAddress | None = None
    nice: Nice | None = None
    ipc_dir: Path | None = None

    def endpoints(self) -> dict[str, str]:
        """The configured endpoints by role (``command``, ``publish``, ``subscribe``)."""
        return {"command": self.command, "publish": self.publish, "subscribe": self.subscribe}

    def ipc_endpoints(self) -> dict[str, str]:
        """The broker's ``ipc://`` endpoints by role (``bus.ipc.endpoints``); {} without
        ``ipc_dir``."""
        return {} if self.ipc_dir is None else ipc.endpoints(self.ipc_dir)

    def endpoints_from_here(self) -> dict[str, str]:
        """Where a process on this host reaches the broker, by role: the ``ipc_dir`` sockets
        when the broker's are there (``bus.ipc.listening``), else the configured endpoints."""
        if self.ipc_dir is not None and ipc.listening(self.ipc_dir):
            return self.ipc_endpoints()
        return self.endpoints()


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """Restart policy (``bus.restarts``): a process that exits after running at least
    ``healthy_run_s`` is restarted at once; one that dies younger waits a back-off that doubles
    from ``backoff_initial_s`` up to ``backoff_max_s`` while it keeps dying young; a process
    restarted more than ``flap_max_restarts`` times within ``flap_window_s`` is given up."""

    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 10.0
    healthy_run_s: Seconds = 5.0
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
    """One actor process: its service name, kind, actor class and the kind's options.

    ``event_ring`` events per topic (0: none), no older than ``event_ring_age_s``, are kept for
    subscribers that repair a gap (``replay``, docs/PROTOCOL.md §9). ``nice``: an adjustment of
    the process's priority, as the broker's (``BrokerConfig``).
    """

    name: str
    kind: str
    actor_class: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    event_ring: Annotated[int, Range(ge=0)] = DEFAULT_RING_SIZE
    event_ring_age_s: Seconds = DEFAULT_RING_AGE_S
    nice: Nice | None = None

    @property
    def class_path(self) -> str:
        """``module:Class`` of the actor; by default ``actors.<kind>.actor:ACTOR``."""
        return self.actor_class or f"actors.{self.kind}.actor:ACTOR"


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The ``[security]`` table: CURVE keys, known identities, access list, audit log.

    CURVE is on when ``key`` (the broker's secret certificate file) or ``key_env`` (a variable
    holding its Z85 secret) is set; then every peer must present a key the broker knows: a
    ``NAME.key`` public certificate in ``keys`` (identity ``NAME``), or an entry of ``known``
    (identity -> Z85 public key). ``acl`` is the raw ``[security.acl]`` table, checked at load and
    parsed again by the broker on start and on every reload (``bus.security.acl.Acl.parse``).
    Paths are absolute once parsed: relative ones are taken from the config file's directory.

    Off (the default, and the value of a line without ``[security]``): plaintext, and the broker
    refuses to bind beyond loopback or ipc unless ``insecure`` is true.
    """

    key: Path | None = None
    key_env: str | None = None
    keys: Path | None = None
    insecure: bool = False
    audit_log: Path | None = None
    audit_fsync: Literal["always", "interval", "never"] = "interval"
    audit_fsync_interval_s: Seconds = 1.0
    reject_log_limit: PositiveInt = 10
    reject_log_window_s: Seconds = 10.0
    known: dict[str, str] = field(default_factory=dict)
    acl: dict[str, Any] = field(default_factory=dict)

    @property
    def curve(self) -> bool:
        """True if the config names a broker key: CURVE on every socket of the broker."""
        return self.key is not None or self.key_env is not None

    @property
    def broker_public_file(self) -> Path | None:
        """The broker's public certificate beside ``key`` (``X.key`` for ``X.key_secret``).

        What clients and actors are given as ``LINEBUS_BROKER_KEY_FILE``; None without ``key``
        (a key from ``key_env`` has no file: use ``load_broker_keys().public``).
        """
        if self.key is None:
            return None
        name = self.key.name
        if name.endswith(SECRET_SUFFIX):
            return self.key.with_name(name[: -len(SECRET_SUFFIX)] + PUBLIC_SUFFIX)
        return self.key

    def load_broker_keys(self, environ: Mapping[str, str] | None = None) -> KeyPair:
        """The broker's key pair, from ``key`` or ``key_env``.

        Raises:
            ConfigError: CURVE is off (no key configured).
            KeyFileError: the file or variable is missing, unreadable, too open or malformed.
        """
        if self.key is not None:
            return load_keypair(file=self.key)
        if self.key_env is not None:
            return load_keypair(env=self.key_env, environ=environ)
        raise ConfigError("[security]: no broker key configured (key or key_env)")

    def load_keyring(self) -> Keyring:
        """The known identities now: the ``keys`` directory's ``NAME.key`` files plus ``known``.

        Raises:
            KeyFileError: the directory is missing or unsafe, a file is malformed, or two
                sources give one name two keys.
        """
        inline = Keyring(self.known, source="[security.known]")
        if self.keys is None:
            return inline
        return Keyring.load(self.keys).merged(inline)

    def access_list(
        self, known: frozenset[str] | None = None, *, where: str = "[security.acl]"
    ) -> Acl:
        """The ``[security.acl]`` table parsed, deciding for the identities ``known`` only.

        Raises:
            AclError: the table does not parse (the message starts with ``where``).
        """
        return Acl.parse(self.acl, known=known, where=where)


def _security(table: object, where: str, base: Path) -> SecurityConfig:
    """Read ``[security]``: typed keys, paths made absolute, known keys and ACL checked now."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} [security] must be a table")
    security = from_table(SecurityConfig, table, f"{where} [security]")
    if security.key is not None and security.key_env is not None:
        raise ConfigError(f"{where} [security]: give key or key_env, not both")

    def absolute(value: Path | None) -> Path | None:
        return base / value if value is not None and not value.is_absolute() else value

    security = replace(
        security,
        key=absolute(security.key),
        keys=absolute(security.keys),
        audit_log=absolute(security.audit_log),
    )
    Keyring(security.known, source=f"{where} [security.known]")  # a malformed key fails now
    security.access_list(where=f"{where} [security.acl]")  # and an ACL that does not parse
    return security


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The ``[web]`` table: ``linebus web`` (dashboard and HTTP/JSON gateway) for this line.

    ``listen`` is ``HOST:PORT``; beyond loopback it needs ``tokens`` (or ``insecure = true``
    in so many words), as anyone who reaches it may otherwise call the line. ``tokens`` is a
    tokens file (``bus.web.auth``: ``IDENTITY TOKEN`` a line, mode 0600): with it, every
    gateway request needs a token and acts as its identity. ``identity`` is the app's own
    identity on a secured line (its key pair, in the keys directory, is made by ``linebus up``
    as the actors' are). Relative paths are taken from the config file's directory.

    ``nice`` lowers the web process's CPU priority (``bus.priority``, as ``nice -n``) so that,
    on a busy controller, the bus's own processes come first: the dashboard then lags behind a
    flood of events (its subscription drops what it cannot take, and it sees the gap) instead
    of slowing the line. 0 keeps the priority it was started with.
    """

    listen: str = "127.0.0.1:8750"
    identity: str = "web"
    tokens: Path | None = None
    insecure: bool = False
    call_timeout_s: Seconds = 30.0
    max_body_bytes: PositiveInt = 16 * 1024 * 1024
    nice: Annotated[int, Range(ge=0, le=19)] = 10


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8750`` for IPv6) as a host and a port.

    Raises:
        ConfigError: not HOST:PORT with a port from 0 to 65535.
    """
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen address {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8750)")
    return host, int(port)


def _web(table: object, where: str, base: Path) -> WebConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} [web] must be a table")
    web = from_table(WebConfig, table, f"{where} [web]")
    try:
        parse_listen(web.listen)
        validate_key_name(web.identity)
    except ConfigError as exc:
        raise ConfigError(f"{where} [web]: {exc.message}") from None
    if web.tokens is not None and not web.tokens.is_absolute():
        web = replace(web, tokens=base / web.tokens)
    return web


@dataclass(frozen=True, slots=True)
class LineConfig:
    """A whole line: broker, supervisor policy, simulators, actors and security."""

    broker: BrokerConfig = field(default_factory=BrokerConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    simulators: tuple[SimulatorSpec, ...] = ()
    actors: tuple[ActorSpec, ...] = ()
    path: str = ""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    #: The ``[web]`` table; None without one (``linebus up`` then runs no web process).
    web: WebConfig | None = None

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
    unknown = sorted(set(data) - {"broker", "supervisor", "simulator", "actor", "security", "web"})
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
    base = Path(path).resolve().parent if path else Path.cwd()
    if broker.ipc_dir is not None:
        # Resolved, so "../var/run" spends none of a socket path's 107 bytes on "..".
        broker = replace(broker, ipc_dir=(base / broker.ipc_dir).resolve())
        try:
            broker.ipc_endpoints()
        except ConfigError as exc:
            raise ConfigError(f"{where} [broker]: {exc.message}") from None
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
    security = _security(data.get("security", {}), where, base)
    web = _web(data["web"], where, base) if "web" in data else None
    return LineConfig(broker, supervisor, tuple(simulators), tuple(actors), path, security, web)


def load(path: str | os.PathLike[str]) -> LineConfig:
    """Read and validate a TOML config file.

    Raises:
        ConfigError: the file is missing, not TOML, or names an unknown key or a wrong type.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found") from None
    return loads(raw, str(p))


def loads(text: str | bytes, path: str = "") -> LineConfig:
    """Validate the contents of a config file (``path`` names it in errors and anchors
    relative paths, as for ``load``).

    Raises:
        ConfigError: the bytes are not UTF-8, not TOML, or name an unknown key or a wrong type.
    """
    where = path or "config"
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise ConfigError(f"{where}: not valid TOML: arrays or tables nested too deep") from None
    return parse(data, path)
