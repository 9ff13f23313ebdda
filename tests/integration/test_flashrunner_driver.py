"""The FlashRunner driver against the simulator over real TCP sockets and a real pty.

Every wait is bounded (``scaled``); tests synchronise on answers, progress callbacks and the
link's connected state, never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flashrunner import crypto
from actors.flashrunner.config import FlashRunnerConfig
from actors.flashrunner.driver import LIBRARY_VERSION, FlashRunnerDriver
from actors.flashrunner.protocol import FileType, MultiChannel
from actors.flashrunner.simulator import FlashRunnerSimulator
from actors.flashrunner.transport_lan import TcpTransport
from actors.flashrunner.transport_serial import BAUD_HIGH
from bus.errors import (
    Busy,
    DeviceFault,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidArguments,
)
from bus.testing import async_wait_until
from tests.conftest import Processes, scaled

pytestmark = pytest.mark.integration

PROJECT = b"!ENGINEMASK 0F\nLOADDRIVER libsim.so SIM SIM SIM\nTPSTART\nTPCMD PROGRAM\nTPEND\n"


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    """One device key for the module (generating RSA-2048 per test would cost seconds)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def sim(private_key: rsa.RSAPrivateKey) -> AsyncIterator[FlashRunnerSimulator]:
    """An in-process simulator on 127.0.0.1 (port 0) and a pty, with short runs."""
    async with FlashRunnerSimulator(
        pty=True, channels=4, run_s=0.2, private_key=private_key
    ) as simulator:
        yield simulator


def fast_config(**overrides: object) -> FlashRunnerConfig:
    """Timing for tests: quick reconnects, generous (scaled) answer timeouts."""
    settings: dict[str, object] = {
        "command_timeout_s": scaled(3.0),
        "transfer_timeout_s": scaled(3.0),
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.2,
        "chunk_bytes": 1024,
        "poll_interval_s": 0.02,
    }
    settings.update(overrides)
    return FlashRunnerConfig(**settings)  # type: ignore[arg-type]


def make_driver(sim: FlashRunnerSimulator, link: str, **overrides: object) -> FlashRunnerDriver:
    """A driver on the simulator's TCP port (``lan``) or its pty (``serial``)."""
    if link == "lan":
        return FlashRunnerDriver.from_settings(
            "LAN", sim.tcp_address, fast_config(logger_port=sim.logger_port, **overrides)
        )
    assert sim.pty_path is not None
    return FlashRunnerDriver.from_settings(sim.pty_path, "115200", fast_config(**overrides))


@pytest.fixture(params=["lan", "serial"])
async def driver(
    request: pytest.FixtureRequest, sim: FlashRunnerSimulator
) -> AsyncIterator[FlashRunnerDriver]:
    """An open driver, once over TCP and once over the pty."""
    async with make_driver(sim, request.param) as drv:
        yield drv


@pytest.fixture
async def lan(sim: FlashRunnerSimulator) -> AsyncIterator[FlashRunnerDriver]:
    """An open driver over TCP (the link that can be dropped)."""
    async with make_driver(sim, "lan") as drv:
        yield drv


async def upload_project(drv: FlashRunnerDriver) -> None:
    await drv.upload("demo.prj", PROJECT, FileType.PRJ)


