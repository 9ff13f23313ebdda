"""``MqttUpstream``: the forwarder's upstream on the plant's MQTT broker (MQTT 5, paho-mqtt).

Topics, under the line's namespace ``<root>`` (the ``mqtt`` bridge's ``enterprise/site/area/line``)
and the device id (docs/INGEST_PROTOCOL.md, "The MQTT upstream"):

| topic | QoS | retained | payload |
|---|---|---|---|
| ``<root>/<device>/telemetry/<stream_group>/<stream>`` | 1 | no | one stored message's payload |
| ``<root>/<device>/twin/desired`` | 1 | yes | ``{"version": n, "values": {...}}`` (set by the plant) |
| ``<root>/<device>/twin/reported`` | 1 | yes | ``{"version": n, "properties": {...}}`` (merged) |

Each telemetry PUBLISH carries MQTT 5 user properties: ``message_id`` (``<device>/<seq>``, unique
per device: a consumer drops a redelivery by it), ``ts`` (epoch seconds, when it was stored),
``content_encoding`` when the stream is compressed, and the Spotflow ids that are set
(``spotflow_message_id``, ``batch_id``, ``batch_slice_id``, ``chunk_id``).

Delivery is at least once: a message is marked sent only after its PUBACK (the broker holds it),
so a message whose PUBACK was lost to a cut, a broker restart or a kill -9 is published again,
under the same ``message_id``. The session is persistent (``clean_start=False``, a fixed client
id, ``session_expiry_s``). paho runs in a thread of its own that connects and reconnects with
``bus.backoff``; the forwarder's calls block until it is connected (or the forwarder stops).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.telemetry.codec import compress
from actors.telemetry.config import ForwarderConfig, MqttUpstreamConfig
from actors.telemetry.model import (
    DesiredProperties,
    Registration,
    ReportedUpdate,
    StoredMessage,
    Upload,
)
from actors.telemetry.store import TelemetryStore
from actors.telemetry.upstream import UploadResult
from bus.backoff import EQUAL_JITTER, Backoff
from bus.errors import BadRequest, Unavailable

__all__ = [
    "MqttUpstream",
    "desired_topic",
    "message_id",
    "reported_topic",
    "telemetry_filter",
    "telemetry_topic",
    "user_properties",
]

log = structlog.get_logger()

_LOOP_S = 0.2  # one paho loop call waits this long for traffic: bounds how fast close() is seen
_POLL_S = 0.2  # waiters re-check the stop flag this often
_NO_PUBACK = "no PUBACK (disconnected or timed out)"

#: What may not stand in a topic level, and what it becomes there.
_LEVEL_UNSAFE = str.maketrans({"+": "_", "#": "_", "/": "_", "\0": "_"})


def _level(text: str) -> str:
    return text.translate(_LEVEL_UNSAFE) or "_"


def telemetry_topic(root: str, device_id: str, stream_group: str, stream: str) -> str:
    """Where the messages of one stream are published."""
    return f"{root}/{device_id}/telemetry/{_level(stream_group)}/{_level(stream)}"


def telemetry_filter(root: str, device_id: str = "+") -> str:
    """The subscription that receives the telemetry of one device (default: every device)."""
    return f"{root}/{device_id}/telemetry/#"


def desired_topic(root: str, device_id: str) -> str:
    """The retained desired properties of a device (written by the plant)."""
    return f"{root}/{device_id}/twin/desired"


def reported_topic(root: str, device_id: str) -> str:
    """The retained reported properties of a device (written by the device)."""
    return f"{root}/{device_id}/twin/reported"


def message_id(device_id: str, seq: int) -> str:
    """The id a consumer deduplicates a message by: unique per device, the same on every resend."""
    return f"{device_id}/{seq}"


def _properties(packet_type: int) -> Properties:
    # paho-mqtt 2.x ships py.typed but leaves Properties.__init__ unannotated.
    made: Properties = Properties(packet_type)  # type: ignore[no-untyped-call]
    return made


class _UserProperties(Properties):
    """PUBLISH properties holding only user properties, encoded once here.

    paho's ``Properties.pack`` walks every property name MQTT 5 defines, and runs again for
    each send: measured, it halves paho's QoS 1 publishing rate. User property (identifier
    0x26) = a pair of UTF-8 strings, each a 2-byte length and the bytes (MQTT 5.0 §3.3.2.3.7).
    paho only calls ``pack`` on it; ``UserProperty`` decodes the pairs again when read.
    """

    def __init__(self, pairs: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        # Not Properties.__init__ nor its validating __setattr__ (a third of the forwarder's
        # time per message, profiled): the tables it would build are the class's, shared.
        # ``body``: pairs already encoded (``_pair`` each), by a caller that encodes their
        # constant parts once.
        if pairs:
            body = b"".join(_pair(key, value) for key, value in pairs)
        self.__dict__["_packed"] = _varint(len(body)) + body

    @property
    def UserProperty(self) -> list[tuple[str, str]]:
        """The (key, value) pairs, decoded from the encoding."""
        packed: bytes = self.__dict__["_packed"]
        at = 0
        while packed[at] & 0x80:  # the body's length, a variable byte integer
            at += 1
        at += 1
        pairs = []
        while at < len(packed):  # 0x26, then two (2-byte length, UTF-8) strings
            key_len = int.from_bytes(packed[at + 1 : at + 3], "big")
            key = packed[at + 3 : at + 3 + key_len].decode()
            at += 3 + key_len
            value_len = int.from_bytes(packed[at : at + 2], "big")
            pairs.append((key, packed[at + 2 : at + 2 + value_len].decode()))
            at += 2 + value_len
        return pairs

    def pack(self) -> bytes:
        """The encoded properties (length and body)."""
        packed: bytes = self.__dict__["_packed"]
        return packed


#: What ``Properties(PacketTypes.PUBLISH)`` holds before any property is set: read-only tables,
#: class attributes of ``_UserProperties`` (for paho's ``__str__``, should its logging print one).
_PUBLISH_TABLES = dict(_properties(PacketTypes.PUBLISH).__dict__)
for _name, _value in _PUBLISH_TABLES.items():
    type.__setattr__(_UserProperties, _name, _value)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _pair(key: str, value: str) -> bytes:
    """One user property: its identifier, then the key and the value as UTF-8 strings."""
    return b"\x26" + _utf8(key) + _utf8(value)


_MESSAGE_ID_PAIR = _pair("message_id", "")[:-2]  # up to the value's length
_TS_PAIR = _pair("ts", "")[:-2]
_ID_KEYS = ("spotflow_message_id", "batch_id", "batch_slice_id", "chunk_id")
_NO_IDS = (None, None, None, None)


def _varint(n: int) -> bytes:
    """MQTT's variable byte integer (MQTT 5.0 §1.5.5)."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def user_properties(
    device_id: str,
    message: StoredMessage,
    encoding: str | None,
    ts_parts: dict[float, bytes] | None = None,
) -> Properties:
    """The MQTT 5 user properties of one telemetry message, encoded once: ``message_id``,
    ``ts``, then ``content_encoding`` when compressed and the Spotflow ids that are set.

    The two that every message has are assembled from bytes encoded once (this runs for every
    message forwarded); ``ts_parts`` caches the ``ts`` pair by timestamp across the messages of
    an upload (a batch of readings shares one).
    """
    mid = f"{device_id}/{message.seq}".encode()  # message_id(device_id, seq)
    ts_part = None if ts_parts is None else ts_parts.get(message.timestamp)
    if ts_part is None:
        ts_raw = repr(message.timestamp).encode()
        ts_part = _TS_PAIR + len(ts_raw).to_bytes(2, "big") + ts_raw
        if ts_parts is not None:
            ts_parts[message.timestamp] = ts_part
    body = _MESSAGE_ID_PAIR + len(mid).to_bytes(2, "big") + mid + ts_part
    ids = (message.message_id, message.batch_id, message.batch_slice_id, message.chunk_id)
    if encoding or ids != _NO_IDS:  # rare: readings carry neither
        extra = [("content_encoding", encoding)] if encoding else []
        extra += [
            (key, value) for key, value in zip(_ID_KEYS, ids, strict=True) if value is not None
        ]
        body += b"".join(_pair(key, value) for key, value in extra)
    return _UserProperties(body=body)


