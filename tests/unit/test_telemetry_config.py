"""Building the telemetry settings from an actor's flat options table."""

from __future__ import annotations

import pytest

from actors.telemetry.config import TelemetryConfig
from actors.telemetry.model import OverflowPolicy
from bus.errors import ConfigError

BASE = {"db": "line.db", "instance_url": "http://127.0.0.1:8080", "provisioning_token": "t"}


def test_flat_options_split_into_store_and_forwarder_settings() -> None:
    """Forwarder keys go to ForwarderConfig; the rest are the store's."""
    config = TelemetryConfig.from_options(
        {**BASE, "quota_bytes": 1000, "overflow": "evict_forwarded", "linger_s": 0.5}
    )
    assert (config.db, config.quota_bytes, config.overflow) == (
        "line.db",
        1000,
        OverflowPolicy.EVICT_FORWARDED,
    )
    assert (config.forwarder.instance_url, config.forwarder.linger_s) == (
        "http://127.0.0.1:8080",
        0.5,
    )


@pytest.mark.parametrize(
    "options",
    [
        {k: v for k, v in BASE.items() if k != "provisioning_token"},
        {**BASE, "db": "line.sqlite"},
        {**BASE, "overflow": "drop_everything"},
        {**BASE, "colour": "blue"},
    ],
)
def test_bad_options_are_config_errors(options: dict[str, object]) -> None:
    """Missing keys, a db not ending in .db, unknown policies or keys: ConfigError naming the problem."""
    with pytest.raises(ConfigError):
        TelemetryConfig.from_options(options)
