"""Discovery v2 (a ``bare=Y`` device) and the broadcast beacon, against in-process simulators.

Unicast on loopback only (the multicast variant of the v1 tests adds nothing here): simulators
announce to, or beacon at, the driver's listener on 127.0.0.1; the driver pokes and touches them
on their own loopback addresses. Every wait is bounded and synchronises on driver events.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.discovery import DiscoveryDriver
from actors.flux.driver import FluxDriver
from actors.flux.simulator import FluxSimulator
from actors.flux.testing import free_udp_port, random_loopback
from actors.fluxfamily import crypto
from tests.conftest import scaled
from tests.integration.test_discovery_driver import JOB, Collector
from tests.integration.test_flux_driver import config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {
        "client": crypto.new_key(1024),
        "master": crypto.new_key(2048),
        "slave": crypto.new_key(1024),
    }


@pytest.fixture
def port() -> int:
    return free_udp_port()


@pytest.fixture
async def watch(port: int) -> AsyncIterator[Collector]:
    driver = DiscoveryDriver(
        port=port, group=None, listen="127.0.0.1", timeout_s=scaled(2.0), expire_interval_s=0.05
    )
    async with driver:
        collector = Collector(driver)
        task = asyncio.create_task(collector.run())
        try:
            yield collector
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def sim(port: int, keys: dict[str, rsa.RSAPrivateKey], **overrides: Any) -> FluxSimulator:
    settings: dict[str, Any] = {
        "address": random_loopback(),
        "robot_port": 0,
        "manage_port": 0,
        "udp_port": port,
        "group": None,
        "announce_to": [f"127.0.0.1:{port}"],
        "announce_interval_s": 0.2,
        "job_duration_s": 0.4,
        "master_key": keys["master"],
        "slave_key": keys["slave"],
        "trusted_keys": [keys["client"].public_key()],
    }
    settings.update(overrides)
    return FluxSimulator(**settings)


async def test_v2_device_appears_and_reports_status(
    port: int, watch: Collector, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    """A bare device's v2 announcement is touched in v2; the unsigned answer gives serial, name,
    model, version and the master key, which then pins the robot's TLS certificate."""
    async with sim(port, keys, bare=True, name="bare-one") as device:
        uuid = device.uuid.hex
        found = await watch.wait("appeared", uuid)
        assert (found["name"], found["serial"], found["model_id"], found["version"]) == (
            "bare-one",
            "XXXXXXXXXX",
            "delta-1",
            "1.6.95",
        )
        assert found["endpoint"] == [device.address, port] and found["st_id"] == 0
        assert watch.driver.master_key_der(uuid) == crypto.public_der(keys["master"])
        assert watch.driver.slave_key_der(uuid) is None  # v2 has no slave key
        master = crypto.load_public_key(watch.driver.master_key_der(uuid) or b"")
        async with FluxDriver(
            device.address,
            keys["client"],
            config(device),
            device_uuid=device.uuid,
            master_key=master,
        ) as robot:
            assert robot.protocol == 3
            await robot.upload_file(JOB, "#")
            await robot.start_play()
            running = await watch.wait("status", uuid, lambda d: d["st_id"] > 0)
            assert running["head_module"] == "EXTRUDER"  # only while a task runs
        device.device.name = "renamed"  # same session: only an explicit touch (in v2) sees it
        assert watch.driver.touch(uuid)
        await watch.wait("changed", uuid, lambda d: d["name"] == "renamed")
        assert not watch.driver.touch(uuidlib.UUID(int=5))


@pytest.mark.parametrize("bare", [False, True], ids=["v1", "v2"])
async def test_beacon_leads_to_poke(
    port: int, watch: Collector, keys: dict[str, rsa.RSAPrivateKey], bare: bool
) -> None:
    """A device that announces nowhere but beacons (version 0, uuid only) is poked at
    ``<its ip>:port`` and appears; pokes go in both versions, so a bare device answers too."""
    silent = {"announce_to": [], "beacon_to": [f"127.0.0.1:{port}"], "broadcast": "A"}
    async with sim(port, keys, bare=bare, **silent) as device:
        found = await watch.wait("appeared", device.uuid.hex)
        assert found["ipaddr"] == device.address
        assert device.udp is not None and device.udp.beacons_sent >= 1


async def test_poke_finds_bare_device(port: int, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    """fluxclient pokes only in v1, which a bare device ignores; the driver also pokes in v2."""
    async with sim(port, keys, bare=True, announce_to=[]) as device:
        driver = DiscoveryDriver(
            port=port,
            group=None,
            poke=[f"{device.address}:{port}"],
            poke_interval_s=0.2,
            timeout_s=scaled(2.0),
        )
        async with driver:
            found = await driver.discover_device(device.uuid, timeout_s=scaled(5))
        assert found["name"] == "flux-sim" and found["serial"] == "XXXXXXXXXX"
