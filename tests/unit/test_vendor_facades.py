"""The facades built the vendors' way (``FlashRunner("LAN", "ip:port")``, ``FluxRobot((ip, port),
key)``, ``UpnpDiscover()``, ``UpnpTask(uuid)``, ``discover_device``) and the vendors' exception
types for every failure, against an in-process broker and stand-in actors that advertise device
addresses (the real actors' advertisements are checked in tests/integration/test_vendor_lookup.py).
"""

from __future__ import annotations

import asyncio
import stat
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bus.actor import Actor, command
from bus.aio import AsyncClient
from bus.client import Client
from bus.errors import ConfigError, DeviceTimeout
from bus.testing import free_port, wait_until
from clients.discovery import (
    Device,
    DeviceDiscover,
    DeviceManager,
    ManagerError,
    ManagerException,
    UpnpDiscover,
    UpnpException,
    UpnpTask,
    discover_device,
)
from clients.flashrunner import FlashRunner, FR_Comm_Exception
from clients.flux import FluxRobot, RobotError, RobotSessionError, get_or_create_default_key
from tests.unit.inproc_line import WAIT_S, ActorThread, BrokerThread, service_up

PRINTER = uuidlib.UUID("ffffffffffffffff0123456789abcdef")
ROBOT = ("10.0.0.30", 23811)


class _FlashRunner(Actor):
    """Stands in for a LAN FlashRunner actor."""

    kind = "flashrunner"

    @command
    def FR_GetDllVersion(self) -> str:
        return "stand-in"

    @command(concurrent=True)
    async def FR_SendCommand(self, command: str) -> None:
        await asyncio.sleep(10 * WAIT_S)  # never in time: cancelled at the caller's deadline

    def device_addresses(self) -> list[str]:
        return ["10.0.0.40:1234"]


class _Flux(Actor):
    """Stands in for a flux actor: files, a slow listing, and an upload that keeps the bytes."""

    kind = "flux"
    uploaded: bytes = b""

    @command(concurrent=True)
    async def list_files(self, path: str) -> list[list[Any]]:
        if path == "/SD/slow":
            await asyncio.sleep(10 * WAIT_S)  # cancelled at the caller's deadline
        return [[False, "a.fc"]]

    @command
    def upload_file(self, data: bytes, upload_to: str, mimetype: str) -> None:
        type(self).uploaded = data

    def device_addresses(self) -> list[str]:
        return [f"{ROBOT[0]}:{ROBOT[1]}"]


def _meta() -> dict[str, Any]:
    return {
        "uuid": PRINTER.hex,
        "name": "alpha",
        "serial": "SN1",
        "model_id": "delta-1",
        "version": "1.6.0",
        "ipaddr": ROBOT[0],
        "endpoint": [ROBOT[0], 1901],
        "st_id": 16,
    }


class _Discovery(Actor):
    """Stands in for the discovery actor: one device, management that checks a password."""

    kind = "discovery"
    names: ClassVar[list[str]] = []

    @command
    def list(self) -> list[dict[str, Any]]:
        return [_meta()]

    @command
    def poke(self, address: str) -> None:
        """Ask a device to announce itself."""

    @command
    def get(self, uuid: str, timeout_s: float = 0.0) -> dict[str, Any]:
        if uuid != PRINTER.hex:
            raise DeviceTimeout(f"device {uuid} not seen in {timeout_s} s")
        return _meta()

    @command
    def authorize(self, uuid: str, password: str | None = None) -> None:
        """Authorise (always)."""

    @command
    def rename(self, uuid: str, name: str, password: str | None = None) -> None:
        type(self).names.append(name)


@pytest.fixture(scope="module")
def line() -> Iterator[BrokerThread]:
    broker = BrokerThread()
    broker.start()
    actors = [
        ActorThread("fr4", broker, make=_FlashRunner),
        ActorThread("printer", broker, make=_Flux),
        ActorThread("disc", broker, make=_Discovery),
    ]
    for actor in actors:
        actor.start()
    try:
        for name in ("fr4", "printer", "disc"):
            wait_until(service_up(broker.command, name), WAIT_S, f"{name} up")
        yield broker
    finally:
        for actor in actors:
            actor.close()
        broker.close()


@pytest.fixture
def on_line(line: BrokerThread, monkeypatch: pytest.MonkeyPatch) -> BrokerThread:
    """The vendor-style constructors reach this line through LINEBUS_ENDPOINT (and, since its
    ports are not the default layout, LINEBUS_SUBSCRIBE)."""
    monkeypatch.setenv("LINEBUS_ENDPOINT", line.command)
    monkeypatch.setenv("LINEBUS_SUBSCRIBE", line.subscribe)
    return line


