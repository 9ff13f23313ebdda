"""The bridge's options: the ``[actor.options]`` table of an ``mqtt`` actor, read by
``bus.options.from_table`` into ``BridgeConfig``."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal

from bus.options import (
    NON_BLANK,
    Check,
    Example,
    NonNegativeSeconds,
    Port,
    PositiveInt,
    Seconds,
    Secret,
    options,
)

__all__ = ["BridgeConfig"]

_FORBIDDEN_IN_LEVEL = set("+#\0")


def _namespace_ok(namespace: str) -> bool:
    levels = namespace.strip("/").split("/")
    return all(level and not (_FORBIDDEN_IN_LEVEL & set(level)) for level in levels)


def _qos_ok(table: dict[str, Any]) -> bool:
    return all(
        isinstance(v, int) and not isinstance(v, bool) and v in (0, 1, 2) for v in table.values()
    )


def _sparkplug_id_ok(value: str) -> bool:
    return bool(value) and not (set("+#/") & set(value))


@options
class BridgeConfig:
    """How the bridge reaches the plant's MQTT broker and what of the line it shows there.

    Args:
        host: The plant broker's host name or address.
        namespace: The line's place in the Unified Namespace, ISA-95 levels
            ``enterprise/site/area/line``: every topic of this line starts with it.
        port: The broker's port (8883 is the usual TLS port).
        client_id: The MQTT client id; one per bridge (two bridges with one id throw each other
            off the broker). Default: ``linebus-`` and the namespace, ``/`` as ``-``.
        protocol: ``"5"`` (MQTT 5; required for commands, which need response topics) or
            ``"3.1.1"`` for older brokers (events, presence and state only).
        username: Username, if the broker asks for one.
        password: Its password (secret: ``password_file`` or ``password_env`` keep it out of
            the config).
        tls: Connect with TLS (certificate checked against ``ca_file``, or the system's CAs).
        ca_file: CA certificate (PEM) of the broker's certificate.
        cert_file: Client certificate (PEM), for brokers that authenticate clients by it.
        key_file: Its private key (PEM).
        keepalive_s: MQTT keep-alive; the broker declares the bridge dead (and sends its will)
            after 1.5 times this without traffic.
        session_expiry_s: How long the broker keeps the bridge's session (its command
            subscription and QoS 1 commands sent meanwhile) across a disconnection (MQTT 5).
        backoff_initial_s: First pause before reconnecting; doubles per failure.
        backoff_max_s: Cap of that pause.
        events: Prefixes of linebus event topics published under the namespace
            (``"echo1."``; ``""`` for all).
        qos: QoS per event prefix (the longest matching prefix wins); others get 0.
        state_events: Event names whose last value is an actor's state: ``<service>.<name>``
            is also published retained on ``<namespace>/<service>/state``.
        format: Payload encoding of events and state: ``"json"`` or ``"msgpack"``.
        expose: Commands reachable from MQTT, as ``service.command`` (``*`` globs allowed:
            ``"echo1.*"``); every other command is refused with ``forbidden``.
        command_timeout_s: Deadline of a linebus call made for an MQTT request.
        profile: ``"uns"``: Unified Namespace topics as above; ``"sparkplug"``: Sparkplug B
            (the line as edge node, each actor a device).
        sparkplug_group: Sparkplug group id; default the namespace's first three levels joined
            with ``-`` (``acme-plant1-assembly``).
        sparkplug_node: Sparkplug edge node id; default the namespace's last level.
    """

    host: Annotated[str, NON_BLANK, Example('host = "mqtt.plant.example"')]
    namespace: Annotated[
        str,
        Check(_namespace_ok, "be MQTT topic levels without '+', '#' or empty levels"),
        Example('namespace = "acme/plant1/assembly/line3"'),
    ]
    port: Port = 1883
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: PositiveInt = 30
    session_expiry_s: NonNegativeSeconds = 300.0
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    events: tuple[str, ...] = ()
    qos: Annotated[dict[str, Any], Check(_qos_ok, "map event prefixes to 0, 1 or 2")] = field(
        default_factory=dict
    )
    state_events: tuple[str, ...] = ("state",)
    format: Literal["json", "msgpack"] = "json"
    expose: tuple[str, ...] = ()
    command_timeout_s: Seconds = 30.0
    profile: Literal["uns", "sparkplug"] = "uns"
    sparkplug_group: Annotated[str, Check(_sparkplug_id_ok, "not contain + # /")] | None = None
    sparkplug_node: Annotated[str, Check(_sparkplug_id_ok, "not contain + # /")] | None = None

    @property
    def root(self) -> str:
        """The namespace without surrounding slashes."""
        return self.namespace.strip("/")

    @property
    def effective_client_id(self) -> str:
        """``client_id``, or one made from the namespace."""
        return self.client_id or "linebus-" + self.root.replace("/", "-")

    @property
    def group_id(self) -> str:
        """The Sparkplug group id."""
        levels = self.root.split("/")
        return self.sparkplug_group or "-".join(levels[:-1] or levels)

    @property
    def node_id(self) -> str:
        """The Sparkplug edge node id."""
        return self.sparkplug_node or self.root.split("/")[-1]