class TestCommands:
    """Plain commands and answers, over both links."""

    async def test_send_and_get_answer(self, driver: FlashRunnerDriver) -> None:
        """FR_SendCommand + FR_GetAnswer return the raw answer; a mask frame gets one per channel."""
        await driver.send_command("#GETENGSTATUS")
        answer = await driver.get_answer(scaled(2))
        assert answer.raw == "55|IIII|4>"
        await driver.send_command_ex([1, 3], "SGETERR")
        answers = [await driver.get_answer(scaled(2)) for _ in range(2)]
        assert [a.raw for a in answers] == ["01|>", "03|>"]
        with pytest.raises(InvalidArguments):
            await driver.get_answer(0.1)

    async def test_one_frame_per_channel(self, sim: FlashRunnerSimulator) -> None:
        """With ``multi_channel = "each"`` a channel list becomes one ``#<ch>*`` frame per channel."""
        async with make_driver(sim, "lan", multi_channel=MultiChannel.EACH) as drv:
            await drv.send_command_ex([2, 4], "SGETERR")
            assert [(await drv.get_answer(scaled(2))).raw for _ in range(2)] == ["02|>", "04|>"]

    async def test_nack_is_device_fault(self, driver: FlashRunnerDriver) -> None:
        """A '!' answer raises DeviceFault with the device's symbol, and the link stays usable."""
        with pytest.raises(DeviceFault) as info:
            await driver.execute("NOSUCHCOMMAND")
        assert info.value.device_code == "ERR_UNKNOWN_COMMAND"
        assert (await driver.execute("NOSUCHCOMMAND", check=False))[0].ok is False
        await driver.ping()
        assert await driver.version() == "FlashRunner 2.0 simulator 1.0.0"
        assert driver.library_version() == LIBRARY_VERSION

    async def test_get_answer_after_timeout(
        self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator
    ) -> None:
        """FR_GetAnswer that times out can be called again for the same answer."""
        sim.stall(scaled(0.5))
        await lan.send_command("#55*SPING")
        with pytest.raises(DeviceTimeout):
            await lan.get_answer(0.05)
        assert (await lan.get_answer(scaled(3))).raw == "55|>"

    async def test_high_baudrate(self, sim: FlashRunnerSimulator) -> None:
        """SETSERIALBAUDRATE HIGH is confirmed at 115200, then the port is reopened at 3 Mbaud."""
        async with make_driver(sim, "serial", high_baudrate=True) as drv:
            assert sim.device.baud_high
            assert drv.transport.description.endswith(f"@{BAUD_HIGH}")
            await drv.ping()
        async with make_driver(sim, "lan") as drv:
            with pytest.raises(InvalidArguments):
                await drv.set_high_baudrate()

    async def test_bad_settings(self) -> None:
        """fr_comm's settings strings are validated before any I/O."""
        for port, settings in [
            ("LAN", "host:notaport"),
            ("LAN", ":1234"),
            ("/dev/ttyUSB0", "9600"),
        ]:
            with pytest.raises(InvalidArguments):
                FlashRunnerDriver.from_settings(port, settings)

    async def test_connect_refused(self) -> None:
        """No device at the address: DeviceUnavailable at open."""
        with socket_port() as port:
            drv = FlashRunnerDriver(TcpTransport("127.0.0.1", port), fast_config())
        with pytest.raises(DeviceUnavailable):
            await drv.open()


class socket_port:
    """A loopback port that is closed again on exit (nothing listens on it afterwards)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


class TestFiles:
    """File transfer with progress and cancellation."""

    @pytest.mark.parametrize("file_type", list(FileType))
    async def test_round_trip(
        self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator, file_type: FileType
    ) -> None:
        """Every file type goes up and comes back byte for byte, with monotonic progress."""
        data = os.urandom(5000)
        progress: list[tuple[int, int]] = []
        await lan.upload(
            "image.bin",
            data,
            file_type,
            on_progress=lambda done, total: progress.append((done, total)),
        )
        assert sim.device.files[file_type]["image.bin"] == data
        assert progress == [
            (0, 5000),
            (1024, 5000),
            (2048, 5000),
            (3072, 5000),
            (4096, 5000),
            (5000, 5000),
        ]
        down: list[tuple[int, int]] = []
        assert (
            await lan.download("image.bin", file_type, on_progress=lambda d, t: down.append((d, t)))
            == data
        )
        assert down[0] == (0, 5000) and down[-1] == (5000, 5000)
        assert [d for d, _ in down] == sorted(d for d, _ in down)

    async def test_files_on_disk(self, driver: FlashRunnerDriver, tmp_path: Path) -> None:
        """FR_SendFile / FR_GetFile work with paths, over both links; empty files too."""
        for size in (0, 3000):
            source = tmp_path / f"app{size}.frb"
            source.write_bytes(os.urandom(size))
            await driver.send_file(source, FileType.FRB)
            target = await driver.get_file(source.name, tmp_path / "..", FileType.FRB)
            assert target.read_bytes() == source.read_bytes()

    async def test_missing_file(self, lan: FlashRunnerDriver) -> None:
        """Fetching an unknown file is a DeviceFault naming the device's reason."""
        with pytest.raises(DeviceFault) as info:
            await lan.download("nope.frb", FileType.FRB)
        assert info.value.device_code == "ERR_FILE_NOT_FOUND"
        with pytest.raises(InvalidArguments):
            await lan.download("bad name", FileType.FRB)

    async def test_cancel_upload(
        self, driver: FlashRunnerDriver, sim: FlashRunnerSimulator
    ) -> None:
        """Cancelling mid-upload aborts it on the device, which stays usable."""
        started = asyncio.Event()

        def on_progress(done: int, total: int) -> None:
            if done >= 2048:
                started.set()

        task = asyncio.create_task(
            driver.upload("big.frb", os.urandom(64 * 1024), FileType.FRB, on_progress=on_progress)
        )
        await asyncio.wait_for(started.wait(), scaled(5))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, scaled(5))
        assert "FSABORT" in sim.device.commands_seen
        assert "big.frb" not in sim.device.files[FileType.FRB]
        await driver.ping()
        await driver.upload("small.frb", b"ok", FileType.FRB)
        assert sim.device.files[FileType.FRB]["small.frb"] == b"ok"

    async def test_cancel_download(self, lan: FlashRunnerDriver) -> None:
        """Cancelling mid-download leaves the stream in step: the next transfer is intact."""
        data = os.urandom(64 * 1024)
        await lan.upload("big.frb", data, FileType.FRB)
        started = asyncio.Event()
        task = asyncio.create_task(
            lan.download(
                "big.frb", FileType.FRB, on_progress=lambda d, t: d >= 2048 and started.set()
            )
        )
        await asyncio.wait_for(started.wait(), scaled(5))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, scaled(5))
        assert await lan.download("big.frb", FileType.FRB) == data


