"""The settings of the telemetry store and forwarder, as frozen dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actors.telemetry.model import OverflowPolicy
from bus.errors import ConfigError

__all__ = ["ForwarderConfig", "TelemetryConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwarderConfig:
    """How the forwarder reaches its upstream and paces its uploads.

    Args:
        instance_url: Base URL of the ingest service (``http://host:port``).
        provisioning_token: Exchanged for a registration token on first start (or when rejected).
        device_id: The requested device id; None lets the upstream choose.
        max_batch_messages: Most messages in one upload.
        max_batch_bytes: Most payload bytes in one upload (a bigger single message goes alone).
        linger_s: After new messages arrive, wait this long for more before sending a small upload.
        request_timeout_s: Connect and read timeout of every HTTP request.
        backoff_initial_s: First pause after a failed request; doubles per failure, with jitter.
        backoff_max_s: Cap of that pause.
        retry_after_max_s: Cap on a server's ``Retry-After`` (guards against absurd values).
        desired_poll_s: Interval between reads of the desired properties while connected.
        token_refresh_margin_s: Refresh the registration token when it expires within this.
    """

    instance_url: str
    provisioning_token: str
    device_id: str | None = None
    max_batch_messages: int = 100
    max_batch_bytes: int = 256 * 1024
    linger_s: float = 0.05
    request_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 300.0
    desired_poll_s: float = 5.0
    token_refresh_margin_s: float = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryConfig:
    """Everything the telemetry driver needs: the store file, its quota, and the forwarder.

    Args:
        db: Path of the SQLite store (must end in ``.db``, as the Spotflow SDK requires).
        quota_bytes: Bound on stored message bytes; None for no bound.
        overflow: What happens when an append does not fit.
        forwarder: The upstream settings.
    """

    db: str
    forwarder: ForwarderConfig
    quota_bytes: int | None = None
    overflow: OverflowPolicy = OverflowPolicy.REJECT_NEW

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TelemetryConfig:
        """Build from an actor's flat ``[actor.options]`` table (forwarder keys at top level).

        Raises:
            ConfigError: A required key is missing, a key is unknown, or a value is invalid.
        """
        forwarder_keys = {f.name for f in dataclasses.fields(ForwarderConfig)}
        own = {k: v for k, v in options.items() if k not in forwarder_keys}
        unknown = set(own) - {"db", "quota_bytes", "overflow"}
        if unknown:
            raise ConfigError(f"telemetry: unknown options {sorted(unknown)}")
        try:
            forwarder = ForwarderConfig(**{k: v for k, v in options.items() if k in forwarder_keys})
            config = cls(
                db=str(own["db"]),
                forwarder=forwarder,
                quota_bytes=own.get("quota_bytes"),
                overflow=OverflowPolicy(own.get("overflow", OverflowPolicy.REJECT_NEW)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"telemetry: bad options: {exc}") from exc
        if not config.db.endswith(".db"):
            raise ConfigError(f"telemetry: db {config.db!r} must end with '.db'")
        return config
