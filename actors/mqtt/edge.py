"""The Sparkplug B profile of the bridge: the line as an edge node, each actor a device.

- On every MQTT connection (clean start, as Sparkplug requires): subscribe NCMD and DCMD at
  QoS 1, then NBIRTH (``seq`` 0, ``bdSeq``, ``Node Control/Rebirth``) and a DBIRTH per actor up.
- A device's metrics: ``Properties/kind``, ``Properties/state`` (strings), its state event's
  value flattened under ``State/`` (typed from the values: Int64, Double, Boolean, String), and
  per exposed command ``Commands/<name>`` (Boolean, writable by DCMD) with
  ``Commands/<name>/result`` (String, JSON of the last outcome).
- DDATA with only the metrics that changed when an actor's state changes (a new metric name
  means a new DBIRTH); DDEATH when an actor goes down.
- NDEATH is the will, with the connection's ``bdSeq``, and is also sent on an orderly stop.
- NCMD ``Node Control/Rebirth`` = true: NBIRTH and every DBIRTH again (same ``bdSeq``).
- DCMD ``Commands/<name>`` = true (no arguments) or a String holding a JSON object
  (arguments): the linebus call ``<device>.<name>``; its outcome comes back as DDATA of
  ``Commands/<name>/result``. Commands not exposed are not declared, and a DCMD for one is
  refused (counted in the bridge's ``status`` as ``refused``, logged).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from actors.mqtt import sparkplug as spb
from actors.mqtt.link import Will
from actors.mqtt.requests import call, error_body
from bus._calls import TrackedEvent
from bus.errors import BusError, InvalidArguments

if TYPE_CHECKING:
    from actors.mqtt.actor import MqttBridge

__all__ = ["SparkplugProfile"]

_COMMANDS = "Commands/"
_RESULT = "/result"


class SparkplugProfile:
    """Sparkplug B 3.0 edge node behaviour for ``MqttBridge`` (see the module docstring)."""

    clean_start = True

    def __init__(self, bridge: MqttBridge) -> None:
        self.bridge = bridge
        self.group = bridge.config.group_id
        self.node = bridge.config.node_id
        self.counters = spb.EdgeSequence()
        #: The session's NBIRTH is out: DBIRTH/DDATA may follow.
        self.born = False
        #: Per device born: the last value sent of each metric.
        self.sent: dict[str, dict[str, Any]] = {}

    # --- MQTT session -----------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        return [
            (spb.topic(self.group, "NCMD", self.node), 1),
            (spb.topic(self.group, "DCMD", self.node, "+"), 1),
        ]

    def _ndeath(self) -> bytes:
        bd_seq = spb.Metric("bdSeq", spb.DataType.Int64, self.counters.bd_seq)
        return spb.encode_payload(spb.Payload(spb.now_ms(), (bd_seq,)))

    def will(self) -> Will:
        self.counters.new_connection()
        self.born = False
        return Will(spb.topic(self.group, "NDEATH", self.node), self._ndeath(), 1, False)

    def last_words(self) -> list[tuple[str, bytes, int, bool]]:
        return [(spb.topic(self.group, "NDEATH", self.node), self._ndeath(), 1, False)]

    def on_connected(self, session_present: bool) -> None:
        self.rebirth()

    def _send(self, message_type: str, metrics: list[spb.Metric], device: str | None) -> None:
        link = self.bridge.link
        if link is None:
            return
        seq = self.counters.birth() if message_type == "NBIRTH" else self.counters.next()
        payload = spb.encode_payload(spb.Payload(spb.now_ms(), tuple(metrics), seq))
        link.publish(spb.topic(self.group, message_type, self.node, device), payload, qos=0)

    def rebirth(self) -> None:
        """NBIRTH, then a DBIRTH per actor up."""
        now = spb.now_ms()
        metrics = [
            spb.Metric("bdSeq", spb.DataType.Int64, self.counters.bd_seq, now),
            spb.Metric(spb.REBIRTH, spb.DataType.Boolean, False, now),
            spb.Metric("Properties/namespace", spb.DataType.String, self.bridge.config.root, now),
        ]
        self._send("NBIRTH", metrics, None)
        self.born = True
        self.sent.clear()
        for service, row in sorted(self.bridge.presence.items()):
            if row.get("state") == "up":
                self._dbirth(service)

    # --- devices ----------------------------------------------------------------------------

    def _values(self, service: str) -> dict[str, Any]:
        """Every metric of ``service`` and its value now."""
        bridge = self.bridge
        row = bridge.presence.get(service, {})
        values: dict[str, Any] = {
            "Properties/kind": str(row.get("kind", "")),
            "Properties/state": str(row.get("state", "")),
        }
        state = bridge.states.get(service)
        if state is not None:
            values.update(spb.flatten("State", state.get("data")))
        for name in bridge.exposure.commands_of(service, bridge.commands_of.get(service, [])):
            values[f"{_COMMANDS}{name}"] = False
            values.setdefault(f"{_COMMANDS}{name}{_RESULT}", "")
        return values

    def _metrics(self, values: dict[str, Any]) -> list[spb.Metric]:
        now = spb.now_ms()
        metrics = [spb.metric_for(name, value, now) for name, value in values.items()]
        return [m for m in metrics if m is not None]

    def _dbirth(self, service: str) -> None:
        values = self._values(service)
        self.sent[service] = values
        self._send("DBIRTH", self._metrics(values), service)

    def _ddata(self, service: str, values: dict[str, Any]) -> None:
        sent = self.sent.get(service)
        if sent is None:
            return
        if set(values) - set(sent):  # a metric the DBIRTH did not declare: be born again
            self._dbirth(service)
            return
        changed = {name: value for name, value in values.items() if sent.get(name) != value}
        if changed:
            sent.update(changed)
            self._send("DDATA", self._metrics(changed), service)

    def on_presence(self, service: str, row: dict[str, Any]) -> None:
        if not self.born:
            return
        if row.get("state") == "up":
            self._dbirth(service)
        elif self.sent.pop(service, None) is not None:
            self._send("DDEATH", [], service)

    def on_state(self, service: str, event: TrackedEvent) -> None:
        if self.born and service in self.sent:
            values = {k: v for k, v in self._values(service).items() if k.startswith("State/")}
            self._ddata(service, {**self.sent[service], **values})

    def on_event(self, event: TrackedEvent) -> None:
        """Sparkplug carries state, not the event stream: events stay on the UNS profile."""

    # --- commands ---------------------------------------------------------------------------

    def on_message(self, message: mqtt.MQTTMessage) -> None:
        bridge = self.bridge
        levels = message.topic.split("/")
        try:
            payload = spb.decode_payload(bytes(message.payload))
        except ValueError as exc:
            bridge.counters["dropped_requests"] += 1
            bridge.log.info("sparkplug_bad_command", topic=message.topic, error=str(exc))
            return
        if len(levels) == 4 and levels[2] == "NCMD":
            if any(m.name == spb.REBIRTH and m.value is True for m in payload.metrics):
                self.rebirth()
            return
        if len(levels) != 5 or levels[2] != "DCMD":
            return
        service = levels[4]
        for metric in payload.metrics:
            name = metric.name.removeprefix(_COMMANDS)
            if not metric.name.startswith(_COMMANDS) or name.endswith(_RESULT):
                continue
            self._command(service, name, metric.value)

    def _command(self, service: str, name: str, value: Any) -> None:
        bridge = self.bridge
        try:
            bridge.exposure.check(service, name)
            if value is True:
                args: Any = None
            elif isinstance(value, str):
                args = json.loads(value) if value.strip() else None
                if args is not None and not isinstance(args, dict):
                    raise ValueError("not a JSON object")
            else:
                raise ValueError(f"write true or a JSON object string, got {value!r}")
        except BusError as exc:
            # Not a metric the DBIRTH declared: a host cannot expect an answer to it.
            bridge.counters["refused"] += 1
            bridge.log.info("sparkplug_command_refused", service=service, error=str(exc))
            return
        except ValueError as exc:
            error = InvalidArguments(f"DCMD {_COMMANDS}{name}: {exc}")
            self._result(service, name, error_body(error))
            return
        bridge.counters["requests"] += 1
        bridge.spawn(self._serve(service, name, args))

    async def _serve(self, service: str, name: str, args: Any) -> None:
        bus = self.bridge.bus
        assert bus is not None
        outcome = await call(
            bus,
            service,
            name,
            args,
            timeout=self.bridge.config.command_timeout_s,
            progress=lambda data: None,
        )
        self._result(service, name, outcome.body)

    def _result(self, service: str, name: str, body: dict[str, Any]) -> None:
        text = json.dumps(body, default=str, separators=(",", ":"))
        if self.born and service in self.sent:
            self._ddata(service, {**self.sent[service], f"{_COMMANDS}{name}{_RESULT}": text})