class TestProjects:
    """FR_RunProject: RUN, poll, per-channel results."""

    async def test_run_with_failing_channel(
        self, driver: FlashRunnerDriver, sim: FlashRunnerSimulator
    ) -> None:
        """Each channel reports as it finishes; the failed one carries the device's error text."""
        await upload_project(driver)
        sim.fail_on(2)
        seen: list[tuple[int, bool]] = []
        results = await driver.run_project(
            "demo", [1, 2, 3], scaled(10), lambda ch, ok: seen.append((ch, ok))
        )
        assert sorted(seen) == [(1, True), (2, False), (3, True)]
        assert {ch: r.passed for ch, r in results.items()} == {1: True, 2: False, 3: True}
        assert results[2].error is not None and results[2].error.startswith("ERR_PROJECT_FAILED")
        status = await driver.engine_status()
        assert [status.chars[ch] for ch in (1, 2, 3, 4)] == ["P", "F", "P", "I"]

    async def test_run_timeout(self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator) -> None:
        """A run that outlasts its timeout raises DeviceTimeout naming the pending channels."""
        await upload_project(lan)
        sim.device.run_s = scaled(2.0)
        with pytest.raises(DeviceTimeout) as info:
            await lan.run_project("demo.prj", [1, 2], 0.3)
        assert info.value.details["pending"] == [1, 2]
        with pytest.raises(Busy):  # the channels still run on the device
            await lan.execute("RUN demo.prj", 1)
        await lan.ping()

    async def test_cancel_run(self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator) -> None:
        """Cancelling FR_RunProject mid-poll leaves the link in step; the run ends on the device."""
        await upload_project(lan)
        sim.device.run_s = 0.5
        task = asyncio.create_task(lan.run_project("demo", [1], scaled(10)))
        await async_wait_until(
            lambda: sim.device.commands_seen.count("GETENGSTATUS") >= 2, scaled(5), "two polls"
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, scaled(5))
        assert (await lan.run_project("demo", [2], scaled(10)))[2].passed

    async def test_run_errors(self, lan: FlashRunnerDriver) -> None:
        """A missing project is a DeviceFault; the master channel is not an engine."""
        with pytest.raises(DeviceFault) as info:
            await lan.run_project("missing", [1], scaled(5))
        assert info.value.device_code == "ERR_FILE_NOT_FOUND"
        with pytest.raises(InvalidArguments):
            await lan.run_project("demo", [55], 1)

    async def test_busy_frames_extend_the_wait(self, private_key: rsa.RSAPrivateKey) -> None:
        """With a synchronous RUN, BUSY frames keep a short answer timeout from expiring."""
        sim = FlashRunnerSimulator(
            run_s=0.6,
            sync_run=True,
            busy_interval_s=0.05,
            fail_channels=[2],
            private_key=private_key,
        )
        async with sim, make_driver(sim, "lan") as drv:
            await upload_project(drv)
            answers = await drv.execute("RUN demo.prj", [1, 2], timeout_s=scaled(0.4), check=False)
            assert [(a.channel, a.ok) for a in answers] == [(1, True), (2, False)]


