"""``MqttBridge``: the line on the plant's MQTT broker (Unified Namespace or Sparkplug B).

Options (the ``[actor.options]`` table, read into ``BridgeConfig``)::

    [actor.options]
    host = "mqtt.plant.example"
    port = 8883
    namespace = "acme/plant1/assembly/line3"   # enterprise/site/area/line
    tls = true
    ca_file = "/etc/linebus/plant-ca.pem"
    username = "line3"
    password_file = "/etc/linebus/mqtt-password"  # or password_env; never in the config
    events = ["press1.", "fr1.result"]          # event prefixes published under the namespace
    qos = { "fr1." = 1 }                        # QoS per prefix (default 0)
    state_events = ["state"]                    # <service>.state -> retained <ns>/<service>/state
    expose = ["press1.start", "fr1.*"]          # commands reachable from MQTT
    profile = "uns"                             # or "sparkplug"

The bridge is an ordinary actor: it listens to the line with a bus client of its own (presence,
the configured events, each actor's state events) and calls commands for MQTT requests with that
same client, under its own identity. What goes to MQTT is the profile's business
(``UnsProfile`` here, ``actors.mqtt.edge.SparkplugProfile``); the MQTT connection is
``actors.mqtt.link.MqttLink``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes

from actors.mqtt import uns
from actors.mqtt.config import BridgeConfig
from actors.mqtt.link import MqttLink, Will, properties
from actors.mqtt.requests import Exposure, call, error_body
from bus._calls import TrackedEvent
from bus.actor import Actor, command
from bus.aio import AsyncClient
from bus.backoff import EQUAL_JITTER, Backoff
from bus.client import KeysArg
from bus.errors import BusError, InvalidArguments
from bus.options import from_table

__all__ = ["ACTOR", "MqttBridge", "Profile", "UnsProfile"]


class Profile(Protocol):
    """What a profile decides: MQTT subscriptions, will, and what each line change becomes."""

    clean_start: bool

    def subscriptions(self) -> list[tuple[str, int]]: ...
    def will(self) -> Will | None: ...
    def last_words(self) -> list[tuple[str, bytes, int, bool]]: ...
    def on_connected(self, session_present: bool) -> None: ...
    def on_presence(self, service: str, row: dict[str, Any]) -> None: ...
    def on_state(self, service: str, event: TrackedEvent) -> None: ...
    def on_event(self, event: TrackedEvent) -> None: ...
    def on_message(self, message: mqtt.MQTTMessage) -> None: ...


class MqttBridge(Actor):
    """The line on the plant's MQTT broker: presence, state and chosen events under the
    line's namespace (retained where they are state), the bridge's death as its MQTT will, and
    exposed commands callable by MQTT 5 request/response; or, with ``profile = "sparkplug"``,
    the line as a Sparkplug B edge node with one device per actor."""

    kind = "mqtt"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.config = from_table(BridgeConfig, self.options, f"mqtt {name}", noun="option")
        self.exposure = Exposure(self.config.expose)
        #: The line as last seen: presence rows and last state envelopes, by service.
        self.presence: dict[str, dict[str, Any]] = {}
        self.states: dict[str, dict[str, Any]] = {}
        #: Commands each service declares (from ``describe``), for Sparkplug's DBIRTH.
        self.commands_of: dict[str, list[str]] = {}
        self.counters = {"events": 0, "requests": 0, "refused": 0, "dropped_requests": 0}
        self.bus: AsyncClient | None = None
        self.link: MqttLink | None = None
        self.profile: Profile = self._make_profile()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._state_watch: set[str] = set()

    def _make_profile(self) -> Profile:
        if self.config.profile == "sparkplug":
            from actors.mqtt.edge import SparkplugProfile

            return SparkplugProfile(self)
        return UnsProfile(self)

    # --- lifecycle --------------------------------------------------------------------------

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        keys: KeysArg = self.settings.keys if self.settings.keys is not None else False
        self.bus = AsyncClient(
            self.settings.endpoint,
            subscribe_endpoint=self.settings.subscribe_endpoint,
            timeout=self.config.command_timeout_s,
            keys=keys,
        )
        self.bus.open()
        profile = self.profile
        self.link = MqttLink(
            self.config,
            loop,
            subscriptions=profile.subscriptions(),
            will=profile.will,
            on_connect=profile.on_connected,
            on_disconnect=lambda reason: None,
            on_message=profile.on_message,
            clean_start=profile.clean_start,
            log=self.log,
        )
        self.spawn(self._watch_line())
        self.link.start()

    async def on_stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.link is not None:
            link = self.link
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: link.stop(self.profile.last_words())
            )
        if self.bus is not None:
            await self.bus.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the bridge cancels when it stops."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the line side ----------------------------------------------------------------------

    async def _watch_line(self) -> None:
        """Follow presence and the configured events; on a bus failure, start again."""
        assert self.bus is not None
        backoff = Backoff(0.5, 5.0, jitter=EQUAL_JITTER)
        while True:
            try:
                sub = self.bus.subscribe("presence.", *self.config.events)
                try:
                    await sub.wait_ready(10.0)
                    for row in await self.bus.services():
                        self._presence(str(row["name"]), dict(row))
                    backoff.reset()
                    async for event in sub:
                        self._line_event(event)
                finally:
                    sub.close()
            except BusError as exc:
                self.log.info("mqtt_bridge_line_retry", error=str(exc))
                await asyncio.sleep(backoff.next_delay())

    def _line_event(self, event: TrackedEvent) -> None:
        if event.topic.startswith("presence."):
            if isinstance(event.data, dict):
                self._presence(event.topic.removeprefix("presence."), dict(event.data))
            return
        if event.topic.startswith("_probe."):
            return
        self.counters["events"] += 1
        self.profile.on_event(event)

    def _presence(self, service: str, row: dict[str, Any]) -> None:
        if service == self.name:
            return
        row = {
            "service": service,
            "kind": row.get("kind", ""),
            "state": row.get("state", ""),
            "reason": row.get("reason", ""),
            "since": row.get("since", time.time()),
        }
        self.presence[service] = row
        if row["state"] == "up" and service not in self._state_watch and self.config.state_events:
            self._state_watch.add(service)
            self.spawn(self._watch_state(service))
        if row["state"] == "up" and self.config.profile == "sparkplug":
            self.spawn(self._describe_then_presence(service, row))
            return
        self.profile.on_presence(service, row)

    async def _describe_then_presence(self, service: str, row: dict[str, Any]) -> None:
        assert self.bus is not None
        try:
            described = await self.bus.describe(service, timeout=5.0)
            self.commands_of[service] = sorted(described.get("commands", {}))
        except BusError as exc:
            self.log.info("mqtt_bridge_describe_failed", service=service, error=str(exc))
        self.profile.on_presence(service, row)

    async def _watch_state(self, service: str) -> None:
        """Follow ``<service>.<state event>``: its last value is the actor's state."""
        assert self.bus is not None
        prefixes = [f"{service}.{name}" for name in self.config.state_events]
        backoff = Backoff(0.5, 5.0, jitter=EQUAL_JITTER)
        while True:
            try:
                sub = self.bus.subscribe(*prefixes)
                try:
                    async for event in sub:
                        if event.topic in prefixes:
                            self.states[service] = envelope(event)
                            self.profile.on_state(service, event)
                finally:
                    sub.close()
            except BusError as exc:
                self.log.info("mqtt_bridge_state_retry", service=service, error=str(exc))
                await asyncio.sleep(backoff.next_delay())

    # --- commands on the bus ----------------------------------------------------------------

    @command(concurrent=True)
    def status(self) -> dict[str, Any]:
        """The bridge's connection and counters: ``connected``, ``connects`` (MQTT sessions
        begun), ``broker`` (host:port), ``namespace``, ``profile``, ``events`` bridged,
        ``requests`` served, ``refused`` (not exposed), ``dropped_requests`` (no response
        topic, bad topic)."""
        link = self.link
        return {
            "connected": bool(link and link.connected),
            "connects": link.connects if link else 0,
            "broker": f"{self.config.host}:{self.config.port}",
            "namespace": self.config.root,
            "profile": self.config.profile,
            **self.counters,
        }


