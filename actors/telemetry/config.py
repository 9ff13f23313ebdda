"""The settings of the telemetry store and forwarder: the actor's ``[actor.options]``, as frozen
dataclasses read by ``bus.options.from_table`` (the forwarder's keys sit at the top level)."""

from __future__ import annotations

from typing import Annotated

from actors.telemetry.model import OverflowPolicy
from bus.options import (
    FLATTEN,
    Check,
    Example,
    NonNegativeSeconds,
    PositiveInt,
    Seconds,
    Secret,
    options,
)

__all__ = ["ForwarderConfig", "TelemetryConfig"]


@options
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

    instance_url: Annotated[str, Example('instance_url = "http://127.0.0.1:8080"')]
    provisioning_token: Secret
    device_id: str | None = None
    max_batch_messages: PositiveInt = 100
    max_batch_bytes: PositiveInt = 256 * 1024
    linger_s: NonNegativeSeconds = 0.05
    request_timeout_s: Seconds = 10.0
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    retry_after_max_s: Seconds = 300.0
    desired_poll_s: Seconds = 5.0
    token_refresh_margin_s: NonNegativeSeconds = 3600.0


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
