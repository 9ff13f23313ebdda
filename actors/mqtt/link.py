"""``MqttLink``: one paho-mqtt client kept connected to the plant broker, reconnecting with
``bus.backoff.Backoff``.

paho runs in a thread of its own (``client.loop`` in a loop), which connects, reconnects after a
failure with capped exponential back-off and jitter, re-subscribes on every CONNACK, and hands
incoming messages and connection changes to the actor's asyncio loop
(``call_soon_threadsafe``). ``publish`` may be called from any thread (paho locks its queues).

MQTT 5 by default, 3.1.1 as a fallback for old brokers; TLS (CA, client certificate) and
username/password as configured. The will is asked for before every connection attempt
(``will()``): the Sparkplug NDEATH's ``bdSeq`` changes per connection.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.mqtt.config import BridgeConfig
from bus.backoff import EQUAL_JITTER, Backoff

__all__ = ["MqttLink", "Will", "properties"]

#: How long one ``client.loop`` call waits for traffic; bounds how fast ``stop`` is noticed.
_LOOP_S = 0.2


def properties(packet_type: int) -> Properties:
    """MQTT 5 properties of a packet (``PacketTypes.PUBLISH``, ``CONNECT``)."""
    # paho-mqtt 2.x ships py.typed but leaves Properties.__init__ unannotated.
    made: Properties = Properties(packet_type)  # type: ignore[no-untyped-call]
    return made


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes when the bridge's connection dies uncleanly."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttLink:
    """A paho client connected (and reconnected) to the broker in a thread of its own.

    Args:
        config: The bridge's options (address, protocol, credentials, TLS, session, back-off).
        loop: The actor's event loop; ``on_connect``, ``on_disconnect`` and ``on_message`` run
            there.
        subscriptions: ``(topic filter, qos)`` subscribed on every CONNACK.
        will: Called before each connection attempt: the will of that connection, or None.
        clean_start: Start without the broker's stored session (Sparkplug requires it); else
            the session (subscriptions, queued QoS 1 messages) is resumed and kept for
            ``session_expiry_s``.
    """

    def __init__(
        self,
        config: BridgeConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        subscriptions: list[tuple[str, int]],
        will: Callable[[], Will | None],
        on_connect: Callable[[bool], object],
        on_disconnect: Callable[[str], object],
        on_message: Callable[[mqtt.MQTTMessage], object],
        clean_start: bool = False,
        log: Any = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.subscriptions = subscriptions
        self.will = will
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_message = on_message
        self.clean_start = clean_start
        self.log = log or structlog.get_logger()
        self.v5 = config.protocol == "5"
        self.connected = False
        self.connects = 0
        self._accepted = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        config = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.effective_client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else self.clean_start,
        )
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set(
                ca_certs=config.ca_file,
                certfile=config.cert_file,
                keyfile=config.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        # Everything queued while disconnected goes out after the reconnect (paho keeps it).
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (the first attempt at once)."""
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    def stop(self, last: Sequence[tuple[str, bytes, int, bool]] = ()) -> None:
        """Publish ``last`` (``(topic, payload, qos, retain)``: an offline status, an NDEATH)
        if connected, disconnect cleanly (no will), and end the thread."""
        if self.connected:
            infos = [(self.client.publish(t, p, qos=q, retain=r), q) for t, p, q, r in last]
            for info, qos in infos:
                if qos > 0:
                    info.wait_for_publish(timeout=2.0)
            self.client.disconnect()
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.connected = False

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Queue a message (sent now if connected, else after the reconnect for QoS > 0)."""
        self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        config = self.config
        backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, jitter=EQUAL_JITTER)
        while not self._stopping.is_set():
            try:
                self._connect()
            except (OSError, ValueError, ssl.SSLError) as exc:
                self.log.info("mqtt_connect_failed", error=str(exc), host=config.host)
                self._stopping.wait(backoff.next_delay())
                continue
            while not self._stopping.is_set():
                if self.client.loop(timeout=_LOOP_S) != mqtt.MQTT_ERR_SUCCESS:
                    break
            if self._accepted:  # this connection got as far as a CONNACK: start afresh
                backoff.reset()
            if not self._stopping.is_set():
                self._stopping.wait(backoff.next_delay())

    def _connect(self) -> None:
        config = self.config
        self._accepted = False
        will = self.will()
        self.client.will_clear()
        if will is not None:
            self.client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        if self.v5:
            connect = properties(PacketTypes.CONNECT)
            connect.SessionExpiryInterval = 0 if self.clean_start else int(config.session_expiry_s)
            self.client.connect(
                config.host,
                config.port,
                keepalive=config.keepalive_s,
                clean_start=self.clean_start,
                properties=connect,
            )
        else:
            self.client.connect(config.host, config.port, keepalive=config.keepalive_s)

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            self.log.warning("mqtt_refused", reason=str(reason), host=self.config.host)
            return
        self.connected = self._accepted = True
        self.connects += 1
        for topic_filter, qos in self.subscriptions:
            client.subscribe(topic_filter, qos=qos)
        session_present = bool(getattr(flags, "session_present", False))
        self.log.info("mqtt_connected", host=self.config.host, session_present=session_present)
        self.loop.call_soon_threadsafe(self.on_connect, session_present)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        was = self.connected
        self.connected = False
        if was and not self._stopping.is_set():
            self.log.info("mqtt_disconnected", reason=str(reason))
            self.loop.call_soon_threadsafe(self.on_disconnect, str(reason))

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.on_message, message)
