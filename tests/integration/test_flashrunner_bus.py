"""The FlashRunner end to end: the ``fr_comm`` facade, a broker process, actor processes, and
simulator processes on loopback.

``fr1`` serves a simulator whose channel 3 fails and whose RSA key the test owns (so it can
decrypt what the actor encrypts). ``fr2`` serves a simulator that answers slowly (20 ms per
command), so transfers can be cancelled and the simulator killed mid-transfer, then restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flashrunner import crypto
from bus.errors import BusError
from clients.flashrunner import (
    FlashRunner,
    FR_Comm_Exception,
    FR_FileType,
    FR_GetDllVersion,
    FR_Logger,
    ProgressHandler,
)
from tests.conftest import (
    Endpoints,
    Line,
    Processes,
    free_port,
    scaled,
    wait_ready_line,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration


@dataclass
class Bench:
    """The running line and what the tests need to reach into it."""

    line: Line
    key: rsa.RSAPrivateKey
    sim2_args: list[str]
    sim2: subprocess.Popen[bytes]
    sim3_args: list[str]


def _sim_args(port: int, logger_port: int, *extra: str) -> list[str]:
    return [
        "-m",
        "actors.flashrunner.simulator",
        "--listen",
        f"127.0.0.1:{port}",
        "--logger-listen",
        f"127.0.0.1:{logger_port}",
        *extra,
    ]


def _start_sim(processes: Processes, args: list[str]) -> subprocess.Popen[bytes]:
    sim = processes.start(*args, stdout=subprocess.PIPE)
    wait_ready_line(sim, scaled(20))
    return sim


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("fr")
    processes = Processes()
    try:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file = tmp / "unit.pem"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        p1, l1, p2, l2, p3, l3 = (free_port() for _ in range(6))
        _start_sim(
            processes,
            _sim_args(
                p1, l1, "--run-s", "1.0", "--fail-channels", "3", "--key-file", str(key_file)
            ),
        )
        sim2_args = _sim_args(p2, l2)
        sim2 = _start_sim(processes, [*sim2_args, "--stall-s", "0.02", "--stall-count", "1000000"])
        common = {"port": "LAN", "backoff_max_s": 0.3, "command_timeout_s": 3.0}
        actors = [
            {
                "name": "fr1",
                "kind": "flashrunner",
                "options": {
                    **common,
                    "settings": f"127.0.0.1:{p1}",
                    "logger_address": f"127.0.0.1:{l1}",
                },
            },
            {
                "name": "fr2",
                "kind": "flashrunner",
                "options": {
                    **common,
                    "settings": f"127.0.0.1:{p2}",
                    "logger_address": f"127.0.0.1:{l2}",
                },
            },
            # No simulator yet on p3: the actor must start anyway.
            {
                "name": "fr3",
                "kind": "flashrunner",
                "options": {
                    **common,
                    "settings": f"127.0.0.1:{p3}",
                    "logger_address": f"127.0.0.1:{l3}",
                },
            },
        ]
        endpoints = Endpoints.fresh()
        line = Line(write_config(tmp / "fr.toml", endpoints, actors), endpoints, processes)
        line.start_broker()
        line.start_actor("fr1")
        line.start_actor("fr2")
        line.start_actor("fr3")
        yield Bench(line, key, sim2_args, sim2, _sim_args(p3, l3))
    finally:
        processes.cleanup()


@pytest.fixture
def fr(bench: Bench) -> Iterator[FlashRunner]:
    with bench.line.client(timeout=10) as bus, FlashRunner(bus, "fr1") as session:
        yield session


class Recorder(ProgressHandler):
    def __init__(self) -> None:
        super().__init__()
        self.updates: list[tuple[int, int, int]] = []

    def on_progress(self, percent: int, done: int, total: int) -> None:
        self.updates.append((percent, done, total))


def _assert_progress(updates: list[tuple[int, int, int]], size: int) -> None:
    assert updates, "no progress reported"
    dones = [done for _, done, _ in updates]
    assert dones == sorted(dones)
    assert updates[-1] == (100, size, size)
    assert all(total == size for _, _, total in updates)


def test_send_command_and_get_answer(fr: FlashRunner) -> None:
    """FR_SendCommand / FR_SendCommand_Ex queue answers that FR_GetAnswer returns in order."""
    assert FR_GetDllVersion().startswith("linebus")
    assert fr.FR_GetDllVersion().startswith("linebus-flashrunner")
    fr.FR_SendCommand("#55*SPING")
    fr.FR_SendCommand("#GETENGSTATUS")
    assert fr.FR_GetAnswer(1500) == "55|>"
    assert fr.FR_GetAnswer(1500).startswith("55|")
    fr.FR_SendCommand_Ex([1, 2], "SGETERR")
    answers = [fr.FR_GetAnswer(1500), fr.FR_GetAnswer(1500)]
    assert [a[:3] for a in answers] == ["01|", "02|"] and all(a.endswith(">") for a in answers)
    fr.FR_SendCommand("#55*NOSUCHCOMMAND")
    assert fr.FR_GetAnswer(1500).endswith("!")  # a failure answer is returned, as fr_comm does
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_GetAnswer(200)  # nothing was sent
    assert caught.value.code == "invalid_arguments"


@pytest.mark.parametrize("file_type", list(FR_FileType))
def test_file_round_trip_with_progress(
    fr: FlashRunner, file_type: FR_FileType, tmp_path: Path
) -> None:
    """Every file type goes to the unit and comes back byte for byte, with progress both ways."""
    size = 200_000 if file_type is FR_FileType.FRB else 5_000  # above and below the bulk-frame size
    source = tmp_path / f"file_{file_type.value.lower()}.bin"
    source.write_bytes(os.urandom(size))
    sent = Recorder()
    fr.FR_SendFile(source, file_type, sent)
    _assert_progress(sent.updates, size)
    got: list[tuple[int, int, int]] = []
    dest = tmp_path / "back"
    dest.mkdir()
    path = fr.FR_GetFile(source.name, dest, file_type, lambda *update: got.append(update))
    assert path == dest / source.name and path.read_bytes() == source.read_bytes()
    _assert_progress(got, size)


def test_project_run_with_a_failing_channel(bench: Bench, fr: FlashRunner, tmp_path: Path) -> None:
    """FR_RunProject reports each channel as it finishes, in the callback and as events."""
    project = tmp_path / "bench.prj"
    project.write_text("; test project\n")
    fr.FR_SendFile(project, FR_FileType.PRJ)
    seen: list[tuple[int, bool]] = []
    with bench.line.client() as watcher, watcher.subscribe("fr1.project.") as sub:
        sub.wait_ready(scaled(5))
        results = fr.FR_RunProject(
            "bench.prj", [1, 2, 3, 4], 20000, lambda ch, ok: seen.append((ch, ok))
        )
        events = [sub.next(scaled(5)) for _ in range(5)]
    assert results == {1: True, 2: True, 3: False, 4: True}
    assert sorted(seen) == [(1, True), (2, True), (3, False), (4, True)]
    assert all(e is not None for e in events)
    by_topic: dict[str, list[Any]] = {}
    for event in events:
        by_topic.setdefault(event.topic, []).append(event.data)
    assert sorted((d["channel"], d["passed"]) for d in by_topic["fr1.project.channel"]) == sorted(
        seen
    )
    (done,) = by_topic["fr1.project.done"]
    assert done["results"]["3"] is False and "ERR_PROJECT_FAILED" in done["errors"]["3"]

    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_RunProject("bench.prj", [1, 2], 300, None)  # a run takes 1 s
    assert caught.value.code == "device_timeout" and sorted(caught.value.details["pending"]) == [
        1,
        2,
    ]
    wait_until(lambda: _idle(fr), scaled(10), "channels idle again")


def _idle(fr: FlashRunner) -> bool:
    fr.FR_SendCommand("#GETENGSTATUS")
    return "R" not in fr.FR_GetAnswer(1500).split("|")[1]


def test_encryption_round_trip(bench: Bench, fr: FlashRunner) -> None:
    """What the actor encrypts, the unit's private key decrypts; the unit accepts the writes."""
    pem = fr.FR_GetPublicKey()
    assert (
        serialization.load_pem_public_key(pem).public_numbers()
        == bench.key.public_key().public_numbers()
    )  # type: ignore[union-attr]

    single = fr.FR_EncryptData(b"SN-0001")
    assert crypto.decrypt_single(bench.key, single.header, single.payload) == b"SN-0001"
    fr.FR_DynMemSendHeader([2], single.header)
    fr.FR_DynMemWriteEncrypted([2], 0x100, single.payload)

    header = fr.FR_DynMemBeginEncryption()
    blocks = [fr.FR_DynMemEncryptData(b"serial=%d" % i) for i in range(3)]
    device = crypto.DynMemDecryptor(bench.key)
    device.accept_header(header)
    assert [device.decrypt(block) for block in blocks] == [b"serial=0", b"serial=1", b"serial=2"]
    fr.FR_DynMemSendHeader([1, 2], header)
    for i, block in enumerate(blocks):
        fr.FR_DynMemWriteEncrypted([1, 2], 0x200 + 16 * i, block)
    fr.FR_DynMemResetEncryption()
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_DynMemEncryptData(b"after reset")
    assert caught.value.code == "invalid_arguments"
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_DynMemSendHeader([1], b"FRK1 not a header")
    assert caught.value.code == "device_fault" and caught.value.device_code == "ERR_BAD_HEADER"


