"""The telemetry forwarder's MQTT upstream against a real Mosquitto: every stored message arrives
(counted by its ``message_id`` user property at a plant-side persistent QoS 1 subscriber) across a
broker restart, a cut connection (a TCP proxy in between) and a kill -9 of the writing process;
desired properties come from the retained topic, reported ones are published retained."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.telemetry import (
    DesiredProperties,
    ForwarderConfig,
    OutgoingMessage,
    TelemetryConfig,
    TelemetryDriver,
)
from actors.telemetry.config import MqttUpstreamConfig
from actors.telemetry.mqtt_upstream import (
    desired_topic,
    message_id,
    reported_topic,
    telemetry_filter,
)
from bus.mosquitto import Mosquitto
from bus.options import from_table
from tests.conftest import MosquittoBrokers, scaled, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.interop]

ROOT = "acme/plant1/assembly/line3"
DEVICE = "press-telemetry"


class Proxy:
    """A TCP relay from a free loopback port to the broker; ``cut()`` drops every connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.closed:  # accepted while close() ran
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()
        self.cut()
        with self.lock:
            self.closed = True
            for s in self.sockets:
                s.close()


class Subscriber:
    """The plant side: a persistent-session QoS 1 subscriber counting telemetry by message id."""

    def __init__(self, broker: Mosquitto) -> None:
        self.ids: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="plant-historian", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(telemetry_filter(ROOT), qos=1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        wait_until(self.client.is_connected, scaled(10), "plant subscriber connected")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        user = dict(props.UserProperty) if props is not None else {}
        with self.lock:
            self.ids[user["message_id"]] += 1

    def wait_all(self, seqs: list[int]) -> None:
        wanted = {message_id(DEVICE, seq) for seq in seqs}

        def missing() -> set[str]:
            with self.lock:
                return wanted - set(self.ids)

        wait_until(lambda: not missing(), scaled(60), lambda: f"{len(missing())} ids missing")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # paho's wake-up socket pair: loop_stop leaves it open


@pytest.fixture
def broker(mosquittos: MosquittoBrokers) -> Mosquitto:
    return mosquittos.start(persistence=True, max_queued_messages=0)


@pytest.fixture
def plant(broker: Mosquitto) -> Iterator[Subscriber]:
    subscriber = Subscriber(broker)
    yield subscriber
    subscriber.close()


def config(db: Path, port: int) -> TelemetryConfig:
    mqtt_config = MqttUpstreamConfig(host="127.0.0.1", port=port, namespace=ROOT, max_inflight=20)
    forwarder = ForwarderConfig(
        upstream="mqtt",
        device_id=DEVICE,
        mqtt=mqtt_config,
        linger_s=0.0,
        max_batch_messages=50,
        request_timeout_s=5.0,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
    )
    return TelemetryConfig(db=str(db), forwarder=forwarder)


def append(driver: TelemetryDriver, n: int, tag: str) -> list[int]:
    messages = [OutgoingMessage.create(f"{tag}-{i}", stream="vibration") for i in range(n)]
    return [ack.seq for ack in driver.enqueue_messages(messages)]


def test_nothing_lost_across_broker_restart_and_cut(
    broker: Mosquitto, plant: Subscriber, tmp_path: Path
) -> None:
    """Messages stored before, during and after a Mosquitto restart and a cut TCP connection all
    reach the plant; desired properties arrive from the retained topic; reported ones are
    published retained, merged."""
    proxy = Proxy((broker.host, broker.port))
    desired: list[DesiredProperties] = []
    plant.client.publish(
        desired_topic(ROOT, DEVICE),
        json.dumps({"version": 3, "values": {"rpm": 1200}}),
        qos=1,
        retain=True,
    ).wait_for_publish(scaled(5))
    driver = TelemetryDriver.start(
        config(tmp_path / "t.db", proxy.port), desired_properties_updated_callback=desired.append
    )
    try:
        seqs = append(driver, 300, "before")
        assert driver.forwarder.wait_sent(timeout=scaled(30))
        wait_until(lambda: [d.version for d in desired] == [3], scaled(10), "desired v3")

        broker.restart(timeout=scaled(10))  # a restart while messages are being stored
        seqs += append(driver, 300, "restart")
        proxy.cut()  # and a cut connection while they are forwarded
        seqs += append(driver, 300, "cut")
        assert driver.forwarder.wait_sent(timeout=scaled(60))
        plant.wait_all(seqs)

        driver.update_reported_properties({"firmware": "1.2", "limits": {"rpm": 1500}})
        driver.update_reported_properties({"limits": {"temp": 80}})
        assert driver.forwarder.wait_reported_sent(timeout=scaled(20))
    finally:
        driver.close()
        proxy.close()
    with plant.lock:
        assert set(plant.ids) == {message_id(DEVICE, s) for s in seqs}
    reported: list[Any] = []
    plant.client.on_message = lambda _c, _u, m: reported.append(json.loads(m.payload))
    plant.client.subscribe(reported_topic(ROOT, DEVICE), qos=1)
    wait_until(lambda: reported, scaled(10), "retained reported properties")
    assert reported[0]["properties"] == {"firmware": "1.2", "limits": {"rpm": 1500, "temp": 80}}


WRITER = r"""
import json, sys
from actors.telemetry import ForwarderConfig, OutgoingMessage, TelemetryConfig, TelemetryDriver
from actors.telemetry.config import MqttUpstreamConfig
from bus.logs import configure_logging
configure_logging(level="warning")
db, port, root, device = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
mqtt = MqttUpstreamConfig(host="127.0.0.1", port=port, namespace=root, max_inflight=20)
forwarder = ForwarderConfig(upstream="mqtt", device_id=device, mqtt=mqtt, linger_s=0.0,
                            max_batch_messages=25)
driver = TelemetryDriver.start(TelemetryConfig(db=db, forwarder=forwarder))
for batch in range(1_000_000):
    acks = driver.enqueue_messages([OutgoingMessage.create(f"w-{batch}-{i}", stream="crash")
                                    for i in range(10)])
    print(json.dumps([a.seq for a in acks]), flush=True)
"""


def test_kill_9_mid_forwarding_loses_nothing(
    broker: Mosquitto, plant: Subscriber, tmp_path: Path
) -> None:
    """A writer killed with SIGKILL while it stores and forwards: after a restart on the same
    store, every message it had stored (acked) reaches the plant."""
    db = tmp_path / "crash.db"
    args = [sys.executable, "-c", WRITER, str(db), str(broker.port), ROOT, DEVICE]
    writer = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    acked: list[int] = []
    try:
        assert writer.stdout is not None
        deadline = time.monotonic() + scaled(30)
        # Kill once part of the messages reached the plant (forwarding is under way).
        while time.monotonic() < deadline:
            line = writer.stdout.readline()
            assert line, "writer exited early"
            acked += json.loads(line)
            with plant.lock:
                if len(acked) >= 1500 and len(plant.ids) >= 200:
                    break
        writer.send_signal(signal.SIGKILL)
        writer.wait(scaled(10))
        acked += [seq for line in writer.stdout for seq in json.loads(line)]
        writer.stdout.close()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    with plant.lock:
        assert len(plant.ids) < len(acked), "the kill came after everything was forwarded"
    driver = TelemetryDriver.start(config(db, broker.port))
    try:
        assert driver.forwarder.wait_sent(timeout=scaled(60))
    finally:
        driver.close()
    plant.wait_all(acked)


def test_tls_and_password(mosquittos: MosquittoBrokers, tmp_path: Path) -> None:
    """Over TLS (the broker's CA) with a username and a password read from a file: forwarded."""
    broker = mosquittos.start("secure", users={"line3": "s3cret"}, tls=True)
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    options = {
        "db": str(tmp_path / "tls.db"),
        "upstream": "mqtt",
        "device_id": DEVICE,
        "linger_s": 0.0,
        "mqtt": {
            "host": "localhost",  # the name in the broker's certificate
            "port": broker.port,
            "namespace": ROOT,
            "tls": True,
            "ca_file": str(broker.ca_file),
            "username": "line3",
            "password_file": str(secret),
        },
    }
    telemetry = from_table(TelemetryConfig, options, "telemetry tls", noun="option")
    driver = TelemetryDriver.start(telemetry)
    try:
        append(driver, 20, "tls")
        assert driver.forwarder.wait_sent(timeout=scaled(30))
        assert driver.forwarder.stats()["messages"] == 20
    finally:
        driver.close()