class TestEncryption:
    """Public key and both encryption modes, decrypted by the simulated unit."""

    async def test_single_shot(self, driver: FlashRunnerDriver, sim: FlashRunnerSimulator) -> None:
        """FR_EncryptData: a header before each block; the device stores the plaintext."""
        with pytest.raises(InvalidArguments):
            driver.encrypt_data(b"x")
        pem = await driver.get_public_key()
        assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
        for address, serial in ((0x100, b"SN-000001"), (0x200, b"SN-000002")):
            block = driver.encrypt_data(serial)
            await driver.dynmem_send_header(1, block.header)
            await driver.dynmem_write_encrypted(1, address, block.payload)
        assert sim.device.channels[1].dynmem == {0x100: b"SN-000001", 0x200: b"SN-000002"}

    async def test_session(self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator) -> None:
        """FR_DynMem*: one header, chained blocks on two channels, then reset."""
        await lan.get_public_key()
        header = lan.dynmem_begin_encryption()
        await lan.dynmem_send_header([1, 2], header)
        blocks = [b"first block", b"second, longer block of data", b"3"]
        for index, block in enumerate(blocks):
            await lan.dynmem_write_encrypted(
                [1, 2], 0x1000 + 0x100 * index, lan.dynmem_encrypt_data(block)
            )
        expected = {0x1000 + 0x100 * i: b for i, b in enumerate(blocks)}
        assert sim.device.channels[1].dynmem == expected == sim.device.channels[2].dynmem
        lan.dynmem_reset_encryption()
        with pytest.raises(InvalidArguments):
            lan.dynmem_encrypt_data(b"x")
        with pytest.raises(DeviceFault) as info:  # a block the unit has no key for
            await lan.dynmem_write_encrypted(
                3,
                0,
                crypto.encrypt_data(
                    crypto.load_public_key(await lan.get_public_key()), b"x"
                ).payload,
            )
        assert info.value.device_code == "ERR_NO_KEY"
        await lan.dynmem_write(3, 0x10, b"\x01\x02")
        assert sim.device.channels[3].dynmem == {0x10: b"\x01\x02"}