def _dead_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


# --- FlashRunner ------------------------------------------------------------------------------


def test_flashrunner_vendor_and_bus_style(on_line: BrokerThread) -> None:
    with FlashRunner("LAN", "10.0.0.40:1234") as fr:
        assert (fr.service, fr.FR_GetDllVersion()) == ("fr4", "stand-in")
    with FlashRunner("lan", "10.0.0.40") as fr:  # no port: any port of the host
        assert fr.service == "fr4"
    with Client(on_line.command) as bus, FlashRunner(bus, "fr4") as fr:
        assert fr.FR_GetDllVersion() == "stand-in"
    with FlashRunner(on_line.command, "fr4") as fr:
        assert fr.bus.endpoint == on_line.command
        fr.timeout = 0.3
        with pytest.raises(FR_Comm_Exception) as late:
            fr.FR_SendCommand("#GETENGSTATUS")
        assert late.value.code == "deadline_exceeded"


@pytest.mark.parametrize(
    ("port", "settings", "code", "text"),
    [
        ("COM3", "115200", "unknown_service", "no flashrunner actor on the bus at tcp://"),
        ("LAN", "10.0.0.41:1234", "unknown_service", "drives the FlashRunner at LAN 10.0.0.41"),
        ("LAN", "", "invalid_arguments", "needs settings 'host:port'"),
        ("", "115200", "invalid_arguments", "port must be 'LAN'"),
    ],
)
def test_flashrunner_no_such_unit(
    on_line: BrokerThread, port: str, settings: str, code: str, text: str
) -> None:
    with pytest.raises(FR_Comm_Exception) as caught:
        FlashRunner(port, settings)
    assert caught.value.code == code and text in str(caught.value)


def test_flashrunner_bad_endpoint_and_broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEBUS_ENDPOINT", "not-an-endpoint")
    with pytest.raises(FR_Comm_Exception) as bad:
        FlashRunner("LAN", "10.0.0.40:1234")
    assert bad.value.code == "config_error" and "not-an-endpoint" in str(bad.value)
    monkeypatch.setenv("LINEBUS_ENDPOINT", _dead_endpoint())
    with pytest.raises(FR_Comm_Exception) as down:
        FlashRunner("LAN", "10.0.0.40:1234", timeout=0.3)
    assert down.value.code == "broker_unreachable"


# --- FluxRobot --------------------------------------------------------------------------------


def test_flux_vendor_style(on_line: BrokerThread, tmp_path: Path) -> None:
    key = get_or_create_default_key(tmp_path / "sdk_connection.pem")
    assert stat.S_IMODE((tmp_path / "sdk_connection.pem").stat().st_mode) == 0o600
    assert get_or_create_default_key(tmp_path / "sdk_connection.pem").public_key_pem == (
        key.public_key_pem
    )
    with FluxRobot(ROBOT, key) as robot:
        assert robot.service == "printer"
        assert robot.list_files("/SD/") == [(False, "a.fc")]
        chunks = iter([b"abc", b"de"])
        sent = [feeder(next(chunks)) for feeder in robot.yihniwimda_upload_stream("x/y", 5)]
        assert (sent, _Flux.uploaded) == ([3, 5], b"abcde")
    with FluxRobot(list(ROBOT), None, device={"uuid": PRINTER}) as robot:
        assert robot.device == {"uuid": PRINTER}


