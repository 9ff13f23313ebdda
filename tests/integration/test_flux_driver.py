"""The FLUX driver against the simulator over real sockets on a loopback address of its own.

Every wait is bounded (``scaled``); tests synchronise on answers, progress callbacks and the
driver's connected state, never on sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image

from actors.flux.config import FluxConfig
from actors.flux.driver import FluxDriver
from actors.flux.fcode import build_fcode
from actors.flux.simulator import FluxSimulator
from actors.flux.testing import random_loopback
from actors.fluxfamily import crypto
from actors.simsupport.jpeg import FRAME_HEIGHT, FRAME_WIDTH
from bus.errors import (
    Busy,
    DeviceFault,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidArguments,
)
from bus.testing import async_wait_until
from tests.conftest import scaled

pytestmark = pytest.mark.integration

JOB = build_fcode(
    b"G28\nG1 X10\n", {"HEAD_TYPE": "EXTRUDER", "TIME_COST": "1.0"}, [b"\x89PNG preview"]
)


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    """Keys for the module: generating per test would cost more than the tests."""
    keys = {name: crypto.new_key(1024) for name in ("client", "other", "slave")}
    keys["master"] = crypto.new_key(
        2048
    )  # it also signs the TLS certificate, where OpenSSL wants >= 2048
    return keys


def decoded_size(jpeg: bytes) -> tuple[int, int]:
    """Decode a JPEG with a standard decoder (Pillow); its (width, height)."""
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()  # decodes every pixel: a broken stream raises here
        assert image.format == "JPEG" and image.mode == "RGB"
        return image.size


def make_sim(keys: dict[str, rsa.RSAPrivateKey], **overrides: object) -> FluxSimulator:
    settings: dict[str, object] = {
        "address": random_loopback(),
        "robot_port": 0,
        "manage_port": 0,
        "udp_port": 0,
        "group": None,
        "job_duration_s": 0.6,
        "master_key": keys["master"],
        "slave_key": keys["slave"],
        "trusted_keys": [keys["client"].public_key(), keys["other"].public_key()],
        "sd_files": {"job.fc": JOB, "models/part.gcode": b"G1 X1\n", "notes.txt": b"hidden"},
        "usb_files": {"usb.fc": JOB},
    }
    settings.update(overrides)
    return FluxSimulator(**settings)  # type: ignore[arg-type]


def config(sim: FluxSimulator, **overrides: object) -> FluxConfig:
    settings: dict[str, object] = {
        "port": sim.robot_port,
        "connect_timeout_s": scaled(5.0),
        "reply_timeout_s": scaled(5.0),
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "chunk_bytes": 1024,
        "progress_interval_s": 0.0,
    }
    settings.update(overrides)
    return FluxConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def sim(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[FluxSimulator]:
    async with make_sim(keys) as simulator:
        yield simulator


@pytest.fixture
async def driver(
    sim: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
) -> AsyncIterator[FluxDriver]:
    async with FluxDriver(
        sim.address, keys["client"], config(sim), device_key=keys["slave"].public_key()
    ) as drv:
        yield drv


async def wait_status(
    driver: FluxDriver, wanted: int, seen: list[int] | None = None
) -> dict[str, object]:
    """Poll ``player report`` until ``st_id == wanted``; record every id seen."""
    report: dict[str, object] = {}

    async def poll() -> None:
        nonlocal report
        while True:
            report = await driver.report_play()
            if seen is not None and (not seen or seen[-1] != report["st_id"]):
                seen.append(int(report["st_id"]))  # type: ignore[call-overload]
            if report["st_id"] == wanted:
                return

    async with asyncio.timeout(scaled(10)):
        await poll()
    return report


class TestFiles:
    """File commands over the encrypted session."""

    async def test_browse_and_inspect(self, driver: FluxDriver) -> None:
        """Listings hide other extensions; info returns metadata and previews; md5 matches."""
        assert await driver.list_files("/SD/") == [(False, "job.fc"), (True, "models")]
        assert await driver.list_files("/SD/models") == [(False, "part.gcode")]
        assert await driver.list_files("/USB/") == [(False, "usb.fc")]
        metadata, images = await driver.file_info("/SD/job.fc")
        assert metadata == {"HEAD_TYPE": "EXTRUDER", "TIME_COST": "1.0", "size": str(len(JOB))}
        assert images == [("image/png", b"\x89PNG preview")]
        assert await driver.file_info("/SD/models/part.gcode") == ({"size": "6"}, [])
        assert await driver.file_md5("/SD/job.fc") == hashlib.md5(JOB).hexdigest()

    async def test_write_copy_delete(self, driver: FluxDriver) -> None:
        """mkdir, named upload, copy from USB, download, rm and rmdir change the SD tree."""
        await driver.mkdir("/SD/new folder")
        progress: list[tuple[int, int]] = []
        data = bytes(range(256)) * 20
        await driver.upload_file(
            data,
            "/SD/new folder/up.gcode",
            on_progress=lambda done, total: progress.append((done, total)),
        )
        assert progress[0] == (0, len(data)) and progress[-1] == (len(data), len(data))
        assert [done for done, _ in progress] == sorted(done for done, _ in progress)
        await driver.cpfile("/USB/usb.fc", "/SD/new folder/copy.fc")
        assert await driver.list_files("/SD/new folder") == [
            (False, "copy.fc"),
            (False, "up.gcode"),
        ]
        downloaded: list[tuple[int, int]] = []
        result = await driver.download_file(
            "/SD/new folder/up.gcode",
            on_progress=lambda done, total: downloaded.append((done, total)),
        )
        assert (result.mimetype, result.data) == ("text/gcode", data)
        assert downloaded[-1] == (len(data), len(data))
        await driver.rmfile("/SD/new folder/copy.fc")
        await driver.rmdir("/SD/new folder")
        assert await driver.list_files("/SD/") == [(False, "job.fc"), (True, "models")]

    @pytest.mark.parametrize(
        ("call", "cls", "device_code"),
        [
            (lambda d: d.file_info("/SD/missing.fc"), DeviceFault, "NOT_EXIST"),
            (lambda d: d.list_files("/SD/job.fc"), DeviceFault, "NOT_EXIST"),
            (lambda d: d.mkdir("/SD/models"), DeviceFault, "OSERR_EEXIST"),
            (lambda d: d.mkdir("/USB/x"), InvalidArguments, "BAD_PARAMS"),
            (
                lambda d: d.upload_file(b"x", "/SD/a.fc", mimetype="text/gcode"),
                DeviceFault,
                "BAD_FILE_FORMAT",
            ),
            (lambda d: d.rmfile("/SD/models"), DeviceFault, "NOT_EXIST"),
        ],
    )
    async def test_device_errors(
        self, driver: FluxDriver, call, cls: type[Exception], device_code: str
    ) -> None:
        """Error answers become typed errors carrying the device's symbol; the session stays up."""
        with pytest.raises(cls) as caught:
            await call(driver)
        assert caught.value.details["device_code"] == device_code  # type: ignore[attr-defined]
        assert driver.connected and await driver.file_md5("/SD/job.fc")

    async def test_bad_path_is_refused_locally(self, driver: FluxDriver) -> None:
        """Paths outside /SD and /USB never reach the device."""
        with pytest.raises(InvalidArguments) as caught:
            await driver.list_files("/etc")
        assert caught.value.details == {"argument": "path"}


