"""The FLUX driver's camera (TCP 23812) and its less common robot commands, against the simulator.

In-process over real loopback sockets (the simulator fixtures of test_flux_driver.py): the camera's
protocol-3 handshake and JPEG frames (decoded with Pillow), ``fetch_log``,
``cloud_validation_code``, ``position``, raw mode and icontrol. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux.camera import (
    FRAME,
    STREAM_OFF,
    STREAM_ON,
    CameraLink,
    ImageReader,
    encode_image,
)
from actors.flux.commands import raw_quit_end
from actors.flux.driver import FluxDriver
from actors.flux.simulator import FluxSimulator
from actors.fluxfamily import crypto
from actors.fluxfamily.framing import ProtocolViolation
from actors.simsupport.jpeg import FRAME_HEIGHT, FRAME_WIDTH
from bus.errors import Busy, DeviceFault, InvalidArguments
from bus.testing import async_wait_until
from tests.conftest import scaled
from tests.integration.test_flux_driver import config, decoded_size, keys, make_sim

pytestmark = pytest.mark.integration

__all__ = ["keys"]  # the module-scoped key fixture, shared with test_flux_driver.py


@pytest.fixture
async def sim(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[FluxSimulator]:
    async with make_sim(keys, camera_port=0, camera_fps=20.0) as simulator:
        yield simulator


@pytest.fixture
async def driver(
    sim: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
) -> AsyncIterator[FluxDriver]:
    settings = config(sim, camera_port=sim.camera_port)
    async with FluxDriver(sim.address, keys["client"], settings) as drv:
        yield drv


class TestCamera:
    """The camera port: handshake, one frame, a stream, refusals."""

    async def test_one_frame_is_a_jpeg(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        frame = await driver.camera_frame()
        assert decoded_size(frame) == (FRAME_WIDTH, FRAME_HEIGHT)
        assert sim.camera is not None and sim.camera.frames_sent == 1

    async def test_stream_then_stop(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        frames: list[bytes] = []
        async with asyncio.timeout(scaled(10)):
            stream = driver.camera_frames()
            async for frame in stream:
                frames.append(frame)
                if len(frames) == 3:
                    break
            await stream.aclose()  # sends s- and closes
        assert all(decoded_size(frame) == (FRAME_WIDTH, FRAME_HEIGHT) for frame in frames)
        assert sim.camera is not None and sim.camera.frames_sent >= 3

    async def test_untrusted_key_is_refused(
        self, sim: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        stranger = FluxDriver(
            sim.address, crypto.new_key(1024), config(sim, camera_port=sim.camera_port)
        )
        with pytest.raises(DeviceFault) as caught:
            await stranger.camera_frame()
        assert caught.value.details["device_code"] == "AUTH_ERROR"

    async def test_link_reports_device_uuid(
        self, sim: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        async with asyncio.timeout(scaled(5)):
            link = await CameraLink.open(sim.address, sim.camera_port, keys["client"])
        try:
            assert link.device == sim.uuid
        finally:
            link.close()


def test_camera_commands_are_fluxclients_bytes() -> None:
    """The exact bytes fluxclient's FluxCamera sends (struct.pack("<H1s", 3, b"f") ...)."""
    assert (FRAME, STREAM_ON, STREAM_OFF) == (b"\x03\x00f", b"\x04\x00s+", b"\x04\x00s-")
    assert encode_image(b"jpeg") == b"\x04\x00\x00\x00jpeg"  # uint32-LE length, then bytes


def test_image_reader_any_split() -> None:
    """Images come whole whatever the split; a huge length field is a protocol violation."""
    wire = encode_image(b"\xff\xd8one\xff\xd9") + encode_image(b"") + encode_image(b"two")
    reader = ImageReader()
    images = [image for byte in wire for image in reader.feed(bytes([byte]))]
    assert images == [b"\xff\xd8one\xff\xd9", b"", b"two"]
    with pytest.raises(ProtocolViolation):
        ImageReader().feed(b"\xff\xff\xff\xff")


def test_raw_quit_marker() -> None:
    """Framed answers resume after at least nine zeros and one non-zero byte."""
    assert raw_quit_end(b"echo\n" + b"\x00" * 8 + b"\x01") is None
    assert raw_quit_end(b"echo\n" + b"\x00" * 64) is None
    assert raw_quit_end(b"echo\n" + b"\x00" * 64 + b"\x01\x02\x00ok") == 5 + 65


class TestRobotExtras:
    """fetch_log, cloud_validation_code, position, raw and icontrol."""

    async def test_fetch_log(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        sim.device.logs["fluxrobotd.log"] = b"line 1\nline 2\n"
        progress: list[tuple[int, int]] = []
        log = await driver.fetch_log(
            "fluxrobotd.log", on_progress=lambda done, total: progress.append((done, total))
        )
        assert (log.mimetype, log.data) == ("text/plain", b"line 1\nline 2\n")
        assert progress[-1] == (14, 14)
        with pytest.raises(InvalidArguments):
            await driver.fetch_log("../../etc/shadow")  # the device refuses escapes: BAD_PARAMS
        with pytest.raises(DeviceFault) as caught:
            await driver.fetch_log("missing.log")
        assert caught.value.details["device_code"] == "NOT_EXIST"

    async def test_cloud_validation_code(self, driver: FluxDriver) -> None:
        token, digest = await driver.cloud_validation_code()
        assert len(token) == 32 and len(digest) == 32
        assert base64.b64encode(digest)  # bytes, ready to sign

    async def test_position_follows_the_task(self, driver: FluxDriver) -> None:
        assert await driver.position() == "CommandTask"
        await driver.maintain()
        assert await driver.position() == "MaintainTask"
        await driver.maintain_quit()
        assert await driver.position() == "CommandTask"

    async def test_raw_pipe(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        await driver.raw()
        assert sim.status[0] == -10
        with pytest.raises(Busy):
            await driver.list_files("/SD/")
        await driver.raw_send(b"+G28\n")
        echoed = b""
        async with asyncio.timeout(scaled(5)):
            while echoed != b"+G28\n":
                echoed += await driver.raw_recv(scaled(1))
        assert await driver.raw_recv(0.05) == b""  # silence, and the link stays up
        await driver.raw_send(b"G1 X5\n")
        await driver.raw_quit()  # the unread echo is skipped up to the end marker
        assert sim.status[0] == 0
        assert await driver.position() == "CommandTask"

    async def test_icontrol_holds_until_left(
        self, driver: FluxDriver, sim: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        await driver.icontrol()
        assert sim.status[0] == -3
        with pytest.raises(Busy):
            await driver.position()
        await driver.icontrol_quit()  # the session is renewed: the device ends the task
        await async_wait_until(lambda: sim.status[0] == 0, scaled(5), "icontrol released")
        assert await driver.position() == "CommandTask"