class TestFaults:
    """Each fault gives a typed error and leaves the driver usable."""

    async def test_stall(self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator) -> None:
        """A stalled answer times out; its late arrival is discarded, not given to the next command."""
        sim.stall(scaled(0.3))
        with pytest.raises(DeviceTimeout):
            await lan.execute("SGETVER", timeout_s=0.05)
        assert (await lan.execute("GETENGSTATUS"))[0].text == "IIII|4"

    async def test_garbled(self, driver: FlashRunnerDriver, sim: FlashRunnerSimulator) -> None:
        """A garbled answer is a DeviceFault; the stream resynchronises at its prompt."""
        sim.garble()
        with pytest.raises(DeviceFault) as info:
            await driver.version()
        assert info.value.device_code == "GARBLED"
        assert await driver.version() == "FlashRunner 2.0 simulator 1.0.0"

    async def test_injected_nack(self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator) -> None:
        """A command made to fail raises DeviceFault until the fault is cleared."""
        sim.nack("SPING")
        with pytest.raises(DeviceFault):
            await lan.ping()
        sim.clear_faults()
        await lan.ping()

    async def test_drop_mid_transfer(
        self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator
    ) -> None:
        """A dropped link fails the transfer with DeviceUnavailable; the driver reconnects by itself."""
        sim.drop_mid_transfer(after_chunks=3)
        with pytest.raises(DeviceUnavailable):
            await lan.upload("fw.frb", os.urandom(10_000), FileType.FRB)
        assert "fw.frb" not in sim.device.files[FileType.FRB]
        await lan.wait_connected(scaled(5))
        await lan.upload("fw.frb", b"again", FileType.FRB)
        assert lan.reconnects == 1

    async def test_reconnect_with_backoff(
        self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator
    ) -> None:
        """While the unit is gone commands fail fast; once it is back the link comes back."""
        await sim.go_offline()
        await async_wait_until(lambda: not lan.connected, scaled(5), "the link to drop")
        started = time.monotonic()
        with pytest.raises(DeviceUnavailable):
            await lan.ping()
        assert time.monotonic() - started < 0.5
        await sim.go_online()
        await lan.wait_connected(scaled(5))
        await lan.ping()

    async def test_backoff_when_peer_hangs_up_at_once(self) -> None:
        """A peer that accepts and closes at once is retried with growing pauses, not in a tight loop."""
        accepted = 0

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writer.transport.abort()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        drv = FlashRunnerDriver(
            TcpTransport("127.0.0.1", port), fast_config(backoff_initial_s=0.05, backoff_max_s=0.2)
        )
        try:
            await drv.open()
            await async_wait_until(lambda: accepted >= 4, scaled(5), "four connections")
            # pauses of about 0.05, 0.1, 0.2, 0.2 s: four connections take at least ~0.25 s
            started, before = time.monotonic(), accepted
            await async_wait_until(lambda: accepted >= before + 2, scaled(5), "two more")
            assert time.monotonic() - started >= 0.15
        finally:
            await drv.close()
            server.close()

    async def test_too_many_abandoned_answers_resync(
        self, lan: FlashRunnerDriver, sim: FlashRunnerSimulator
    ) -> None:
        """When more answers are owed than allowed, the driver reconnects to get back in step."""
        sim.stall(scaled(1.0), count=6)
        for _ in range(6):
            with pytest.raises((DeviceTimeout, DeviceUnavailable)):
                await lan.execute("SPING", timeout_s=0.01)
        await lan.wait_connected(scaled(5))
        sim.clear_faults()
        await lan.ping()
        assert lan.reconnects >= 1


class TestLogger:
    """FR_Logger over the logger port."""

    async def test_lines_follow_the_run(self, lan: FlashRunnerDriver) -> None:
        """Run start and end appear as log lines, in order."""
        await upload_project(lan)
        async with lan.logger() as logger:
            lines = logger.lines()
            greeting = await asyncio.wait_for(anext(lines), scaled(5))
            assert greeting.endswith("logger session started")
            await lan.run_project("demo", [1], scaled(5))

            async def until_pass() -> list[str]:
                seen = []
                async for line in lines:
                    seen.append(line)
                    if "RUN demo.prj PASS" in line:
                        return seen
                return seen

            seen = await asyncio.wait_for(until_pass(), scaled(5))
        assert any("ch01 RUN demo.prj started" in line for line in seen)

    async def test_serial_has_no_logger(self, sim: FlashRunnerSimulator) -> None:
        """The logger is LAN only."""
        with pytest.raises(InvalidArguments):
            make_driver(sim, "serial").logger()


class TestSimulatorProcess:
    """``python -m actors.flashrunner.simulator`` as a real process."""

    def test_ready_line_and_sigterm(self, processes: Processes) -> None:
        """It prints one ready line, serves TCP and the pty, and exits cleanly on SIGTERM."""
        proc = processes.start(
            "-m",
            "actors.flashrunner.simulator",
            "--port",
            "0",
            "--pty",
            "--channels",
            "2",
            "--fail-channels",
            "2",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        info = json.loads(read_line(proc, scaled(15)))
        assert (
            info["event"] == "ready"
            and info["tcp"].startswith("127.0.0.1:")
            and info["pty"].startswith("/dev/")
        )

        async def check() -> None:
            for port, settings in (("LAN", info["tcp"]), (info["pty"], "115200")):
                async with FlashRunnerDriver.from_settings(port, settings, fast_config()) as drv:
                    assert (await drv.engine_status()).chars == {1: "I", 2: "I"}

        asyncio.run(check())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=scaled(10)) == 0
        proc.stdout.close()


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """Read one stdout line of ``proc`` within ``timeout`` (a thread, since pipes cannot time out)."""
    import threading

    box: list[bytes] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not box:
        pytest.fail(f"no ready line within {timeout} s")
    return box[0].decode()