class MqttUpstream:
    """The ``upstream.Upstream`` calls over one persistent MQTT 5 session.

    Args:
        config: The forwarder's settings (``mqtt`` and ``device_id`` set; ``request_timeout_s``
            bounds the wait for a batch's PUBACKs; back-off of the reconnects).
        store: The store, for the merged reported properties.
        stop: Set when the forwarder stops: calls waiting for a connection give up.
        on_change: Called (from paho's thread) when the link comes up or newer desired
            properties arrive: the forwarder's ``notify``.
    """

    def __init__(
        self,
        config: ForwarderConfig,
        store: TelemetryStore,
        *,
        stop: threading.Event,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        if config.mqtt is None or config.device_id is None:
            raise ValueError("MqttUpstream needs ForwarderConfig.mqtt and device_id")
        self._config = config
        self._mqtt: MqttUpstreamConfig = config.mqtt
        self._device = config.device_id
        self._root = config.mqtt.root
        self._store = store
        self._stop = stop
        self._on_change = on_change
        self._desired_topic = desired_topic(self._root, self._device)
        self._lock = threading.Condition()
        self._connected = False
        self._refused: dict[int, str] = {}  # mid -> reason of a PUBACK with a failure code
        self._awaited = 0  # PUBACKs the waiter still expects (it is woken when none are left)
        self._desired: DesiredProperties | None = None
        self._desired_new = False
        self._closing = threading.Event()
        self.client = self._make_client()
        self._thread = threading.Thread(target=self._run, name="telemetry-mqtt", daemon=True)
        self._thread.start()

    def _make_client(self) -> mqtt.Client:
        cfg = self._mqtt
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"linebus-telemetry-{self._device}",
            protocol=mqtt.MQTTv5,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            client.tls_set(
                ca_certs=cfg.ca_file,
                certfile=cfg.cert_file,
                keyfile=cfg.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(0)  # a batch is bounded by max_batch_messages anyway
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # --- the connection thread --------------------------------------------------------------

    def _run(self) -> None:
        config = self._config
        backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, jitter=EQUAL_JITTER)
        cfg = self._mqtt
        while not self._closing.is_set():
            connect = _properties(PacketTypes.CONNECT)
            connect.SessionExpiryInterval = int(cfg.session_expiry_s)
            try:
                self.client.connect(
                    cfg.host,
                    cfg.port,
                    keepalive=cfg.keepalive_s,
                    clean_start=False,
                    properties=connect,
                )
            except (OSError, ValueError, ssl.SSLError) as exc:
                log.info("telemetry_mqtt_connect_failed", error=str(exc), host=cfg.host)
                self._closing.wait(backoff.next_delay())
                continue
            accepted = False
            while not self._closing.is_set():
                if self.client.loop(timeout=_LOOP_S) != mqtt.MQTT_ERR_SUCCESS:
                    break
                accepted = accepted or self._connected
            if self._closing.is_set():
                self._finish()
            self._set_connected(False)
            if accepted:  # this connection got as far as a CONNACK: start afresh
                backoff.reset()
            if not self._closing.is_set():
                self._closing.wait(backoff.next_delay())
        # paho also keeps a loopback socket pair to wake its loop, closed only by its private
        # _reset_sockets (or __del__, too late for a ResourceWarning-free shutdown); this
        # closes the MQTT socket too if the broker did not let go in time.
        self.client._reset_sockets()

    def _finish(self) -> None:
        """Let paho write the DISCONNECT ``close`` queued (it then closes the socket)."""
        for _ in range(20):
            if self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break

    def _set_connected(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected
            self._lock.notify_all()

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("telemetry_mqtt_refused", reason=str(reason), host=self._mqtt.host)
            return
        client.subscribe(self._desired_topic, qos=1)
        log.info(
            "telemetry_mqtt_connected",
            host=self._mqtt.host,
            session_present=bool(getattr(flags, "session_present", False)),
        )
        self._set_connected(True)
        self._on_change()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if self._connected and not self._closing.is_set():
            log.info("telemetry_mqtt_disconnected", reason=str(reason))
        self._set_connected(False)

    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any, _props: Any
    ) -> None:
        with self._lock:
            if reason.is_failure:  # "no matching subscribers" (16) is not a failure
                self._refused[mid] = str(reason)
            # Wake the waiter once its whole batch may be in, not on every PUBACK (that costs a
            # thread switch per message); it checks the messages themselves on waking.
            self._awaited -= 1
            if self._awaited <= 0:
                self._lock.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self._desired_topic or not message.payload:
            return  # an empty retained payload clears the topic: nothing desired
        try:
            body = json.loads(message.payload)
            desired = DesiredProperties(int(body["version"]), dict(body["values"]))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("telemetry_mqtt_bad_desired", topic=message.topic, error=str(exc))
            return
        with self._lock:
            if self._desired is None or desired.version > self._desired.version:
                self._desired, self._desired_new = desired, True
        self._on_change()

    # --- waiting ----------------------------------------------------------------------------

    def _wait_connected(self) -> None:
        """Block until the link is up; ``Unavailable`` when the forwarder stops first."""
        with self._lock:
            while not self._connected:
                if self._stop.is_set() or self._closing.is_set():
                    raise Unavailable(f"{self._config.upstream_url}: not connected")
                self._lock.wait(_POLL_S)

    def _publish_all(
        self, messages: Sequence[tuple[str, bytes, bool, Properties | None]]
    ) -> list[str | None]:
        """Publish QoS 1 and wait for the PUBACKs (up to ``request_timeout_s``, while connected).

        Returns:
            Per message: None when the broker acknowledged it, else why not.
        """
        self._wait_connected()
        infos = [
            self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
            for topic, payload, retain, props in messages
        ]
        deadline = time.monotonic() + self._config.request_timeout_s
        done = 0  # infos[:done] are acknowledged (PUBACKs come in order; a gap just waits)
        with self._lock:
            while done < len(infos):
                if _acknowledged(infos[done]):
                    done += 1
                    continue
                remaining = deadline - time.monotonic()
                if not self._connected or remaining <= 0 or self._closing.is_set():
                    break
                self._awaited = len(infos) - done
                self._lock.wait(min(remaining, _POLL_S))
            refused = {
                info.mid: self._refused.pop(info.mid) for info in infos if info.mid in self._refused
            }
        outcome: list[str | None] = []
        for info in infos:
            if info.mid in refused:
                outcome.append(refused[info.mid])
            elif _acknowledged(info):
                outcome.append(None)
            else:
                outcome.append(_NO_PUBACK)
        return outcome

    # --- the Upstream calls -----------------------------------------------------------------

    def provision(self, provisioning_token: str, device_id: str | None) -> Registration:
        """A local registration: the broker authenticates the connection, not a token."""
        return Registration(
            instance_url=self._config.upstream_url,
            device_id=self._device,
            workspace_id=self._root,
            registration_token="",
            expires_at=float(2**53),  # never: nothing to refresh
            provisioning_token=provisioning_token,
        )

    def refresh(self, registration: Registration) -> Registration:
        """Nothing to refresh: the same registration."""
        return registration

    def desired_properties(self, registration: Registration) -> DesiredProperties:
        """The newest desired properties the retained topic delivered (version 0: none yet)."""
        self._wait_connected()
        with self._lock:
            self._desired_new = False
            return self._desired or DesiredProperties(0, {})

    def desired_changed(self) -> bool:
        """Whether newer desired properties arrived since the last ``desired_properties``."""
        return self._desired_new

    def report(self, registration: Registration, updates: Sequence[ReportedUpdate]) -> list[int]:
        """Publish the reported properties merged up to the last of ``updates``, retained."""
        last = max(update.update_id for update in updates)
        document = {"version": last, "properties": self._store.reported_properties(last)}
        topic = reported_topic(self._root, self._device)
        (problem,) = self._publish_all([(topic, json.dumps(document).encode(), True, None)])
        if problem is not None:
            raise Unavailable(f"{topic}: reported properties not acknowledged: {problem}")
        return [update.update_id for update in updates]

    def send(self, registration: Registration, upload: Upload) -> UploadResult:
        """Publish each message of ``upload`` with QoS 1; acked = those the broker PUBACKed.

        Raises:
            Unavailable: none was acknowledged (disconnected, or no PUBACK in time).
            BadRequest: the broker refused every one (e.g. not authorised for the topic).
        """
        topic = telemetry_topic(self._root, self._device, upload.stream_group, upload.stream)
        batch: list[tuple[str, bytes, bool, Properties | None]] = []
        ts_parts: dict[float, bytes] = {}
        for message in upload.messages:
            body, encoding = compress(message.payload, message.compression)
            props = user_properties(self._device, message, encoding, ts_parts)
            batch.append((topic, body, False, props))
        outcome = self._publish_all(batch)
        acked = tuple(
            message.seq
            for message, problem in zip(upload.messages, outcome, strict=True)
            if problem is None
        )
        if acked:
            return UploadResult(acked, {}, False)
        problems = sorted({problem for problem in outcome if problem is not None})
        refusals = [problem for problem in problems if problem != _NO_PUBACK]
        if refusals:
            raise BadRequest(f"{topic}: the broker refused the messages: {refusals}")
        raise Unavailable(f"{topic}: {_NO_PUBACK}")

    def close(self) -> None:
        """Disconnect (the session stays on the broker for ``session_expiry_s``), end the thread."""
        if self._connected:
            self.client.disconnect()  # queued: the thread writes it before it ends
        self._closing.set()
        self._thread.join(timeout=5.0)
        self._set_connected(False)


def _acknowledged(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether the broker PUBACKed the message. A message published while disconnected (paho
    queues it, ``rc`` says NO_CONN) counts as not acknowledged: it is sent again under its id."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
