"""The FLUX part of ``linebus demo``: a production cell's print job, through fluxclient's API.

The first printer toured gets a job uploaded to ``#`` with a progress bar, starts it and follows
its ``<service>.status`` events to the end; the next ones show files, a scan photo and a typed
device error.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.flux.fcode import build_fcode
from bus.client import Client
from bus.testing import wait_until
from bus.tours import Say
from clients.flux import FluxRobot, RobotError, RobotSessionError

__all__ = ["tour"]

_toured: list[str] = []


def _connected(robot: FluxRobot, timeout: float) -> dict[str, str]:
    return wait_until(
        lambda: robot.deviceinfo,
        timeout,
        "the printer to answer",
        interval=0.2,
        ignore=(RobotSessionError,),
    )


def tour(bus: Client, service: str, say: Say) -> None:
    """Upload and print a job on the first printer; files, a scan and an error on the others."""
    first = not _toured
    _toured.append(service)
    with (
        FluxRobot(bus, service) as robot,
        tempfile.TemporaryDirectory(prefix="linebus-demo-") as tmp,
    ):
        info = _connected(robot, 20)
        say(
            f"  {service} is a FLUX {info.get('model', '?')} '{info.get('nickname', '?')}' "
            f"firmware {info.get('version', '?')} (a simulator on loopback), "
            "driven with fluxclient's FluxRobot API"
        )
        if first:
            _print_job(robot, service, Path(tmp), say)
        else:
            _files_and_scan(robot, Path(tmp), say)


def _print_job(robot: FluxRobot, service: str, tmp: Path, say: Say) -> None:
    job = tmp / "bracket.fc"
    job.write_bytes(
        build_fcode(
            os.urandom(96 * 1024).hex().encode(), {"AUTHOR": "linebus demo", "TIME_COST": "4"}
        )
    )
    size = job.stat().st_size
    say(f"  upload_file('{job.name}', '#'): {size // 1024} KiB becomes the next job")
    marks = [0]

    def bar(_robot: Any, sent: int, total: int) -> None:
        percent = sent * 100 // max(total, 1)
        while percent >= marks[0] and marks[0] <= 100:
            filled = marks[0] // 5
            say(
                f"    [{'#' * filled}{'.' * (20 - filled)}] {marks[0]:3d}%  {sent // 1024:4d} of "
                f"{total // 1024} KiB"
            )
            marks[0] += 50

    robot.upload_file(str(job), "#", bar)
    with robot.watch_status() as watcher:
        robot.start_play()
        say(f"  start_play(); the actor polls the job and publishes {service}.status events:")
        started = time.monotonic()
        last, quarter = "", -1
        for status in watcher.statuses(timeout=15):
            now_quarter = int(status["prog"] * 4)
            if status["label"] != last or now_quarter != quarter:
                line = f"{status['label']:<11} st_id {status['st_id']:>3}  prog {status['prog'] * 100:5.1f}%"
                say(f"    {time.monotonic() - started:4.1f} s  {line}")
            last, quarter = status["label"], now_quarter
            if status["label"] in ("COMPLETED", "ABORTED"):
                break
    report = robot.report_play()
    say(f"  report_play() -> st_label {report.get('st_label')!r}, error {report.get('error', [])}")
    robot.quit_play()
    say(f"  quit_play(): the printer is {robot.report_play().get('st_label')} again")


def _files_and_scan(robot: FluxRobot, tmp: Path, say: Say) -> None:
    part = tmp / "part.gcode"
    part.write_bytes(b"G28\nG1 X10 Y10 Z5\n" * 500)
    robot.upload_file(str(part), "/SD/part.gcode")
    say(f"  upload_file to /SD/part.gcode; list_files('/SD/') -> {robot.list_files('/SD/')}")
    say(f"  file_md5 -> {robot.file_md5('/SD/part.gcode')}")
    task = robot.scan()
    try:
        shot = task.oneshot()
        say(f"  scan().oneshot() -> a {len(shot)}-byte JPEG ({shot[:4].hex()}...)")
    finally:
        task.quit()
    try:
        robot.rmfile("/SD/missing.gcode")
    except RobotError as exc:
        say(
            f"  rmfile of a missing file raises RobotError with error_symbol {exc.error_symbol} "
            f"(code {exc.code})"
        )
