"""The bridge's sans-io parts: UNS topics and payloads, options, exposure, Sparkplug counters
and payload encoding (decoded by the protobuf runtime from the schema, tests/sparkplug_schema.py)."""

from __future__ import annotations

import json

import msgpack
import pytest

from actors.mqtt import sparkplug as spb
from actors.mqtt import uns
from actors.mqtt.config import BridgeConfig
from actors.mqtt.requests import Exposure
from bus.errors import ConfigError, Forbidden
from bus.options import from_table
from tests import sparkplug_schema as schema

ROOT = "acme/plant1/assembly/line3"


def test_topics_under_the_namespace() -> None:
    assert uns.event_topic(ROOT, "fr1.result.ch3") == f"{ROOT}/fr1/event/result/ch3"
    assert uns.event_topic(ROOT, "a+b.x#y") == f"{ROOT}/a_b/event/x_y"  # no wildcards in levels
    assert uns.presence_topic(ROOT, "fr1") == f"{ROOT}/fr1/presence"
    assert uns.parse_command(ROOT, f"{ROOT}/fr1/cmd/flash") == ("fr1", "flash")
    assert uns.parse_command(ROOT, f"{ROOT}/fr1/event/flash") is None
    assert uns.parse_command(ROOT, "other/fr1/cmd/flash") is None


def test_qos_of_the_longest_matching_prefix() -> None:
    table = {"fr1.": 1, "fr1.result": 2}
    assert uns.qos_for("fr1.result", table) == 2
    assert uns.qos_for("fr1.log", table) == 1
    assert uns.qos_for("p1.status", table) == 0


def test_payload_formats() -> None:
    value = {"data": b"\x00\x01", "n": 1}
    assert json.loads(uns.encode(value, "json")) == {"data": {"$bytes": "AAE="}, "n": 1}
    assert msgpack.unpackb(uns.encode(value, "msgpack")) == value
    assert uns.decode_json(b'{"blob": {"$bytes": "AAE="}}') == {"blob": b"\x00\x01"}
    assert uns.decode_json(b"") is None
    with pytest.raises(ValueError):
        uns.decode_json(b"{not json")


def test_options_are_checked_and_the_password_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    def read(**table: object) -> BridgeConfig:
        return from_table(
            BridgeConfig, {"host": "h", "namespace": ROOT, **table}, "mqtt up", noun="option"
        )

    with pytest.raises(ConfigError, match="namespace"):
        read(namespace="acme/+/line")
    with pytest.raises(ConfigError, match="qos"):
        read(qos={"fr1.": 3})
    with pytest.raises(ConfigError, match="protocol"):
        read(protocol="4")
    monkeypatch.setenv("PLANT_MQTT_PASSWORD", "s3cret")
    config = read(password_env="PLANT_MQTT_PASSWORD", username="line3")
    assert config.password == "s3cret" and "s3cret" not in repr(config)
    assert config.effective_client_id == "linebus-acme-plant1-assembly-line3"
    assert (config.group_id, config.node_id) == ("acme-plant1-assembly", "line3")


def test_exposure_globs() -> None:
    exposure = Exposure(("fr1.*", "p1.start"))
    assert exposure.allows("fr1", "flash") and exposure.allows("p1", "start")
    assert not exposure.allows("p1", "stop")
    assert exposure.commands_of("p1", ["stop", "start"]) == ["start"]
    with pytest.raises(Forbidden) as refused:
        exposure.check("p1", "stop")
    assert refused.value.details == {"service": "p1", "command": "stop", "rule": "expose"}


def test_sparkplug_counters_wrap() -> None:
    counters = spb.EdgeSequence()
    assert counters.new_connection() == 0 and counters.birth() == 0
    assert [counters.next() for _ in range(256)][-2:] == [255, 0]
    for _ in range(255):
        counters.new_connection()
    assert counters.new_connection() == 0  # bdSeq wraps after 255 too


def test_sparkplug_payload_against_the_schema() -> None:
    metrics = (
        spb.metric_for("bdSeq", 3),
        spb.metric_for("State/temp", -21.5),
        spb.metric_for("State/offset", -7),
        spb.metric_for("State/ok", True),
        spb.metric_for("State/name", "häcksler"),
        spb.metric_for("State/none", None),
        spb.Metric("State/small", spb.DataType.Int16, -2),
    )
    raw = spb.encode_payload(spb.Payload(1_700_000_000_123, tuple(m for m in metrics if m), 9))
    decoded = schema.decode(raw)
    assert (decoded.timestamp, decoded.seq) == (1_700_000_000_123, 9)
    assert schema.metrics(decoded) == {
        "bdSeq": (4, 3),
        "State/temp": (10, -21.5),
        "State/offset": (4, -7),
        "State/ok": (11, True),
        "State/name": (12, "häcksler"),
        "State/none": (12, None),
        "State/small": (2, 2**32 - 2),  # Int16 travels in uint32 int_value, two's complement
    }
    back = spb.decode_payload(raw)  # the bridge's own reader (NCMD/DCMD) agrees
    assert [(m.name, m.value) for m in back.metrics][2:5] == [
        ("State/offset", -7),
        ("State/ok", True),
        ("State/name", "häcksler"),
    ]
    assert back.metrics[6].value == -2
    assert spb.metric_for("map", {"a": 1}) is None
    assert spb.flatten("State", {"a": {"b": 1}, "c": 2}) == {"State/a/b": 1, "State/c": 2}


def test_sparkplug_commands_read_from_the_schema_encoding() -> None:
    raw = schema.command("Commands/add", '{"a": 1}', datatype="String")
    (metric,) = spb.decode_payload(raw).metrics
    assert (metric.name, metric.datatype, metric.value) == (
        "Commands/add",
        spb.DataType.String,
        '{"a": 1}',
    )
    with pytest.raises(ValueError, match="truncated"):
        spb.decode_payload(raw[:-3])
