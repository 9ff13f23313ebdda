"""The FLUX printer end to end: the ``FluxRobot`` facade, a broker process, flux actor processes
and simulator processes on their own loopback addresses.

Neither simulator trusts the actors' key at first: each actor authorises over the management
port with the device password and trusts its key, as fluxclient's UpnpTask would.
``p2``'s simulator is set ``bare=Y`` (robot protocol 3: TLS) and drops the robot link once
100 000 bytes of an upload arrived.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from actors.flux.fcode import build_fcode
from actors.flux.testing import random_loopback
from actors.fluxfamily import crypto
from actors.fluxfamily.keys import load_key
from actors.simsupport.jpeg import FRAME_HEIGHT, FRAME_WIDTH
from bus.errors import BusError
from clients.flux import (
    FluxCamera,
    FluxRobot,
    RobotError,
    RobotSessionError,
    get_or_create_default_key,
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
    line: Line
    tmp: Path
    ready: dict[str, dict[str, str]]  # each printer's simulator ready line, by service


def _start_sim(processes: Processes, address: str, *extra: str) -> dict[str, str]:
    sim = processes.start(
        "-m",
        "actors.flux.simulator",
        "--address",
        address,
        "--robot-port",
        str(free_port()),
        "--manage-port",
        "0",
        "--udp-port",
        "0",
        "--camera-port",
        "0",
        "--camera-fps",
        "20",
        "--group",
        "",
        "--announce-interval",
        "30",
        *extra,
        stdout=subprocess.PIPE,
    )
    return wait_ready_line(sim, scaled(20))


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("flux")
    processes = Processes()
    try:
        a1, a2 = random_loopback(), random_loopback()
        r1 = _start_sim(
            processes, a1, "--job-duration", "2", "--name", "alpha", "--password", "s3cret"
        )
        r2 = _start_sim(
            processes,
            a2,
            "--bare",
            "--drop-upload-after",
            "100000",
            "--name",
            "beta",
            "--password",
            "s3cret",
        )
        common = {
            "key": str(tmp / "client.pem"),
            "password": "s3cret",
            "backoff_max_s": 0.3,
            "reply_timeout_s": 5.0,
            "poll_interval_s": 0.1,
        }
        actors = []
        for name, ready in (("p1", r1), ("p2", r2)):
            host, port = ready["robot"].rsplit(":", 1)
            manage = int(ready["manage"].rsplit(":", 1)[1])
            camera = int(ready["camera"].rsplit(":", 1)[1])
            actors.append(
                {
                    "name": name,
                    "kind": "flux",
                    "options": {
                        **common,
                        "host": host,
                        "port": int(port),
                        "manage_port": manage,
                        "camera_port": camera,
                    },
                }
            )
        endpoints = Endpoints.fresh()
        line = Line(write_config(tmp / "flux.toml", endpoints, actors), endpoints, processes)
        line.start_broker()
        line.start_actor("p1")
        line.start_actor("p2")
        yield Bench(line, tmp, {"p1": r1, "p2": r2})
    finally:
        processes.cleanup()


def _robot(bench: Bench, service: str) -> FluxRobot:
    bus = bench.line.client(timeout=10)
    robot = FluxRobot(bus, service, timeout=scaled(10), transfer_timeout=scaled(30))
    # the actor connects (and authorises) in the background: wait until the printer answers
    wait_until(lambda: _answers(robot), scaled(15), f"{service} connected")
    return robot


def _answers(robot: FluxRobot) -> bool:
    try:
        return bool(robot.deviceinfo)
    except RobotSessionError:
        return False


@pytest.fixture
def p1(bench: Bench) -> Iterator[FluxRobot]:
    robot = _robot(bench, "p1")
    try:
        yield robot
    finally:
        robot.close()
        robot.bus.close()


def test_files(p1: FluxRobot, tmp_path: Path) -> None:
    """mkdir, upload with progress, list, md5, info, copy, download, remove."""
    assert p1.deviceinfo["nickname"] == "alpha"
    data = b"G28\n" + os.urandom(200_000).hex().encode()[:300_000]
    local = tmp_path / "part.gcode"
    local.write_bytes(data)
    p1.mkdir("/SD/jobs")
    progress: list[tuple[int, int]] = []
    p1.upload_file(
        str(local), "/SD/jobs/part.gcode", lambda robot, sent, total: progress.append((sent, total))
    )
    assert progress and progress[-1] == (len(data), len(data))
    assert [sent for sent, _ in progress] == sorted(sent for sent, _ in progress)
    assert (False, "part.gcode") in p1.list_files("/SD/jobs")
    assert (True, "jobs") in p1.list_files("/SD/")
    import hashlib

    assert p1.file_md5("/SD/jobs/part.gcode") == hashlib.md5(data).hexdigest()
    metadata, images = p1.file_info("/SD/jobs/part.gcode")
    assert metadata["size"] == str(len(data)) and images == []
    p1.cpfile("/SD/jobs/part.gcode", "/SD/copy.gcode")
    stream = io.BytesIO()
    left: list[int] = []
    assert (
        p1.download_file(
            "/SD/copy.gcode", stream, lambda robot, remaining, size: left.append(remaining)
        )
        == "text/gcode"
    )
    assert stream.getvalue() == data and left[-1] == 0
    p1.rmfile("/SD/copy.gcode")
    p1.rmdir("/SD/jobs")
    assert p1.list_files("/SD/") == []
    p1.config["autoresume"] = "Y"
    assert p1.config["autoresume"] == "Y"
    del p1.config["autoresume"]
    assert p1.config["autoresume"] is None


def test_job_with_status_events(p1: FluxRobot, tmp_path: Path) -> None:
    """Upload a job to ``#`` with progress, start it, and follow its status events to COMPLETED."""
    job = tmp_path / "cube.fc"
    job.write_bytes(build_fcode(b"G1 X1\n" * 20000, {"TIME_COST": "2", "AUTHOR": "test"}))
    sizes: list[int] = []
    p1.upload_file(str(job), "#", lambda robot, sent, total: sizes.append(total))
    assert sizes and set(sizes) == {job.stat().st_size}
    with p1.watch_status() as watcher:
        p1.start_play()
        p1.set_toolhead_operating_in_play()
        with pytest.raises(RobotError) as caught:
            p1.restart_play()
        assert caught.value.error_symbol[0] == "UNKNOWN_COMMAND"
        seen: list[dict] = []
        for status in watcher.statuses(timeout=scaled(10)):
            seen.append(status)
            if status["label"] == "COMPLETED":
                break
    labels = [s["label"] for s in seen]
    assert "RUNNING" in labels and labels[-1] == "COMPLETED", labels
    progs = [s["prog"] for s in seen if s["label"] == "RUNNING"]
    assert progs == sorted(progs)
    info, _images = p1.play_info()
    assert info.get("AUTHOR") == "test" or info, info
    p1.quit_play()
    assert p1.report_play()["st_id"] == 0