def test_logger_events(bench: Bench, fr: FlashRunner, tmp_path: Path) -> None:
    """The unit's real-time log reaches FR_Logger as <service>.log events."""
    source = tmp_path / "logged.frb"
    source.write_bytes(b"x" * 100)
    background: list[str] = []
    endpoints = bench.line.endpoints
    with FR_Logger(endpoints.command, "fr1", subscribe_endpoint=endpoints.subscribe) as logger:
        other = fr.FR_Logger()
        other.start(background.append)
        try:
            fr.FR_SendFile(source, FR_FileType.FRB)
            line = next(
                (x for x in logger.lines(timeout=scaled(5)) if "logged.frb stored" in x), None
            )
            assert line is not None and "INFO" in line
            wait_until(
                lambda: any("logged.frb stored" in x for x in background),
                scaled(5),
                "log line in the background logger",
            )
        finally:
            other.close()


def test_typed_errors(bench: Bench, fr: FlashRunner, tmp_path: Path) -> None:
    """Every failure is one FR_Comm_Exception with a machine-readable code, raised from the bus error."""
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_GetFile("nothing.frb", tmp_path, FR_FileType.FRB)
    assert caught.value.code == "device_fault" and caught.value.device_code == "ERR_FILE_NOT_FOUND"
    assert isinstance(caught.value.__cause__, BusError)
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_SendCommand("SPING")  # no '#'
    assert caught.value.code == "invalid_arguments"
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_SendFile(tmp_path / "absent.frb", FR_FileType.FRB)
    assert caught.value.code == "invalid_arguments"
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_SendFile(tmp_path / "absent.frb", "EXE")
    assert caught.value.code == "invalid_arguments"
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_RunProject("absent.prj", [1], 2000)
    assert caught.value.device_code == "ERR_FILE_NOT_FOUND"
    with pytest.raises(FR_Comm_Exception) as caught:
        fr.FR_RunProject("absent.prj", [9], 2000)
    assert caught.value.code == "device_fault" and caught.value.device_code == "ERR_BAD_CHANNEL"
    with bench.line.client() as bus, pytest.raises(FR_Comm_Exception) as caught:
        FlashRunner(bus, "fr9")
    assert caught.value.code == "unknown_service"


