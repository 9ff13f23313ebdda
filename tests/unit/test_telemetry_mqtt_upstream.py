"""The MQTT upstream's sans-io parts: its own encoding of user properties matches paho's, and
the topic layout."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.telemetry.mqtt_upstream import (
    _UserProperties,
    desired_topic,
    message_id,
    reported_topic,
    telemetry_filter,
    telemetry_topic,
)


@pytest.mark.parametrize(
    "pairs",
    [
        [("message_id", "press1/12345"), ("ts", "1733400000.25")],
        [("k" * 70, "é" * 40)],  # a body over 127 bytes: a two-byte length
        [("a", "")],
    ],
    ids=["usual", "long and not ASCII", "empty value"],
)
def test_user_properties_encode_as_paho_does(pairs: list[tuple[str, str]]) -> None:
    """The bytes on the wire are paho's own, and the properties still read as paho's."""
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.UserProperty = pairs
    ours = _UserProperties(pairs)
    assert ours.pack() == theirs.pack()
    assert ours.UserProperty == pairs
    decoded = Properties(PacketTypes.PUBLISH)
    decoded.unpack(ours.pack())
    assert decoded.UserProperty == pairs


def test_topic_layout() -> None:
    """Telemetry and twin topics sit under <namespace>/<device>/; unsafe characters become _."""
    root = "acme/p1/assembly/line3"
    assert (
        telemetry_topic(root, "dev", "line3", "temp/a+b") == f"{root}/dev/telemetry/line3/temp_a_b"
    )
    assert telemetry_filter(root) == f"{root}/+/telemetry/#"
    assert desired_topic(root, "dev") == f"{root}/dev/twin/desired"
    assert reported_topic(root, "dev") == f"{root}/dev/twin/reported"
    assert message_id("dev", 42) == "dev/42"