def test_scan_images_are_jpeg_bytes(p1: FluxRobot) -> None:
    """scan() returns a task whose oneshot/scanimages give JPEG bytes; other calls are busy meanwhile."""
    task = p1.scan()
    try:
        shot = task.oneshot()
        assert isinstance(shot, bytes) and shot.startswith(b"\xff\xd8")
        images = task.scanimages()
        assert len(images) == 3 and all(image.startswith(b"\xff\xd8") for image in images)
        with pytest.raises(RobotError) as caught:
            p1.list_files("/SD/")
        assert caught.value.code == "busy"
    finally:
        task.quit()
    p1.list_files("/SD/")


def test_device_error_is_typed_with_symbol(p1: FluxRobot) -> None:
    """A device error is a RobotError carrying the device's symbols, raised from the bus error."""
    with pytest.raises(RobotError) as caught:
        p1.rmfile("/SD/no-such-file.gcode")
    assert caught.value.error_symbol[0] == "NOT_EXIST"
    assert caught.value.code == "device_fault"
    assert isinstance(caught.value.__cause__, BusError)
    with pytest.raises(RobotError) as caught:
        p1.select_file("/SD/missing.fc")
    assert caught.value.error_symbol[0] == "NOT_EXIST"


def test_link_dropped_mid_upload_then_usable(bench: Bench, tmp_path: Path) -> None:
    """The simulator closes the link mid-upload: a typed session error, then the printer works again.

    ``p2`` is a ``bare=Y`` printer: the actor authorised its key over management and reached the
    robot port over protocol 3 (TLS), reconnecting the same way after the drop.
    """
    robot = _robot(bench, "p2")
    try:
        assert robot.deviceinfo["nickname"] == "beta"
        assert robot.config["bare"] == "Y"
        big = tmp_path / "big.gcode"
        big.write_bytes(b";" * 400_000)
        with pytest.raises(RobotSessionError) as caught:
            robot.upload_file(str(big), "/SD/big.gcode")
        assert caught.value.code in ("device_unavailable", "device_timeout")
        assert isinstance(caught.value.__cause__, BusError)
        wait_until(lambda: _answers(robot), scaled(10), "p2 usable again")
        robot.upload_file(str(big), "/SD/big.gcode")
        assert (False, "big.gcode") in robot.list_files("/SD/")
    finally:
        robot.close()
        robot.bus.close()