class _KillOnProgress(ProgressHandler):
    def __init__(self, action: Any) -> None:
        super().__init__()
        self.action = action
        self.fired = False

    def on_progress(self, percent: int, done: int, total: int) -> None:
        if done > 0 and not self.fired:
            self.fired = True
            self.action(self)


def test_cancel_and_device_vanishing_mid_transfer(bench: Bench, tmp_path: Path) -> None:
    """A cancelled transfer leaves nothing on the unit; a unit that vanishes mid-transfer gives
    device_unavailable, and the actor works again once the unit is back."""
    image = tmp_path / "big.frb"
    image.write_bytes(os.urandom(512 * 1024))  # 128 chunks at 20 ms each: seconds, if let run
    with bench.line.client(timeout=10) as bus, FlashRunner(bus, "fr2") as fr:
        with pytest.raises(FR_Comm_Exception) as caught:
            fr.FR_SendFile(
                image, FR_FileType.FRB, _KillOnProgress(lambda handler: handler.cancel())
            )
        assert caught.value.code == "cancelled"
        with pytest.raises(FR_Comm_Exception) as caught:
            fr.FR_GetFile(image.name, tmp_path, FR_FileType.FRB)
        assert caught.value.device_code == "ERR_FILE_NOT_FOUND"  # the partial file was discarded

        def kill(handler: ProgressHandler) -> None:
            bench.sim2.send_signal(signal.SIGKILL)
            bench.sim2.wait(timeout=scaled(5))

        with pytest.raises(FR_Comm_Exception) as caught:
            fr.FR_SendFile(image, FR_FileType.FRB, _KillOnProgress(kill))
        assert caught.value.code == "device_unavailable"
        with pytest.raises(FR_Comm_Exception) as caught:
            fr.FR_SendCommand("#55*SPING")
        assert caught.value.code == "device_unavailable"

        bench.sim2 = _start_sim(bench.line.processes, bench.sim2_args)  # back, on the same ports
        wait_until(lambda: _answers(fr), scaled(10), "fr2 to reconnect")
        fr.FR_SendFile(image, FR_FileType.FRB)
        back = tmp_path / "back"
        back.mkdir()
        assert fr.FR_GetFile(image.name, back, FR_FileType.FRB).read_bytes() == image.read_bytes()