class TestUploadInterruptions:
    """Cancelling an upload, and a link that drops during one."""

    async def test_cancel_mid_upload_leaves_driver_usable(
        self, driver: FluxDriver, sim: FluxSimulator
    ) -> None:
        """Cancelling the task drops the half-sent session; the next call reconnects."""
        data = b"\x00" * 64 * 1024
        task: asyncio.Task[None] | None = None

        def progress(done: int, total: int) -> None:
            if done >= 8 * 1024 and task is not None:
                task.cancel()

        task = asyncio.create_task(driver.upload_file(data, "/SD/big.gcode", on_progress=progress))
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(scaled(10)):
                await task
        assert await driver.list_files("/SD/") == [(False, "job.fc"), (True, "models")]
        await driver.upload_file(b"G1\n", "/SD/small.gcode")
        assert sim.device.storage.read("SD", "small.gcode") == b"G1\n"

    async def test_link_drop_mid_upload(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        """The device closing mid-upload is DeviceUnavailable; the next call reconnects."""
        sim.drop_upload_after(4096)
        with pytest.raises(DeviceUnavailable):
            await driver.upload_file(b"\x01" * 32 * 1024, "/SD/lost.gcode")
        assert await driver.list_files("/SD/models") == [(False, "part.gcode")]
        assert driver.reconnects >= 1

    async def test_forgotten_key_is_trusted_again_on_reconnect(
        self, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        """A device that forgot our key (restarted, or reset) refuses the reconnect with
        AUTH_ERROR; the session's ``on_untrusted`` hook (the flux actor authorises with the
        password there) has it trusted again, and the reconnect goes through. Found by the fault
        suite: a printer simulator killed and restarted left its actor refused for good."""
        async with make_sim(keys) as sim:
            trusted_again: list[str] = []

            async def untrusted() -> None:
                trusted_again.append(sim.trust(keys["client"]))

            async with FluxDriver(
                sim.address, keys["client"], config(sim), device_key=keys["slave"].public_key()
            ) as drv:
                drv.on_untrusted = untrusted
                sim.device.trust.clear()  # what a restart does to the simulator's trust
                sim.drop_upload_after(1024)
                with pytest.raises(DeviceUnavailable):
                    await drv.upload_file(b"\x01" * 8 * 1024, "/SD/lost.gcode")
                await async_wait_until(lambda: drv.connected, scaled(10), "the reconnect")
                assert len(trusted_again) == 1
                assert await drv.list_files("/SD/models") == [(False, "part.gcode")]

    async def test_hung_device_times_out(
        self, sim: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        """No answer in time is DeviceTimeout; once the device answers again the driver recovers."""
        async with FluxDriver(
            sim.address, keys["client"], config(sim, reply_timeout_s=scaled(0.5))
        ) as driver:
            sim.mute()
            with pytest.raises(DeviceTimeout):
                await driver.deviceinfo()
            sim.mute(False)
            info = await driver.deviceinfo()
            assert info["uuid"] == sim.uuid.hex


class TestJob:
    """Uploading to ``#``, running, pausing and aborting a job."""

    async def test_job_walks_the_status_ids(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        """A job goes 1/4 → 16 (progress grows) → 66 → 64, then quit returns to idle."""
        await driver.upload_file(JOB, "#")
        info, images = await driver.play_info()
        assert info["HEAD_TYPE"] == "EXTRUDER" and images == [("image/png", b"\x89PNG preview")]
        await driver.start_play()
        seen: list[int] = []
        report = await wait_status(driver, 64, seen)
        assert report["prog"] == 1.0 and report["st_label"] == "COMPLETED"
        order = [1, 4, 16, 66, 64]
        assert 16 in seen and [order.index(st) for st in seen] == sorted(
            order.index(st) for st in seen
        )
        await driver.quit_play()
        assert (await driver.report_play()) == {"st_id": 0, "st_label": "IDLE"}

    async def test_pause_resume_abort(self, keys: dict[str, rsa.RSAPrivateKey]) -> None:
        """Pause 16 → 50 → 48, resume → 16, abort → 128; busy answers are typed."""
        async with (
            make_sim(keys, job_duration_s=30.0) as sim,
            FluxDriver(sim.address, keys["client"], config(sim)) as driver,
        ):
            with pytest.raises(DeviceFault) as caught:
                await driver.start_play()
            assert caught.value.device_code == "NO_TASK"
            await driver.select_file("/SD/job.fc")
            await driver.start_play()
            await wait_status(driver, 16)
            with pytest.raises(Busy):
                await driver.quit_play()
            with pytest.raises(Busy):
                await driver.maintain()
            await driver.pause_play()
            await wait_status(driver, 48)
            with pytest.raises(Busy):
                await driver.pause_play()
            await driver.resume_play()
            await wait_status(driver, 16)
            await driver.abort_play()
            await wait_status(driver, 128)
            await driver.quit_play()
            assert sim.status == (0, 0.0)

    async def test_gcode_cannot_run(self, driver: FluxDriver) -> None:
        """Only FCode plays: G-code fails at start with FILE_BROKEN."""
        await driver.select_file("/SD/models/part.gcode")
        with pytest.raises(DeviceFault) as caught:
            await driver.start_play()
        assert caught.value.details["symbols"] == ["FILE_BROKEN", "HEADER_ERROR"]


class TestDeviceCommands:
    """deviceinfo, config, firmware, and authentication."""

    async def test_deviceinfo_and_config(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        """Info names the device; config values round-trip and are validated."""
        info = await driver.deviceinfo()
        assert (info["uuid"], info["serial"], info["nickname"], info["model"]) == (
            sim.uuid.hex,
            "XXXXXXXXXX",
            "flux-sim",
            "delta-1",
        )
        assert await driver.config_get("filament_detect") is None
        await driver.config_set("filament_detect", "N")
        assert await driver.config_get("filament_detect") == "N"
        await driver.config_del("filament_detect")
        assert await driver.config_get("filament_detect") is None
        with pytest.raises(InvalidArguments):
            await driver.config_set("filament_detect", "maybe")

    async def test_firmware_update(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        """The image is streamed with progress; the device then restarts (link drops, comes back)."""
        progress: list[tuple[int, int]] = []
        image = b"FXFW" + b"\x00" * 10000
        await driver.update_firmware(
            image, on_progress=lambda done, total: progress.append((done, total))
        )
        assert sim.device.firmware_images == [image] and progress[-1] == (len(image), len(image))
        assert (await driver.deviceinfo())["version"] == "1.6.95"

    async def test_untrusted_key_refused(self, sim: FluxSimulator) -> None:
        """A key the device does not trust fails the handshake with AUTH_ERROR."""
        with pytest.raises(DeviceFault) as caught:
            await FluxDriver(sim.address, crypto.new_key(1024), config(sim)).open()
        assert caught.value.device_code == "AUTH_ERROR"

    async def test_reconnects_after_outage(self, keys: dict[str, rsa.RSAPrivateKey]) -> None:
        """While the device is away calls fail fast; when it is back the driver reconnects."""
        first = make_sim(keys)
        await first.start()
        address, port = first.address, first.robot_port
        driver = FluxDriver(
            address, keys["client"], config(first, backoff_initial_s=0.05, backoff_max_s=0.1)
        )
        await driver.open()
        try:
            await first.stop()
            with pytest.raises(DeviceUnavailable):
                await driver.deviceinfo()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(DeviceUnavailable):
                await driver.deviceinfo()
            assert loop.time() - started < scaled(1.0)
            async with make_sim(keys, address=address, robot_port=port):
                await async_wait_until(lambda: driver.connected, scaled(10), "reconnect")
                assert (await driver.deviceinfo())["serial"] == "XXXXXXXXXX"
        finally:
            await driver.close()


class TestModes:
    """Maintain and scan modes, the device lock, and kick."""

    async def test_maintain(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        """Maintain commands answer; others are refused locally until quit."""
        await driver.maintain()
        assert sim.status[0] == -1
        with pytest.raises(Busy):
            await driver.list_files("/SD/")
        await driver.maintain_home()
        await driver.maintain_move(x=1.0, z=50.0)
        lines: list[str] = []
        assert await driver.maintain_calibrate(on_message=lines.append) == [0.01, -0.02, 0.03]
        assert lines == ["CTRL POINT 1", "CTRL POINT 2", "CTRL POINT 3"]
        assert await driver.maintain_zprobe() == pytest.approx(0.1234)
        assert (await driver.maintain_head_info())["module"] == "EXTRUDER"
        assert "rt" in await driver.maintain_head_status()
        await driver.maintain_set_heater(0, 200.0)
        assert (await driver.maintain_diagnosis_sensor())["x_endstop"] == "OK"
        await driver.maintain_load_filament(0, 220.0, on_message=lines.append)
        assert lines[-2:] == ["CTRL HEATING 220.0", "CTRL LOADING"]
        with pytest.raises(InvalidArguments):
            await driver.maintain_set_heater(1, 200.0)
        await (
            driver.maintain_interrupt_load_filament()
        )  # no answer: the next command still gets its own
        written: list[str] = []
        await driver.maintain_update_head(b"\x55" * 10000, on_message=written.append)
        assert written == ["CTRL INIT", "CTRL WRITE 4096", "CTRL WRITE 8192", "CTRL WRITE 10000"]
        await driver.maintain_quit()
        assert sim.status[0] == 0
        assert await driver.list_files("/SD/models") == [(False, "part.gcode")]
        with pytest.raises(DeviceFault) as caught:
            await driver.maintain_home()
        assert caught.value.device_code == "OPERATION_ERROR"

    async def test_scan(self, driver: FluxDriver, sim: FluxSimulator) -> None:
        """Scan mode returns JPEG images."""
        await driver.scan()
        assert sim.status[0] == -2
        await driver.scan_step_length(0.0314)
        await driver.scan_forward()
        await driver.scan_laser(left=True, right=False)
        assert await driver.scan_get_calibrate() == [320, 320, 320]
        assert await driver.scan_check() == "ok camera"
        image = await driver.scan_oneshot()
        assert decoded_size(image) == (FRAME_WIDTH, FRAME_HEIGHT)
        shots = await driver.scan_images()
        assert [decoded_size(shot) for shot in shots] == [(FRAME_WIDTH, FRAME_HEIGHT)] * 3
        assert len(set(shots)) == 3  # left laser, right laser, none: three different pictures
        await driver.scan_quit()

    async def test_lock_and_kick(
        self, driver: FluxDriver, sim: FluxSimulator, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        """A second client finds the device busy, kicks the holder, which then reconnects."""
        await driver.maintain()
        async with FluxDriver(sim.address, keys["other"], config(sim)) as other:
            with pytest.raises(Busy) as caught:
                await other.scan()
            assert caught.value.details["symbols"][0] == "RESOURCE_BUSY"
            report = await other.report_play()
            assert report["st_label"] == "OCCUPIED" and report["info"].endswith("@MaintainTask")
            await other.kick()
            with pytest.raises(DeviceFault) as kicked:
                await driver.maintain_home()
            assert kicked.value.device_code == "KICKED"
            await other.scan()
            await other.scan_quit()
        assert driver.mode == "command"
        assert await driver.list_files("/SD/models") == [(False, "part.gcode")]
