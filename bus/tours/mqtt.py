"""The plant-uplink part of ``linebus demo``: the line as the plant's MQTT broker shows it.

A paho client stands in for the plant (a dashboard, the MES): it subscribes once under the
line's namespace and sees the bridge's status and each actor's presence (retained), an event
published on the line, and it calls an exposed command by MQTT 5 request/response (progress and
reply come back on its response topic) and a command the bridge does not expose (refused).
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes

from actors.mqtt.link import properties
from bus.client import Client
from bus.testing import wait_until
from bus.tours import Say

__all__ = ["tour"]


class _Plant:
    """A paho MQTT 5 client keeping what it receives."""

    def __init__(self, host: str, port: int) -> None:
        self.received: list[tuple[str, Any, bool, str]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        wait_until(self.client.is_connected, 10, "the plant client connected")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        kind = dict(getattr(props, "UserProperty", []) or []).get("type", "")
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = message.payload
        with self.lock:
            self.received.append((message.topic, body, bool(message.retain), kind))

    def seen(self, topic: str) -> list[tuple[str, Any, bool, str]]:
        with self.lock:
            return [item for item in self.received if item[0] == topic]

    def request(self, topic: str, args: dict[str, Any]) -> list[tuple[str, Any, bool, str]]:
        reply_to = f"plant/replies/{uuid.uuid4().hex[:8]}"
        self.client.subscribe(reply_to, qos=1)
        props = properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_to
        props.CorrelationData = b"demo-1"
        wait_until(lambda: self.client.is_connected(), 5, "connected")
        self.client.publish(topic, json.dumps(args), qos=1, properties=props)
        wait_until(
            lambda: any(kind in ("reply", "error") for *_, kind in self.seen(reply_to)),
            30,
            f"the answer to {topic}",
        )
        return self.seen(reply_to)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tour(bus: Client, service: str, say: Say) -> None:
    """Show the line from the plant side of the bridge ``service``."""
    status = wait_until(
        lambda: (s := bus.call(service, "status"))["connected"] and s, 30, "the bridge connected"
    )
    ns = status["namespace"]
    host, _, port = status["broker"].rpartition(":")
    say(f"  the bridge is connected to the plant's MQTT broker {status['broker']}")
    say(f"  the line's namespace there: {ns}/ ({status['profile']} profile)")
    plant = _Plant(host, int(port))
    try:
        plant.client.subscribe(f"{ns}/#", qos=1)
        wait_until(lambda: plant.seen(f"{ns}/status"), 10, "the bridge's status")
        wait_until(lambda: any(t.endswith("/presence") for t, *_ in plant.received), 10, "presence")
        say("  a plant client subscribed once to the namespace; retained, it got at once:")
        with plant.lock:
            retained = sorted({(t, json.dumps(b)) for t, b, r, _ in plant.received if r})
        for topic, body in retained:
            say(f"    {topic}  {body[:90]}")
        services = [row["name"] for row in bus.services() if row.get("kind") == "echo"]
        if not services:
            return
        press = services[0]
        bus.call(press, "emit", event="tick", data={"value": 21.5})
        event_topic = f"{ns}/{press}/event/tick"
        wait_until(lambda: plant.seen(event_topic), 10, event_topic)
        say(f"  {press} published an event on the line; the plant got {event_topic}:")
        say(f"    {json.dumps(plant.seen(event_topic)[-1][1])}")
        say(f"  an MQTT 5 request to {ns}/{press}/cmd/work (response topic, correlation data):")
        for _, body, _, kind in plant.request(
            f"{ns}/{press}/cmd/work", {"steps": 3, "step_s": 0.2}
        ):
            say(f"    {kind:<8} {json.dumps(body)}")
        say(f"  a command the bridge does not expose ({ns}/{press}/cmd/exit):")
        answer = plant.request(f"{ns}/{press}/cmd/exit", {})[-1][1]
        say(f"    error {answer['code']}: {answer['message']}")
    finally:
        plant.close()