def _jpeg_size(jpeg: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()  # a standard decoder reads every pixel
        return image.size


def test_camera_frame_and_stream(bench: Bench) -> None:
    """The camera port through the bus: one frame, fluxclient's FluxCamera, and a stream."""
    robot = _robot(bench, "p2")  # a bare printer: robot and camera both over TLS
    try:
        assert _jpeg_size(robot.camera_frame()) == (FRAME_WIDTH, FRAME_HEIGHT)
        host, port = bench.ready["p2"]["camera"].rsplit(":", 1)
        # fluxclient's constructor (Device.connect_camera's): the broker finds p2 by its camera
        with FluxCamera((host, int(port)), None, bus=robot.bus, max_fps=10) as camera:
            camera.enable_streaming()
            images: list[bytes] = []

            def two_then_stop(cam: FluxCamera, jpeg: bytes) -> None:
                images.append(jpeg)
                if len(images) == 2:
                    cam.abort()

            camera.capture(two_then_stop)  # streamed frames, until abort()
            camera.require_frame()
            camera.feed(lambda cam, jpeg: images.append(jpeg))
            with pytest.raises(RobotError) as no_socket:  # nothing to select() on over the bus
                camera.fileno()
            assert no_socket.value.error_symbol == ("NOT_SUPPORT",)
        assert len(images) == 3
        greedy = FluxCamera(robot.bus, "p2", max_fps=1000)  # not closed: a refused stream
        with pytest.raises(RobotError) as too_fast:  # leaves no subscription behind
            greedy.enable_streaming()
        assert too_fast.value.code == "invalid_arguments"  # the rate is bounded
        with robot.watch_camera(max_fps=10) as watched:  # the bus-style way
            images.append(next(watched.frames(timeout=scaled(10))))
        assert {_jpeg_size(image) for image in images} == {(FRAME_WIDTH, FRAME_HEIGHT)}
    finally:
        robot.close()
        robot.bus.close()


def test_logs_cloud_code_position_raw_icontrol(bench: Bench, p1: FluxRobot) -> None:
    """fetch_log, get_cloud_validation_code (signed by the actor's key), position, config_*,
    raw (an echo pipe on the simulator) and icontrol, through the facade."""
    stream = io.BytesIO()
    assert p1.fetch_log("fluxrobotd.log", stream) == "text/plain" and stream.getvalue()
    code = p1.get_cloud_validation_code()
    actor_key = load_key(str(bench.tmp / "client.pem"))
    assert code["access_id"] == crypto.access_id(actor_key).hex()
    device = uuid.UUID(p1.deviceinfo["uuid"])  # the simulator's hash: SHA-256(token ‖ uuid)
    digest = hashlib.sha256(code["token"].encode() + device.bytes).digest()
    assert code["signature"].endswith("\n")  # binascii.b2a_base64, as fluxclient returns it
    assert crypto.verify(actor_key.public_key(), base64.b64decode(code["signature"]), digest)
    assert p1.position() == "CommandTask"
    p1.config_set("replay", "N")
    assert p1.config_get("replay") == "N"
    p1.config_del("replay")
    assert p1.config_get("replay") is None
    with pytest.raises(RobotError) as caught:
        p1.set_toolhead_heater_in_play(temp=200.0)  # fluxclient's parameter name; no job runs
    assert caught.value.error_symbol[0] == "NO_TASK"
    task = p1.raw()
    assert task.sock.send(b"+G28\n") == 5
    echoed = bytearray()

    def echo_back() -> bool:
        echoed.extend(task.recv(64, timeout=0.2))
        return echoed == b"+G28\n"

    wait_until(echo_back, scaled(10), "the raw pipe's echo")
    task.quit()
    held = p1.icontrol()
    with pytest.raises(RobotError) as caught:
        p1.position()
    assert caught.value.code == "busy"
    held.quit()
    assert p1.position() == "CommandTask"
    for vendor_class in (FluxRobot, FluxCamera):
        with pytest.raises(RobotSessionError) as unusable:
            vendor_class.from_usb(None, None)
        assert unusable.value.error_symbol == ("NOT_SUPPORT",)


def test_vendor_constructor_finds_the_actor(
    bench: Bench, p1: FluxRobot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FluxRobot((ip, port), client_key)`` as fluxclient writes it: the bus of
    LINEBUS_ENDPOINT, and the flux actor the broker says drives that printer."""
    endpoints = bench.line.endpoints
    monkeypatch.setenv("LINEBUS_ENDPOINT", endpoints.command)
    monkeypatch.setenv("LINEBUS_SUBSCRIBE", endpoints.subscribe)
    rows = p1.bus.call("broker", "lookup", {"kind": "flux"})
    host, port = {row["name"]: row["devices"] for row in rows}["p1"][0].rsplit(":", 1)
    by_uuid = p1.bus.call("broker", "lookup", {"address": p1.deviceinfo["uuid"].upper()})
    assert [row["name"] for row in by_uuid] == ["p1"]  # the uuid it learnt at connect
    client_key = get_or_create_default_key(tmp_path / "sdk_connection.pem")
    with FluxRobot((host, int(port)), client_key) as robot:
        assert robot.service == "p1"
        assert robot.list_files("/SD/") == p1.list_files("/SD/")
    with pytest.raises(RobotSessionError) as caught:
        FluxRobot((host, int(port) + 1), client_key)
    assert caught.value.code == "unknown_service"
