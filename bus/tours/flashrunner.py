"""The FlashRunner part of ``linebus demo``: a test bench's day, through the ``fr_comm`` facade.

Sends a firmware image with a progress bar, runs a project on 4 channels (one fails, as the demo
simulator is configured), and injects an encrypted serial number into each channel's dynamic memory.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bus.client import Client
from bus.tours import Say
from clients.flashrunner import (
    FlashRunner,
    FR_Comm_Exception,
    FR_FileType,
    FR_Logger,
    ProgressHandler,
)

__all__ = ["tour"]

CHANNELS = [1, 2, 3, 4]
IMAGE_BYTES = 384 * 1024


class _Bar(ProgressHandler):
    """A text progress bar, one line per quarter."""

    def __init__(self, say: Say) -> None:
        super().__init__()
        self.say = say
        self.next_step = 0

    def on_progress(self, percent: int, done: int, total: int) -> None:
        while percent >= self.next_step and self.next_step <= 100:
            filled = self.next_step // 5
            self.say(
                f"    [{'#' * filled}{'.' * (20 - filled)}] {self.next_step:3d}%  {done // 1024:4d} "
                f"of {total // 1024} KiB"
            )
            self.next_step += 25


def tour(bus: Client, service: str, say: Say) -> None:
    """Walk through firmware upload, a 4-channel project run and encrypted serial numbers."""
    with (
        FlashRunner(bus, service) as fr,
        tempfile.TemporaryDirectory(prefix="linebus-demo-") as tmp,
    ):
        say(
            f"  {service} is a FlashRunner 2.0 programmer (here a simulator on loopback), "
            "driven with fr_comm's API"
        )
        say(f"  actor library: {fr.FR_GetDllVersion()}")
        fr.FR_SendCommand("#GETENGSTATUS")
        say(f"  FR_SendCommand('#GETENGSTATUS'), FR_GetAnswer(1500) -> {fr.FR_GetAnswer(1500)!r}")

        image = Path(tmp) / "app.frb"
        image.write_bytes(os.urandom(IMAGE_BYTES))
        say(f"  sending the firmware image {image.name} ({IMAGE_BYTES // 1024} KiB) to the unit:")
        started = time.monotonic()
        fr.FR_SendFile(image, FR_FileType.FRB, _Bar(say))
        say(f"  stored in {time.monotonic() - started:.2f} s; the unit checked its CRC")

        project = Path(tmp) / "demo.prj"
        project.write_text("; demo project: erase, program app.frb, verify\n")
        fr.FR_SendFile(project, FR_FileType.PRJ)
        say("  running demo.prj on channels 1-4; each channel reports as it finishes:")
        started = time.monotonic()

        def on_done(channel: int, passed: bool) -> None:
            say(
                f"    {time.monotonic() - started:4.1f} s  channel {channel}: {'OK' if passed else 'FAIL'}"
            )

        with FR_Logger(bus, service) as logger:
            results = fr.FR_RunProject("demo.prj", CHANNELS, 30000, on_done)
            log_lines = [line for line in logger.lines(timeout=0.5) if " RUN " in line]
        failed = [ch for ch, ok in results.items() if not ok]
        say(
            f"  result: {sum(results.values())} passed, {len(failed)} failed (channel "
            f"{', '.join(map(str, failed)) or '-'})"
        )
        if log_lines:
            line = next((x for x in log_lines if "FAIL" in x), log_lines[-1])
            say(
                f"  meanwhile the unit's real-time log arrived as {service}.log events "
                f"({len(log_lines)} run lines), e.g.:"
            )
            say(f"    {line}")

        say("  injecting a serial number into each channel, encrypted for the unit:")
        fr.FR_GetPublicKey()
        say("    FR_GetPublicKey: fetched the unit's RSA-2048 public key")
        for channel in CHANNELS:
            serial = f"SN-2026-{channel:04d}".encode()
            header = fr.FR_DynMemBeginEncryption()
            block = fr.FR_DynMemEncryptData(serial)
            fr.FR_DynMemSendHeader([channel], header)
            fr.FR_DynMemWriteEncrypted([channel], 0x0800_F000, block)
            fr.FR_DynMemResetEncryption()
            say(
                f"    channel {channel}: {serial.decode()} -> {len(header)}-byte key header + "
                f"{len(block)}-byte AES block {block[:6].hex()}..., written at 0x0800F000"
            )
        say(
            "  (session encryption: one RSA-wrapped key header, then CBC-chained blocks; the unit "
            "decrypts them)"
        )

        try:
            fr.FR_GetFile("missing.frb", tmp, FR_FileType.FRB)
        except FR_Comm_Exception as exc:
            say(
                "  asking for a file the unit does not have fails with a typed error: "
                f"code={exc.code} device_code={exc.device_code}"
            )