def envelope(event: TrackedEvent) -> dict[str, Any]:
    """What a linebus event becomes on MQTT: topic, source, epoch, seq, ts and data."""
    return {
        "topic": event.topic,
        "src": event.src,
        "epoch": event.epoch,
        "seq": event.seq,
        "ts": event.ts,
        "data": event.data,
    }


class UnsProfile:
    """The Unified Namespace topics of ``actors.mqtt.uns`` (see there)."""

    #: A persistent session: commands published while the bridge was away are delivered.
    clean_start = False

    def __init__(self, bridge: MqttBridge) -> None:
        self.bridge = bridge
        self.config = bridge.config
        self.root = bridge.config.root
        self.qos = {prefix: int(level) for prefix, level in bridge.config.qos.items()}

    def _publish(self, topic: str, value: Any, qos: int, retain: bool) -> None:
        link = self.bridge.link
        if link is not None:
            link.publish(topic, uns.encode(value, self.config.format), qos=qos, retain=retain)

    def subscriptions(self) -> list[tuple[str, int]]:
        # Requests need MQTT 5 properties (response topic, correlation data).
        return [(uns.command_filter(self.root), 1)] if self.config.protocol == "5" else []

    def will(self) -> Will:
        return Will(uns.status_topic(self.root), uns.encode({"online": False}, "json"))

    def last_words(self) -> list[tuple[str, bytes, int, bool]]:
        offline = uns.encode({"online": False, "reason": "stopped"}, "json")
        return [(uns.status_topic(self.root), offline, 1, True)]

    def on_connected(self, session_present: bool) -> None:
        # The broker may have restarted without its retained messages: say everything again.
        online = {"online": True, "since": time.time(), "bridge": self.bridge.name}
        link = self.bridge.link
        if link is not None:
            link.publish(uns.status_topic(self.root), uns.encode(online, "json"), 1, True)
        for service, row in self.bridge.presence.items():
            self.on_presence(service, row)
        for service, state in self.bridge.states.items():
            self._publish(uns.state_topic(self.root, service), state, 1, True)

    def on_presence(self, service: str, row: dict[str, Any]) -> None:
        self._publish(uns.presence_topic(self.root, service), row, 1, True)

    def on_state(self, service: str, event: TrackedEvent) -> None:
        self._publish(uns.state_topic(self.root, service), envelope(event), 1, True)

    def on_event(self, event: TrackedEvent) -> None:
        qos = uns.qos_for(event.topic, self.qos)
        self._publish(uns.event_topic(self.root, event.topic), envelope(event), qos, False)

    # --- requests ---------------------------------------------------------------------------

    def on_message(self, message: mqtt.MQTTMessage) -> None:
        bridge = self.bridge
        target = uns.parse_command(self.root, message.topic)
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        if target is None or not response_topic:
            bridge.counters["dropped_requests"] += 1
            bridge.log.info("mqtt_request_dropped", topic=message.topic, why="no response topic")
            return
        correlation = getattr(props, "CorrelationData", None)
        service, name = target
        reply = Responder(bridge, str(response_topic), correlation)
        try:
            bridge.exposure.check(service, name)
            args = uns.decode_json(bytes(message.payload))
            if args is not None and not isinstance(args, dict):
                raise InvalidArguments.about(
                    "the request payload must be a JSON object (the arguments)",
                    argument=None,
                    problem="type",
                    expected="map",
                )
        except BusError as exc:
            bridge.counters["refused"] += 1
            reply.send(error_body(exc))
            return
        except ValueError as exc:
            reply.send(error_body(InvalidArguments(f"request payload is not JSON: {exc}")))
            return
        bridge.counters["requests"] += 1
        bridge.spawn(self._serve(service, name, args, reply))

    async def _serve(self, service: str, name: str, args: Any, reply: Responder) -> None:
        bus = self.bridge.bus
        assert bus is not None
        outcome = await call(
            bus,
            service,
            name,
            args,
            timeout=self.config.command_timeout_s,
            progress=lambda data: reply.send({"type": "progress", "data": data}),
        )
        reply.send(outcome.body)


class Responder:
    """Sends the messages answering one MQTT 5 request to its response topic, each with its
    correlation data and a ``type`` user property (``progress``, ``reply``, ``error``)."""

    def __init__(self, bridge: MqttBridge, topic: str, correlation: bytes | None) -> None:
        self.bridge = bridge
        self.topic = topic
        self.correlation = correlation

    def send(self, body: dict[str, Any]) -> None:
        link = self.bridge.link
        if link is None:
            return
        props = properties(PacketTypes.PUBLISH)
        if self.correlation is not None:
            props.CorrelationData = self.correlation
        props.UserProperty = [("type", str(body.get("type", "")))]
        link.publish(self.topic, uns.encode(body, "json"), qos=1, properties=props)


ACTOR = MqttBridge
