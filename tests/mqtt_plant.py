"""A plant-side MQTT client for the uplink tests: subscribes, records what arrives, waits for
messages, and makes MQTT 5 requests (response topic + correlation data)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bus.mosquitto import Mosquitto
from tests.conftest import scaled, wait_until


@dataclass(frozen=True)
class Received:
    """One message as the plant saw it."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    correlation: bytes | None
    user: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.payload)


class Plant:
    """A paho MQTT 5 client on ``broker`` that keeps every message it receives."""

    def __init__(self, broker: Mosquitto, client_id: str | None = None) -> None:
        self.broker = broker
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"plant-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._acks: set[int] = set()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda _c, _u, mid, _r, _p: self._acks.add(mid)
        self.client.connect(broker.host, broker.port, clean_start=True)
        self.client.loop_start()
        wait_until(self.client.is_connected, scaled(10), "plant client connected")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        user = dict(getattr(props, "UserProperty", []) or []) if props else {}
        correlation = getattr(props, "CorrelationData", None) if props else None
        item = Received(
            message.topic, bytes(message.payload), bool(message.retain), message.qos,
            correlation, user,
        )  # fmt: skip
        with self._lock:
            self.received.append(item)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK."""
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        wait_until(lambda: mid in self._acks, scaled(10), f"SUBACK for {topic_filter}")

    def messages(self, predicate: Callable[[Received], bool] | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.received if predicate is None or predicate(m)]

    def wait_for(
        self, predicate: Callable[[Received], bool], what: str, timeout: float = 10.0
    ) -> Received:
        """The first message matching ``predicate`` (waiting for it)."""

        def found() -> Received | None:
            matches = self.messages(predicate)
            return matches[0] if matches else None

        return wait_until(
            found, scaled(timeout), lambda: f"{what}; got topics {self.topics()[-20:]}"
        )

    def wait_topic(self, topic: str, timeout: float = 10.0, **where: Any) -> Received:
        """The first message on ``topic`` whose JSON payload has the items of ``where``."""

        def match(m: Received) -> bool:
            if m.topic != topic:
                return False
            if not where:
                return True
            try:
                body = m.json()
            except ValueError:
                return False
            return isinstance(body, dict) and all(body.get(k) == v for k, v in where.items())

        return self.wait_for(match, f"{topic} with {where}", timeout)

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages()]

    def send_request(self, topic: str, args: Any = None) -> tuple[str, bytes]:
        """Publish an MQTT 5 request (QoS 1): its ``(response topic, correlation data)``."""
        correlation = uuid.uuid4().bytes
        response_topic = f"plant/replies/{uuid.uuid4().hex}"
        self.subscribe(response_topic)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        props.CorrelationData = correlation
        payload = b"" if args is None else json.dumps(args).encode()
        self.client.publish(topic, payload, qos=1, properties=props)
        return response_topic, correlation

    def answers(
        self, request: tuple[str, bytes], timeout: float = 10.0
    ) -> tuple[list[Received], Received]:
        """The answers to ``request`` (``send_request``): ``(progress, final reply or error)``."""
        response_topic, correlation = request

        def mine(m: Received) -> bool:
            return m.topic == response_topic and m.correlation == correlation

        final = self.wait_for(
            lambda m: mine(m) and m.user.get("type") in ("reply", "error"),
            f"the answer on {response_topic}",
            timeout,
        )
        progress = [m for m in self.messages(mine) if m.user.get("type") == "progress"]
        return progress, final

    def request(
        self, topic: str, args: Any = None, timeout: float = 10.0
    ) -> tuple[list[Received], Received]:
        """An MQTT 5 request on ``topic``: ``(progress messages, final reply or error)``."""
        return self.answers(self.send_request(topic, args), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