def _answers(fr: FlashRunner) -> bool:
    try:
        fr.FR_SendCommand("#55*SPING")
    except FR_Comm_Exception:
        return False
    return fr.FR_GetAnswer(1500) == "55|>"


def test_device_absent_at_start(bench: Bench) -> None:
    """An actor whose unit is not there registers anyway, fails commands with
    device_unavailable, and connects (command link and logger) once the unit appears."""
    with bench.line.client(timeout=10) as bus, FlashRunner(bus, "fr3") as fr:
        assert fr.FR_GetDllVersion().startswith("linebus-flashrunner")
        with pytest.raises(FR_Comm_Exception) as caught:
            fr.FR_SendCommand("#55*SPING")
        assert caught.value.code == "device_unavailable"
        with fr.FR_Logger() as logger:
            _start_sim(bench.line.processes, bench.sim3_args)
            wait_until(lambda: _answers(fr), scaled(10), "fr3 to connect")
            assert (
                logger.read_line(scaled(10)) is not None
            )  # the simulator greets each logger client


def test_vendor_constructor_finds_the_actor(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """``FlashRunner("LAN", "host:port")`` as fr_comm writes it: the bus of LINEBUS_ENDPOINT,
    the actor that the broker says drives that address (``lookup``), through real processes."""
    endpoints = bench.line.endpoints
    monkeypatch.setenv("LINEBUS_ENDPOINT", endpoints.command)
    monkeypatch.setenv("LINEBUS_SUBSCRIBE", endpoints.subscribe)
    with bench.line.client() as bus:
        rows = bus.call("broker", "lookup", {"kind": "flashrunner"})
    advertised = {row["name"]: row["devices"] for row in rows}
    assert set(advertised) == {"fr1", "fr2", "fr3"}
    host, port = advertised["fr1"][0].rsplit(":", 1)
    assert host == "127.0.0.1"
    with FlashRunner("LAN", f"localhost:0{port}") as fr:  # spelt differently, found all the same
        assert fr.service == "fr1"
        fr.FR_SendCommand("#55*SPING")
        assert fr.FR_GetAnswer(1500) == "55|>"
    with pytest.raises(FR_Comm_Exception) as caught:
        FlashRunner("/dev/ttyUSB9", "115200")
    assert caught.value.code == "unknown_service"
