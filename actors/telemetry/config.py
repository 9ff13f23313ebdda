"""The settings of the telemetry store and forwarder: the actor's ``[actor.options]``, as frozen
dataclasses read by ``bus.options.from_table`` (the forwarder's keys sit at the top level)."""

from __future__ import annotations

from typing import Annotated, Literal

from actors.telemetry.model import OverflowPolicy
from bus.errors import ConfigError
from bus.options import (
    FLATTEN,
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

__all__ = ["ForwarderConfig", "MqttUpstreamConfig", "TelemetryConfig"]

_FORBIDDEN_IN_LEVEL = set("+#\0")


def _namespace_ok(namespace: str) -> bool:
    levels = namespace.strip("/").split("/")
    return all(level and not (_FORBIDDEN_IN_LEVEL & set(level)) for level in levels)


@options
class MqttUpstreamConfig:
    """The plant's MQTT broker as the forwarder's upstream (the ``[actor.options.mqtt]`` table).

    Topics (docs/INGEST_PROTOCOL.md, "The MQTT upstream") sit under ``<namespace>/<device_id>/``,
    beside the ``mqtt`` bridge's ``<namespace>/<service>/`` topics of the same line.

    Args:
        host: The broker's host name or address.
        namespace: The line's place in the Unified Namespace (``enterprise/site/area/line``), the
            same as the line's ``mqtt`` bridge.
        port: The broker's port (8883 is the usual TLS port).
        client_id: The MQTT client id, which names the persistent session; one per device.
            Default: ``linebus-telemetry-`` and the device id.
        username: Username, if the broker asks for one.
        password: Its password (secret: ``password_file`` or ``password_env`` keep it out of
            the config).
        tls: Connect with TLS (certificate checked against ``ca_file``, or the system's CAs).
        ca_file: CA certificate (PEM) of the broker's certificate.
        cert_file: Client certificate (PEM), for brokers that authenticate clients by it.
        key_file: Its private key (PEM).
        keepalive_s: MQTT keep-alive.
        session_expiry_s: How long the broker keeps the session (the desired-properties
            subscription, unacknowledged messages) across a disconnection.
        max_inflight: Messages published and not yet acknowledged (PUBACK) at any time: the
            in-flight window.
    """

    host: Annotated[str, NON_BLANK, Example('host = "mqtt.plant.example"')]
    namespace: Annotated[
        str,
        Check(_namespace_ok, "be MQTT topic levels without '+', '#' or empty levels"),
        Example('namespace = "acme/plant1/assembly/line3"'),
    ]
    port: Port = 1883
    client_id: str | None = None
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: PositiveInt = 30
    session_expiry_s: NonNegativeSeconds = 3600.0
    max_inflight: PositiveInt = 100

    @property
    def root(self) -> str:
        """The namespace without surrounding slashes."""
        return self.namespace.strip("/")


@options
class ForwarderConfig:
    """How the forwarder reaches its upstream and paces its uploads.

    Args:
        upstream: ``"http"``: the ingest service of docs/INGEST_PROTOCOL.md at ``instance_url``;
            ``"mqtt"``: the plant's MQTT broker of the ``mqtt`` table.
        instance_url: Base URL of the ingest service (``http://host:port``); HTTP only.
        provisioning_token: Exchanged for a registration token on first start (or when
            rejected); HTTP only.
        device_id: The requested device id; None lets the upstream choose (HTTP; MQTT needs one:
            it names the device's topics).
        mqtt: The broker and the namespace, for ``upstream = "mqtt"``.
        max_batch_messages: Most messages in one upload.
        max_batch_bytes: Most payload bytes in one upload (a bigger single message goes alone).
        linger_s: After new messages arrive, wait this long for more before sending a small upload.
        request_timeout_s: Connect and read timeout of every HTTP request; with MQTT, how long
            a batch waits for its PUBACKs before the missing ones are sent again.
        backoff_initial_s: First pause after a failed request; doubles per failure, with jitter.
        backoff_max_s: Cap of that pause.
        retry_after_max_s: Cap on a server's ``Retry-After`` (guards against absurd values).
        desired_poll_s: Interval between reads of the desired properties while connected.
        token_refresh_margin_s: Refresh the registration token when it expires within this.
    """

    upstream: Literal["http", "mqtt"] = "http"
    instance_url: Annotated[str, Example('instance_url = "http://127.0.0.1:8080"')] | None = None
    provisioning_token: Secret | None = None
    device_id: str | None = None
    mqtt: MqttUpstreamConfig | None = None
    max_batch_messages: PositiveInt = 100
    max_batch_bytes: PositiveInt = 256 * 1024
    linger_s: NonNegativeSeconds = 0.05
    request_timeout_s: Seconds = 10.0
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    retry_after_max_s: Seconds = 300.0
    desired_poll_s: Seconds = 5.0
    token_refresh_margin_s: NonNegativeSeconds = 3600.0

    def __post_init__(self) -> None:
        if self.upstream == "http":
            if self.instance_url is None:
                raise ConfigError(
                    "missing required option 'instance_url'"
                    ' (e.g. instance_url = "http://127.0.0.1:8080")'
                )
            if self.provisioning_token is None:
                raise ConfigError(
                    "missing required option 'provisioning_token'"
                    " (or 'provisioning_token_file', 'provisioning_token_env')"
                )
            if self.mqtt is not None:
                raise ConfigError("an 'mqtt' table needs upstream = \"mqtt\"")
            return
        if self.mqtt is None:
            raise ConfigError(
                'upstream = "mqtt" needs an [actor.options.mqtt] table'
                ' (e.g. mqtt = { host = "127.0.0.1", namespace = "acme/plant1/assembly/line3" })'
            )
        if not self.device_id or set("/+#\0") & set(self.device_id):
            raise ConfigError(
                'upstream = "mqtt" needs a device_id (one MQTT topic level: no / + #),'
                f" got {self.device_id!r}"
            )
        if self.instance_url is not None:
            raise ConfigError('instance_url is for upstream = "http", not "mqtt"')

    @property
    def upstream_url(self) -> str:
        """Where the forwarder sends: ``instance_url``, or ``mqtt[s]://host:port/namespace``."""
        if self.mqtt is None:
            return (self.instance_url or "").rstrip("/")
        scheme = "mqtts" if self.mqtt.tls else "mqtt"
        return f"{scheme}://{self.mqtt.host}:{self.mqtt.port}/{self.mqtt.root}"


@options
class TelemetryConfig:
    """Everything the telemetry driver needs: the store file, its quota, and the forwarder.

    Build it from an actor's flat ``[actor.options]`` table with
    ``from_table(TelemetryConfig, options, where, noun="option")``.

    Args:
        db: Path of the SQLite store (must end in ``.db``, as the Spotflow SDK requires).
        quota_bytes: Bound on stored message bytes; None for no bound.
        overflow: What happens when an append does not fit.
        forwarder: The upstream settings (their keys at the top level of the options table).
    """

    db: Annotated[
        str,
        Check(lambda path: path.endswith(".db"), "end with '.db'"),
        Example('db = "var/telemetry.db"'),
    ]
    forwarder: Annotated[ForwarderConfig, FLATTEN]
    quota_bytes: PositiveInt | None = None
    overflow: OverflowPolicy = OverflowPolicy.REJECT_NEW
