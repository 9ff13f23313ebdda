"""The robot's modes (flux.md §1.6): maintain, scan, raw and icontrol.

Entering a mode takes the device's exclusive lock for this session; until ``maintain_quit`` /
``scan_quit`` / ``raw_quit`` / ``icontrol_quit`` (or a lost link, which ends the mode on the
device too) every ordinary command raises ``Busy``, as fluxclient's client-side lock does, and
mode commands outside their mode raise ``DeviceFault`` with ``device_code="OPERATION_ERROR"``.

Raw mode (``task raw``) turns the link into a byte pipe to the mainboard and toolhead
(fluxclient's ``RawTasks.sock``): ``raw_send`` / ``raw_recv`` move bytes, ``raw_quit`` sends
``quit`` and waits for the zeros that end the pipe. Icontrol (``task icontrol``) switches the link
to fluxclient's msgpack SDK protocol, which linebus does not speak: it can be entered (the device
is then held) and left, by renewing the session, which ends the task on the device.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.flux import commands
from actors.flux.connection import RobotConnection
from actors.flux.session import (
    MessageCallback,
    ProgressCallback,
    Reply,
    RobotSession,
    is_final,
)
from bus.errors import Busy, DeviceFault, InvalidArguments

__all__ = ["MAX_HEAD_FIRMWARE", "ModeCommands"]

MAX_HEAD_FIRMWARE = 256 << 10


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(word) for word in text.split()[1:]]
    except ValueError as exc:
        raise DeviceFault(
            f"{what}: unexpected answer {text!r}", device_code="L_UNKNOW_ERROR"
        ) from exc


class ModeCommands(RobotSession):
    """The maintain and scan sub-commands, on top of the session."""

    mode = "command"

    def _json(self, what: str, text: str) -> dict[str, Any]:
        try:
            return commands.parse_json_object(text)
        except ValueError as exc:
            raise DeviceFault(
                f"{self.address}: {what}: {exc}", device_code="L_UNKNOW_ERROR"
            ) from exc

    def _session_reset(self) -> None:
        self.mode = "command"

    def _require(self, mode: str) -> None:
        if self.mode == mode:
            return
        if mode == "command":
            raise Busy(
                f"{self.address}: device is held by this driver's {self.mode} mode; quit it first",
                details={"device_code": "OPERATION_ERROR"},
            )
        raise DeviceFault(
            f"{self.address}: not in {mode} mode (now {self.mode})", device_code="OPERATION_ERROR"
        )

    async def _enter(self, mode: str) -> None:
        self._require("command")
        await self.call(mode, timeout_s=self.config.mode_timeout_s)
        self.mode = mode

    async def _quit(self, mode: str) -> None:
        self._require(mode)
        await self.call("quit")
        self.mode = "command"

    async def _maintain(
        self, command: str, *, long: bool = False, on_message: MessageCallback | None = None
    ) -> str:
        self._require("maintain")
        timeout = self.config.mode_timeout_s if long else None
        return (await self.call(command, timeout_s=timeout, on_message=on_message)).final

    # ------------------------------------------------------------ maintain

    async def maintain(self) -> None:
        """Enter maintain mode (``maintain``); the answer comes after the mainboard bootstraps."""
        await self._enter("maintain")

    async def maintain_home(self) -> None:
        """Home the head (``home``)."""
        await self._maintain("home", long=True)

    async def maintain_move(self, **axes: float) -> None:
        """Move (``move x:.. y:..``); axes among f, x, y, z, e."""
        try:
            command = commands.move_command(**axes)
        except ValueError as exc:
            raise InvalidArguments(str(exc), details={"argument": "axes"}) from exc
        await self._maintain(command, long=True)

    async def maintain_calibrate(
        self,
        threshold: float | None = None,
        clean: bool = False,
        on_message: MessageCallback | None = None,
    ) -> list[float]:
        """Calibrate (``calibration [thr] [clean]``) and return the three values.

        ``CTRL POINT n`` lines go to ``on_message``.
        """
        words = (
            ["calibration"]
            + ([f"{threshold}"] if threshold is not None else [])
            + (["clean"] if clean else [])
        )
        return _floats(
            await self._maintain(" ".join(words), long=True, on_message=on_message), "calibration"
        )

    async def maintain_zprobe(
        self, height: float | None = None, on_message: MessageCallback | None = None
    ) -> float:
        """Probe z (``zprobe``), or level manually at ``height`` (``zprobe <h>``); return the probed value."""
        command = "zprobe" if height is None else f"zprobe {height:.4f}"
        values = _floats(await self._maintain(command, long=True, on_message=on_message), "zprobe")
        if not values:
            raise DeviceFault(
                f"{self.address}: zprobe returned no value", device_code="L_UNKNOW_ERROR"
            )
        return values[0]

    async def maintain_head_info(self) -> dict[str, Any]:
        """Toolhead profile (``headinfo`` → ``ok <json>``)."""
        return self._json("headinfo", (await self._maintain("headinfo")).partition(" ")[2])

    async def maintain_head_status(self) -> dict[str, Any]:
        """Toolhead status (``headstatus`` → ``ok <json>``)."""
        return self._json("headstatus", (await self._maintain("headstatus")).partition(" ")[2])

    async def maintain_set_heater(self, index: int, temperature: float) -> None:
        """Set an extruder temperature (``extruder_temp <i> <t>``)."""
        await self._maintain(f"extruder_temp {index} {temperature:.1f}")

    async def maintain_diagnosis_sensor(self) -> dict[str, str]:
        """Sensor readings (``diagnosis_sensor`` → ``ok k=v\\0...``)."""
        return commands.parse_kv((await self._maintain("diagnosis_sensor")).partition(" ")[2])

    async def maintain_diagnosis(self, option: str = "hal") -> str:
        """Run ``<option>_diagnosis`` (only ``hal`` exists); return the result text."""
        return (await self._maintain(f"{option}_diagnosis", long=True)).partition(" ")[2]

    async def maintain_load_filament(
        self,
        index: int,
        temperature: float,
        on_message: MessageCallback | None = None,
        *,
        flexible: bool = False,
    ) -> None:
        """Load filament (``load_filament`` / ``load_flexible_filament``).

        ``CTRL`` lines go to ``on_message``.
        """
        word = "load_flexible_filament" if flexible else "load_filament"
        await self._maintain(f"{word} {index} {temperature:.1f}", long=True, on_message=on_message)

    async def maintain_unload_filament(
        self, index: int, temperature: float, on_message: MessageCallback | None = None
    ) -> None:
        """Unload filament (``unload_filament``); ``CTRL`` lines go to ``on_message``."""
        await self._maintain(
            f"unload_filament {index} {temperature:.1f}", long=True, on_message=on_message
        )

    async def maintain_interrupt_load_filament(self) -> None:
        """Stop a running (un)load macro (``stop_load_filament``; the device sends no answer).

        It bypasses the one-request-at-a-time rule on purpose: the macro's own exchange is
        still waiting, and ends when the device answers it.
        """
        self._require("maintain")
        await self._send_unanswered("stop_load_filament")

    async def maintain_update_head(
        self,
        data: bytes,
        on_progress: ProgressCallback | None = None,
        on_message: MessageCallback | None = None,
    ) -> None:
        """Flash toolhead firmware (``update_head binary <size>``, at most 256 KiB).

        The device answers ``ok`` for the bytes, then ``CTRL INIT``/``CTRL WRITE n`` lines (to
        ``on_message``), then a second ``ok`` once the head is written.
        """
        self._require("maintain")
        if len(data) > MAX_HEAD_FIRMWARE:
            raise InvalidArguments(
                f"toolhead firmware of {len(data)} bytes exceeds {MAX_HEAD_FIRMWARE}",
                details={"argument": "data"},
            )
        answers = 0

        def second_ok(text: str) -> bool:
            nonlocal answers
            answers += is_final(text)
            return answers == 2

        await self._send_binary(
            f"update_head binary {len(data)}",
            data,
            on_progress=on_progress,
            final=second_ok,
            on_message=on_message,
            final_timeout_s=self.config.mode_timeout_s,
        )

    async def maintain_reset_hardware(self) -> None:
        """Reset the mainboard (``reset_mb``); the device also leaves maintain mode."""
        await self._maintain("reset_mb")
        self.mode = "command"

    async def maintain_quit(self) -> None:
        """Leave maintain mode (``quit``)."""
        await self._quit("maintain")

    # ------------------------------------------------------------ scan

    async def scan(self) -> None:
        """Enter scan mode (``scan``); the answer comes after homing."""
        await self._enter("scan")

    async def _scan(self, command: str) -> str:
        self._require("scan")
        return (await self.call(command, timeout_s=self.config.mode_timeout_s)).final

    async def scan_step_length(self, length: float) -> None:
        """Set the turntable step (``set steplen <l>``)."""
        await self._scan(f"set steplen {length:.5f}")

    async def scan_forward(self) -> None:
        """Turn one step forward (``scan_next``)."""
        await self._scan("scan_next")

    async def scan_backward(self) -> None:
        """Turn one step back (``scan_backward``)."""
        await self._scan("scan_backward")

    async def scan_laser(self, left: bool, right: bool) -> None:
        """Switch the lasers (``scanlaser [l][r]``)."""
        await self._scan(("scanlaser " + ("l" if left else "") + ("r" if right else "")).rstrip())

    async def scan_check(self) -> str:
        """Camera check (``scan_check``); the device's raw line."""
        self._require("scan")
        return (await self.call("scan_check", final=lambda text: True)).final

    async def scan_calibrate(self) -> str:
        """Calibrate the scanner (``calibrate``); the raw ``ok ...`` answer."""
        return await self._scan("calibrate")

    async def scan_get_calibrate(self) -> list[int]:
        """Stored calibration (``get_cab`` → ``ok <3 ints>``)."""
        return [int(value) for value in _floats(await self._scan("get_cab"), "get_cab")]

    async def scan_oneshot(self, on_progress: ProgressCallback | None = None) -> bytes:
        """Take one photo (``oneshot``); JPEG bytes."""
        self._require("scan")
        reply = await self.call(
            "oneshot", timeout_s=self.config.mode_timeout_s, on_binary=on_progress
        )
        return self._images(reply.binaries, 1)[0]

    async def scan_images(self) -> list[bytes]:
        """Take three photos (``scanimages``): left laser, right laser, no laser; JPEG bytes."""
        self._require("scan")
        reply = await self.call("scanimages", timeout_s=self.config.mode_timeout_s)
        return self._images(reply.binaries, 3)

    def _images(self, binaries: list[tuple[str, bytes]], count: int) -> list[bytes]:
        if len(binaries) != count:
            raise DeviceFault(
                f"{self.address}: expected {count} images, got {len(binaries)}",
                device_code="L_UNKNOW_ERROR",
            )
        return [data for _mime, data in binaries]

    async def scan_quit(self) -> None:
        """Leave scan mode (``quit``)."""
        await self._quit("scan")

    # ------------------------------------------------------------ raw

    async def raw(self) -> None:
        """Enter raw mode (``task raw`` → ``continue``): the link becomes a byte pipe."""
        self._require("command")
        reply = await self.call(
            "task raw", timeout_s=self.config.mode_timeout_s, final=lambda text: text == "continue"
        )
        if reply.final != "continue":
            raise DeviceFault(
                f"{self.address}: task raw: unexpected answer {reply.final[:80]!r}",
                device_code="L_UNKNOW_ERROR",
            )
        self.mode = "raw"

    async def raw_send(self, data: bytes) -> None:
        """Send bytes down the pipe (a leading ``+`` goes to the mainboard, ``-`` to the head)."""
        self._require("raw")
        wait = self.config.reply_timeout_s

        async def body(conn: RobotConnection) -> Reply:
            await conn.send_raw(data, wait)
            return Reply("")

        await self._exchange("raw send", body)

    async def raw_recv(self, timeout_s: float) -> bytes:
        """What the device sent down the pipe: the bytes that arrive first within ``timeout_s``
        (and any already waiting), or b"" when nothing came."""
        self._require("raw")

        async def body(conn: RobotConnection) -> Reply:
            try:
                data = await conn.read_raw(timeout_s)
            except TimeoutError:
                data = b""  # silence is an answer here, not a lost link
            return Reply("", binaries=[("raw", data)])

        return (await self._exchange("raw recv", body)).binaries[0][1]

    async def raw_quit(self) -> None:
        """Leave raw mode: send ``quit``, skip the pipe's last bytes up to the zeros, read ``ok``."""
        self._require("raw")
        wait = self.config.reply_timeout_s

        async def body(conn: RobotConnection) -> Reply:
            await conn.send_raw(b"quit", wait)
            held = b""
            async with asyncio.timeout(wait):
                while (end := commands.raw_quit_end(held)) is None:
                    held += await conn.read_raw(wait)
            conn.feed_frames(held[end:])
            return await self._collect(conn, wait)

        await self._exchange("raw quit", body)
        self.mode = "command"

    # ------------------------------------------------------------ icontrol

    async def icontrol(self) -> None:
        """Enter icontrol (``task icontrol``; ``ok`` once the hardware is ready)."""
        self._require("command")
        await self.call("task icontrol", timeout_s=self.config.mode_timeout_s)
        self.mode = "icontrol"

    async def icontrol_quit(self) -> None:
        """Leave icontrol by renewing the session (the device ends the task when the link closes)."""
        self._require("icontrol")
        await self._hang_up("icontrol left")
