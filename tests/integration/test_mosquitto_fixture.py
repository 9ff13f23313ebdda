"""The shared Mosquitto fixture (bus.mosquitto): a real broker that a real paho client reaches
anonymously, with a password, over TLS with a client certificate, and again after a restart."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from bus.mosquitto import Mosquitto, password_hash
from tests.conftest import MosquittoBrokers, scaled

pytestmark = [pytest.mark.integration, pytest.mark.interop]


def _connect(broker: Mosquitto, **settings: Any) -> int | None:
    """Connect a paho MQTT 5 client to ``broker``: the CONNACK's reason code value, None when
    the broker closed the connection without one (a TLS handshake it refused)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    done = threading.Event()
    result: list[int] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result.append(reason.value)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_args: done.set()
    if "username" in settings:
        client.username_pw_set(settings["username"], settings.get("password"))
    if "ca" in settings:
        certfile, keyfile = settings.get("cert", (None, None))
        client.tls_set(ca_certs=str(settings["ca"]), certfile=certfile, keyfile=keyfile)
    try:
        client.connect(broker.host, broker.port)
        client.loop_start()
        assert done.wait(scaled(10)), f"no CONNACK nor disconnect; log:\n{broker.log()}"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] if result else None


def test_anonymous_broker_accepts_and_restarts_on_its_port(mosquitto: Mosquitto) -> None:
    assert _connect(mosquitto) == 0
    port = mosquitto.port
    mosquitto.restart()
    assert mosquitto.port == port and mosquitto.running
    assert _connect(mosquitto) == 0


def test_password_and_client_certificate(mosquittos: MosquittoBrokers) -> None:
    secured = mosquittos.start("pw", users={"line1": "s3cret"})
    assert _connect(secured, username="line1", password="s3cret") == 0
    assert _connect(secured, username="line1", password="wrong") != 0
    tls = mosquittos.start("tls", tls=True, require_certificate=True)
    cert, key = tls.client_cert("line1")
    assert _connect(tls, ca=tls.ca_file, cert=(str(cert), str(key))) == 0
    # Without a client certificate the broker ends the TLS session before any CONNACK.
    assert _connect(tls, ca=tls.ca_file) is None
    assert "peer did not return a certificate" in tls.log()


def test_password_hash_is_mosquitto_passwd_format() -> None:
    # The $7$ form Mosquitto 2 reads: iterations, base64 salt, base64 PBKDF2-SHA512 digest.
    line = password_hash("pw", salt=b"\0" * 12, iterations=101)
    assert line.startswith("$7$101$AAAAAAAAAAAAAAAA$") and len(line.split("$")[4]) == 88
