"""Discovery and management against simulators on their own loopback addresses.

Multicast on loopback is probed once: where it works, simulators announce to the real group;
where it does not (some containers), they announce by unicast to the driver's listener. Every
wait is bounded; tests synchronise on the driver's events.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.discovery import DeviceEvent, DiscoveryDriver
from actors.flux.config import FluxConfig
from actors.flux.driver import FluxDriver
from actors.flux.fcode import build_fcode
from actors.flux.simulator import FluxSimulator
from actors.flux.testing import free_udp_port, multicast_on_loopback, random_loopback
from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import DEFAULT_GROUP
from actors.fluxfamily.manager import FluxManager
from bus.errors import DeviceFault, InvalidArguments
from bus.testing import async_wait_until
from tests.conftest import Processes, scaled, wait_ready_line

pytestmark = pytest.mark.integration

JOB = build_fcode(b"G28\n", {"HEAD_TYPE": "EXTRUDER"})


@dataclass
class Udp:
    """How simulators and the driver meet on UDP in this sandbox."""

    port: int
    multicast: bool

    def driver(self, **overrides: Any) -> DiscoveryDriver:
        settings: dict[str, Any] = {
            "port": self.port,
            "timeout_s": scaled(2.0),
            "expire_interval_s": 0.05,
        }
        if self.multicast:
            settings.update(group=DEFAULT_GROUP, interface="127.0.0.1")
        else:
            settings.update(group=None, listen="127.0.0.1")
        settings.update(overrides)
        return DiscoveryDriver(**settings)

    def sim_kwargs(self) -> dict[str, Any]:
        if self.multicast:
            return {"udp_port": self.port, "group": DEFAULT_GROUP}
        return {"udp_port": self.port, "group": None, "announce_to": [f"127.0.0.1:{self.port}"]}

    def sim_flags(self) -> list[str]:
        if self.multicast:
            return ["--udp-port", str(self.port)]
        return [
            "--udp-port",
            str(self.port),
            "--group",
            "",
            "--announce-to",
            f"127.0.0.1:{self.port}",
        ]


@pytest.fixture(scope="module", params=["multicast", "unicast"])
def multicast(request: pytest.FixtureRequest) -> bool:
    """Run every test over multicast (when this host loops it back) and over the unicast fallback."""
    if request.param == "unicast":
        return False
    if not multicast_on_loopback():
        pytest.skip(
            "multicast does not loop back on this host; the unicast variant covers discovery"
        )
    return True


@pytest.fixture
def udp(multicast: bool) -> Udp:
    return Udp(free_udp_port(), multicast)


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {
        "client": crypto.new_key(1024),
        "master": crypto.new_key(2048),
        "slave": crypto.new_key(1024),
    }


@dataclass
class Collector:
    """Records a driver's events in the background and waits for one that matches."""

    driver: DiscoveryDriver
    events: list[DeviceEvent] = field(default_factory=list)

    async def run(self) -> None:
        with self.driver.events() as subscription:
            async for event in subscription:
                self.events.append(event)

    async def wait(
        self,
        kind: str,
        uuid: str,
        match: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next(
                (
                    e.device
                    for e in self.events
                    if e.kind == kind and e.device["uuid"] == uuid and match(e.device)
                ),
                None,
            )

        return await async_wait_until(found, scaled(timeout), f"{kind} of {uuid}")

    def of(self, uuid: str) -> list[DeviceEvent]:
        return [e for e in self.events if e.device["uuid"] == uuid]


@pytest.fixture
async def watch(udp: Udp) -> AsyncIterator[Collector]:
    async with udp.driver() as driver:
        collector = Collector(driver)
        task = asyncio.create_task(collector.run())
        try:
            yield collector
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def sim(udp: Udp, keys: dict[str, rsa.RSAPrivateKey], **overrides: Any) -> FluxSimulator:
    settings: dict[str, Any] = {
        "address": random_loopback(),
        "robot_port": 0,
        "manage_port": 0,
        "announce_interval_s": 0.2,
        "master_key": keys["master"],
        "slave_key": keys["slave"],
        **udp.sim_kwargs(),
    }
    settings.update(overrides)
    return FluxSimulator(**settings)


class TestTwoSimulatorProcesses:
    """Two simulators started from the command line, on the real ports of their own addresses."""

    async def test_appear_status_disappear(
        self,
        udp: Udp,
        watch: Collector,
        processes: Processes,
        tmp_path: Path,
        keys: dict[str, rsa.RSAPrivateKey],
    ) -> None:
        """Both appear with full metadata; a job shows as status changes; a stopped one is gone."""
        pem = tmp_path / "client.pem"
        pem.write_bytes(crypto.public_pem(keys["client"]))
        procs, ready = [], []
        for name in ("alpha", "beta"):
            flags = [
                "--address",
                random_loopback(),
                "--name",
                name,
                "--announce-interval",
                "0.2",
                "--job-duration",
                "0.6",
                "--trust",
                str(pem),
            ]
            procs.append(
                processes.start(
                    "-m", "actors.flux.simulator", *flags, *udp.sim_flags(), stdout=subprocess.PIPE
                )
            )
        for proc in procs:
            ready.append(wait_ready_line(proc, scaled(15)))
        alpha, beta = ready
        assert alpha["robot"].endswith(":23811") and alpha["manage"].endswith(":1901")
        for info in ready:
            device = await watch.wait("appeared", info["uuid"])
            host = info["robot"].split(":")[0]
            assert (device["name"], device["ipaddr"], device["serial"], device["model_id"]) == (
                info["name"],
                host,
                "XXXXXXXXXX",
                "delta-1",
            )
            assert (
                device["version"] == "1.6.95"
                and device["st_id"] == 0
                and device["endpoint"] == [host, udp.port]
            )

        host = alpha["robot"].split(":")[0]
        async with FluxDriver(
            host, keys["client"], FluxConfig(connect_timeout_s=scaled(5), reply_timeout_s=scaled(5))
        ) as robot:
            await robot.upload_file(JOB, "#")
            await robot.start_play()
            await watch.wait(
                "status", alpha["uuid"], lambda d: d["st_id"] == 64 and d["st_prog"] == 1.0
            )
            assert 16 in [e.device["st_id"] for e in watch.of(alpha["uuid"]) if e.kind == "status"]

        procs[1].terminate()
        gone = await watch.wait("gone", beta["uuid"])
        assert gone["name"] == "beta"
        await async_wait_until(
            lambda: [d["uuid"] for d in watch.driver.devices()] == [alpha["uuid"]],
            scaled(5),
            "only alpha listed",
        )


class TestStatusFaults:
    """Status changes from injected faults, silence, and pokes."""

    async def test_error_label_and_silence(
        self, udp: Udp, watch: Collector, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        """An error label is a status change; a silent device goes, and comes back when it speaks."""
        async with sim(udp, keys, name="gamma") as device:
            uuid = device.uuid.hex
            await watch.wait("appeared", uuid)
            device.set_error_label("HEAD_ERROR FAN_FAILURE")
            changed = await watch.wait("status", uuid, lambda d: "error_label" in d)
            assert changed["error_label"] == "HEAD_ERROR FAN_FAILURE"
            device.go_silent()
            await watch.wait("gone", uuid)
            assert watch.driver.device(uuid) is None
            device.go_silent(False)
            await async_wait_until(
                lambda: len([e for e in watch.of(uuid) if e.kind == "appeared"]) == 2,
                scaled(10),
                "reappearance",
            )

    async def test_poke_finds_unannounced_device(
        self, udp: Udp, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        """A device whose announcements do not reach us is found by poking its address."""
        async with sim(udp, keys, group=None, announce_to=[], name="delta") as device:
            target = f"{device.address}:{device.udp_port}"
            async with udp.driver(
                group=None, listen=None, poke=[target], poke_interval_s=0.2
            ) as driver:
                found = await driver.discover_device(device.uuid, timeout_s=scaled(10))
                assert (found["name"], found["ipaddr"]) == ("delta", device.address)
                assert driver.slave_key_der(device.uuid) == crypto.public_der(keys["slave"])


class TestManagement:
    """Authorisation and management over TLS, seen through discovery and the robot port."""

    async def test_authorize_and_manage(
        self, udp: Udp, watch: Collector, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        """Password → trusted key → robot access; rename is discovered; password reset clears trust."""
        client = keys["client"]
        async with sim(udp, keys, name="epsilon", password="secret") as device:
            uuid = device.uuid.hex
            assert (await watch.wait("appeared", uuid))["has_password"] is True
            manager = FluxManager(
                device.address, client, port=device.manage_port, timeout_s=scaled(5)
            )
            assert await manager.connect() is False and manager.uuid == device.uuid
            with pytest.raises(DeviceFault) as caught:
                await manager.rename("x")
            assert caught.value.device_code == "AUTH_ERROR"
            with pytest.raises(DeviceFault) as caught:
                await manager.authorize_with_password("wrong")
            assert caught.value.device_code == "AUTH_ERROR"

            async with FluxManager(
                device.address, client, port=device.manage_port, timeout_s=scaled(5)
            ) as manager:
                await manager.authorize("secret", label="line-4")
                trust = await manager.list_trust()
                assert trust == [
                    {"access_id": crypto.access_id(client).hex(), "label": "line-4", "type": "U"}
                ]
                await manager.rename("renamed")
                assert [ap["ssid"] for ap in await manager.get_wifi_list()] == ["line-4", "guest"]
                await manager.modify_network(
                    method="dhcp", ssid="line-4", wifi_mode="client", security="WPA2-PSK", psk="pw"
                )
                with pytest.raises(InvalidArguments):
                    await manager.modify_network(method="carrier-pigeon")
                with pytest.raises(DeviceFault) as caught:
                    await manager.remove_trust("00" * 20)
                assert caught.value.device_code == "NOT_FOUND"
            assert device.manage is not None and device.manage.networks[0]["ssid"] == "line-4"
            assert (await watch.wait("changed", uuid))["name"] == "renamed"

            config = FluxConfig(
                port=device.robot_port, connect_timeout_s=scaled(5), reply_timeout_s=scaled(5)
            )
            async with FluxDriver(device.address, client, config) as robot:
                assert (await robot.deviceinfo())["nickname"] == "renamed"

            async with FluxManager(
                device.address, client, port=device.manage_port, timeout_s=scaled(5)
            ) as manager:
                assert manager.authorized  # our key is trusted now: no password needed
                await manager.modify_password("secret", "newer", reset_acl=True)
            async with FluxManager(
                device.address, client, port=device.manage_port, timeout_s=scaled(5)
            ) as manager:
                assert not manager.authorized
            with pytest.raises(DeviceFault) as caught:
                await FluxDriver(device.address, client, config).open()
            assert caught.value.device_code == "AUTH_ERROR"
