"""Building the telemetry settings from an actor's flat options table."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from actors.telemetry.config import TelemetryConfig
from actors.telemetry.model import OverflowPolicy
from bus.errors import ConfigError
from bus.options import from_table

BASE = {"db": "line.db", "instance_url": "http://127.0.0.1:8080", "provisioning_token": "t"}


def from_options(options: Mapping[str, object]) -> TelemetryConfig:
    """What the telemetry actor does with its ``[actor.options]`` table."""
    return from_table(TelemetryConfig, options, "telemetry tel", noun="option")


def test_flat_options_split_into_store_and_forwarder_settings() -> None:
    """Forwarder keys go to ForwarderConfig; the rest are the store's."""
    config = from_options(
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
    ("options", "words"),
    [
        (
            {k: v for k, v in BASE.items() if k != "provisioning_token"},
            "missing required option 'provisioning_token'",
        ),
        ({**BASE, "db": "line.sqlite"}, "db must end with '.db', got 'line.sqlite'"),
        ({**BASE, "overflow": "drop_everything"}, "overflow must be one of"),
        ({**BASE, "colour": "blue"}, "unknown option(s) ['colour']"),
        ({**BASE, "linger_s": "soon"}, "linger_s must be a number, got 'soon'"),
        ({**BASE, "quota_bytes": 0}, "quota_bytes must be positive, got 0"),
        ({"db": "l.db", "upstream": "mqtt", "device_id": "d"}, "needs an [actor.options.mqtt]"),
        (
            {"db": "l.db", "upstream": "mqtt", "mqtt": {"host": "h", "namespace": "a/b"}},
            "needs a device_id",
        ),
        (
            {"db": "l.db", "upstream": "mqtt", "device_id": "d", "mqtt": {"host": "h"}},
            "missing required key 'namespace'",
        ),
        ({**BASE, "mqtt": {"host": "h", "namespace": "a/b"}}, 'needs upstream = "mqtt"'),
    ],
    ids=[
        "missing token",
        "db suffix",
        "overflow policy",
        "unknown key",
        "wrong type",
        "range",
        "mqtt without table",
        "mqtt without device",
        "mqtt without namespace",
        "mqtt table for http",
    ],
)
def test_bad_options_are_config_errors(options: dict[str, object], words: str) -> None:
    """Missing keys, a db not ending in .db, unknown policies or keys: ConfigError naming the problem."""
    with pytest.raises(ConfigError) as info:
        from_options(options)
    assert info.value.message.startswith("telemetry tel: ")
    assert words in info.value.message


def test_the_token_never_shows() -> None:
    """The provisioning token is a secret: not in the repr, not in an error about it."""
    config = from_options({**BASE, "provisioning_token": "hunter2"})
    assert "hunter2" not in repr(config)
    assert "hunter2" not in repr(config.forwarder)
    with pytest.raises(ConfigError) as info:
        from_options({**BASE, "provisioning_token": ["hunter2"]})
    assert "hunter2" not in info.value.message
    assert "provisioning_token must be a string, got ***" in info.value.message


def test_mqtt_upstream_options() -> None:
    """upstream = "mqtt" with its table: no HTTP keys needed; the URL names broker and namespace."""
    config = from_options(
        {
            "db": "line.db",
            "upstream": "mqtt",
            "device_id": "press1",
            "mqtt": {"host": "broker", "port": 8883, "tls": True, "namespace": "/acme/p1/a/l3/"},
        }
    )
    assert config.forwarder.upstream_url == "mqtts://broker:8883/acme/p1/a/l3"
    assert config.forwarder.mqtt is not None and config.forwarder.mqtt.max_inflight == 100