def test_flux_session_errors(on_line: BrokerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each failure is a RobotSessionError with the linebus code."""
    with pytest.raises(RobotSessionError) as none:
        FluxRobot(("10.0.0.31", 23811), None)
    assert none.value.code == "unknown_service" and "10.0.0.31:23811" in str(none.value)
    with pytest.raises(RobotSessionError) as bad:
        FluxRobot("USB", None)  # type: ignore[arg-type]  # what fluxclient's from_usb passes
    assert bad.value.code == "invalid_arguments"
    with FluxRobot(ROBOT, None) as robot:
        robot.timeout = 0.3
        with pytest.raises(RobotSessionError) as late:
            robot.list_files("/SD/slow")
        assert late.value.code == "deadline_exceeded" and late.value.error_symbol == ("TIMEOUT",)
        with pytest.raises(RobotError):  # fed more than announced
            for feeder in robot.yihniwimda_upload_stream("text/gcode", 2):
                feeder(b"abc")
    monkeypatch.setenv("LINEBUS_ENDPOINT", "tcp://")
    with pytest.raises(RobotSessionError) as garbage:
        FluxRobot(ROBOT, None)
    assert garbage.value.code == "config_error"
    monkeypatch.setenv("LINEBUS_ENDPOINT", _dead_endpoint())
    with pytest.raises(RobotSessionError) as down:
        FluxRobot(ROBOT, None, timeout=0.3)
    assert down.value.code == "broker_unreachable"


# --- discovery --------------------------------------------------------------------------------


def test_discovery_vendor_style(on_line: BrokerThread) -> None:
    with UpnpDiscover() as discover:
        assert discover.service == "disc"
        assert [d["name"] for d in discover.list()] == ["alpha"]
    with UpnpDiscover(uuid=uuidlib.UUID(int=1)) as discover:
        assert discover.list() == []
    with Client(on_line.command) as bus, UpnpDiscover(bus, "disc") as discover:
        assert [d["uuid"] for d in discover.list()] == [PRINTER]
    seen: list[tuple[str, Device]] = []
    with DeviceDiscover(device_ipaddr=ROBOT[0]) as discover:
        discover.discover(lambda d, device, **kw: (seen.append((kw["name"], device)), d.stop()))
    assert seen[0][0] == "alpha" and seen[0][1].uuid == PRINTER
    device = discover_device(PRINTER.hex, timeout=WAIT_S)
    assert device is not None and device.status["st_label"] == "ST_RUNNING"
    with device.connect_robot(None) as robot:
        assert robot.service == "printer" and robot.device is device
    with pytest.raises(RobotSessionError) as no_camera:  # the stand-in advertises no camera
        device.connect_camera(None)
    assert no_camera.value.code == "unknown_service" and ":23812" in str(no_camera.value)
    task = UpnpTask(PRINTER, lookup_timeout=WAIT_S)
    task.rename("beta")
    task.close()
    with UpnpTask(uuidlib.UUID(int=0), None, ROBOT[0], lookup_timeout=WAIT_S) as by_address:
        assert (by_address.uuid, by_address.name) == (PRINTER, "alpha")  # fluxclient's uuid 0
    manager = DeviceManager.from_uuid(None, PRINTER.hex)
    manager.set_nickname("gamma")
    manager.close()
    manager = DeviceManager.from_ipaddr(None, ROBOT[0], lookup_timeout=WAIT_S)
    assert manager.nickname == "alpha"
    manager.close()
    assert _Discovery.names[-2:] == ["beta", "gamma"]


def test_discovery_errors(on_line: BrokerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    with pytest.raises(ManagerException) as unseen:
        UpnpTask(uuidlib.UUID(int=7), lookup_callback=calls.append, lookup_timeout=0.2)
    assert unseen.value.code == "device_timeout" and isinstance(unseen.value, UpnpException)
    assert calls and all(isinstance(c, UpnpDiscover) for c in calls)  # fluxclient's argument
    assert discover_device(uuidlib.UUID(int=7), timeout=0.2) is None
    with pytest.raises(ManagerError):
        UpnpDiscover(uuid="not a uuid")
    monkeypatch.setenv("LINEBUS_ENDPOINT", "garbage")
    with pytest.raises(ManagerException) as garbage:
        UpnpDiscover()
    assert garbage.value.code == "config_error"
    monkeypatch.setenv("LINEBUS_ENDPOINT", _dead_endpoint())
    with pytest.raises(ManagerException) as down:
        UpnpTask(PRINTER, timeout=0.3)
    assert down.value.code == "broker_unreachable"


# --- what the facades stand on ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["garbage", "tcp://", "tcp://no-port"])
def test_client_core_names_an_unusable_endpoint(endpoint: str) -> None:
    """The client core raises ConfigError (details: the endpoint) for an endpoint ZeroMQ
    cannot use, commands and events, sync and async, leaking no socket (ResourceWarning)."""
    with pytest.raises(ConfigError) as command:
        Client(endpoint)
    assert command.value.details == {"endpoint": endpoint}
    with (
        Client(_dead_endpoint(), subscribe_endpoint=endpoint) as client,
        pytest.raises(ConfigError),
    ):
        client.subscribe("x.")

    async def both() -> None:
        with pytest.raises(ConfigError):
            async with AsyncClient(endpoint):
                pass
        async with AsyncClient(_dead_endpoint(), subscribe_endpoint=endpoint) as client:
            with pytest.raises(ConfigError):
                client.subscribe("x.")

    asyncio.run(both())
