"""The MQTT upstream's sans-io parts: its own encoding of user properties matches paho's, and
the topic layout."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.telemetry.model import Compression, MessageKind, StoredMessage
from actors.telemetry.mqtt_upstream import (
    _UserProperties,
    desired_topic,
    message_id,
    reported_topic,
    telemetry_filter,
    telemetry_topic,
    user_properties,
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


@pytest.mark.parametrize(
    ("ids", "encoding", "extra"),
    [
        ({}, None, []),
        (
            {"message_id": "m-1", "batch_id": "b", "chunk_id": "c"},
            "zstd",
            [
                ("content_encoding", "zstd"),
                ("spotflow_message_id", "m-1"),
                ("batch_id", "b"),
                ("chunk_id", "c"),
            ],
        ),
        ({"batch_slice_id": ""}, None, [("batch_slice_id", "")]),
    ],
)
def test_user_properties_of_a_message(
    ids: dict[str, str], encoding: str | None, extra: list[tuple[str, str]]
) -> None:
    """A message's properties: message_id and ts, then what it has, as paho encodes them."""
    message = StoredMessage(
        seq=12345,
        stream_group="g",
        stream="s",
        stream_seq=7,
        message_id=ids.get("message_id"),
        batch_id=ids.get("batch_id"),
        batch_slice_id=ids.get("batch_slice_id"),
        chunk_id=ids.get("chunk_id"),
        kind=MessageKind.MESSAGE,
        compression=Compression.UNCOMPRESSED,
        timestamp=1733400000.25,
        payload=b"x",
        state="pending",
    )
    pairs = [("message_id", "press1/12345"), ("ts", "1733400000.25"), *extra]
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.UserProperty = pairs
    ours = user_properties("press1", message, encoding)
    assert ours.pack() == theirs.pack()
    assert ours.UserProperty == pairs


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
