"""The bridge's MQTT connection (actors.mqtt.link.MqttLink) against a real Mosquitto, in
process: TLS with a client certificate and a password read from a file, a refused password,
and reconnecting (with bus.backoff) after the broker restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from actors.mqtt.config import BridgeConfig
from actors.mqtt.link import MqttLink, Will
from bus.mosquitto import Mosquitto
from bus.options import from_table
from bus.testing import async_wait_until
from tests.conftest import MosquittoBrokers, scaled

pytestmark = [pytest.mark.integration, pytest.mark.interop]


def _link(loop: asyncio.AbstractEventLoop, events: list[Any], **options: Any) -> MqttLink:
    config = from_table(
        BridgeConfig,
        {"namespace": "acme/p/a/l1", "backoff_initial_s": 0.1, "backoff_max_s": 0.3, **options},
        "mqtt test",
        noun="option",
    )
    return MqttLink(
        config,
        loop,
        subscriptions=[],
        will=lambda: Will("acme/p/a/l1/status", b'{"online":false}'),
        on_connect=lambda present: events.append(("connect", present)),
        on_disconnect=lambda reason: events.append(("disconnect", reason)),
        on_message=lambda message: None,
    )


async def test_tls_client_certificate_and_password_file(
    mosquittos: MosquittoBrokers, tmp_path: Path
) -> None:
    broker = mosquittos.start("tls", users={"line1": "s3cret"}, tls=True)
    cert, key = broker.client_cert("line1")
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    events: list[Any] = []
    link = _link(
        asyncio.get_running_loop(),
        events,
        host="localhost",
        port=broker.port,
        tls=True,
        ca_file=str(broker.ca_file),
        cert_file=str(cert),
        key_file=str(key),
        username="line1",
        password_file=str(password),
    )
    link.start()
    try:
        await async_wait_until(lambda: link.connected, scaled(10), "TLS connection")
    finally:
        await asyncio.to_thread(link.stop)
    assert events[0][0] == "connect"


async def test_wrong_password_is_retried_and_a_restart_reconnects(
    mosquittos: MosquittoBrokers,
) -> None:
    secured = mosquittos.start("pw", users={"line1": "s3cret"})
    events: list[Any] = []
    loop = asyncio.get_running_loop()
    refused = _link(loop, events, host=secured.host, port=secured.port, username="line1",
                    password="wrong")  # fmt: skip
    refused.start()
    try:
        await async_wait_until(
            lambda: secured.log().count("not authorised") >= 2, scaled(10), "two refusals"
        )
        assert refused.connects == 0 and not events
    finally:
        await asyncio.to_thread(refused.stop)

    broker = mosquittos.start("plain")
    link = _link(loop, events, host=broker.host, port=broker.port)
    link.start()
    try:
        await async_wait_until(lambda: link.connects == 1, scaled(10), "first connection")
        await asyncio.to_thread(broker.restart)
        # The link counts a connection on paho's thread and hands on_connect to the loop with
        # call_soon_threadsafe: wait for the callback too, not only the count.
        await async_wait_until(
            lambda: link.connects == 2 and len(events) == 3, scaled(15), "reconnected"
        )
        assert [kind for kind, _ in events] == ["connect", "disconnect", "connect"]
    finally:
        await asyncio.to_thread(link.stop)


async def test_mqtt_3_1_1_fallback(mosquitto: Mosquitto) -> None:
    events: list[Any] = []
    link = _link(
        asyncio.get_running_loop(),
        events,
        host=mosquitto.host,
        port=mosquitto.port,
        protocol="3.1.1",
        client_id="old-broker-bridge",
    )
    link.start()
    try:
        await async_wait_until(lambda: link.connected, scaled(10), "3.1.1 connection")
    finally:
        await asyncio.to_thread(link.stop)
    # Mosquitto's log numbers protocols 3.1 = p1, 3.1.1 = p2, 5 = p5; c0: a persistent session.
    assert "as old-broker-bridge (p2, c0," in mosquitto.log()
