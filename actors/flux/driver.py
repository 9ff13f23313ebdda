"""``FluxDriver``: every FluxRobot operation as one async method (flux.md §1.6).

| FluxRobot                         | FluxDriver                                        |
|-----------------------------------|---------------------------------------------------|
| ``FluxRobot(endpoint, key)``      | ``FluxDriver(host, key, config)`` + ``open()``    |
| ``list_files`` ... ``rmfile``     | same names                                        |
| ``download_file(path, stream, cb)`` | ``download_file(path, on_progress) -> Download`` |
| ``upload_file`` / ``upload_stream`` | ``upload_file(data, upload_to, mimetype=, on_progress=)`` |
| ``select_file`` ... ``quit_play`` | same names                                        |
| ``deviceinfo``, ``config[k]``     | ``deviceinfo()``, ``config_get/set/del``          |
| ``kick``, ``update_firmware``     | same names (firmware as bytes)                    |
| ``fetch_log(path, stream, cb)``   | ``fetch_log(path, on_progress) -> Download``      |
| ``get_cloud_validation_code``     | ``cloud_validation_code() -> (token, hash)``      |
| (the device's ``position``)       | ``position() -> task name``                       |
| ``raw()`` → ``RawTasks``          | ``raw()``, ``raw_send``/``raw_recv``, ``raw_quit`` |
| ``icontrol()``                    | ``icontrol()``, ``icontrol_quit()`` (no SDK)      |
| ``FluxCamera(endpoint, key)``     | ``camera_frame()``, ``camera_frames()`` (23812)   |
| ``maintain()`` → ``MaintainTasks.x`` | ``maintain()`` then ``maintain_x`` (``modes``) |
| ``scan()`` → ``ScanTasks.x``      | ``scan()`` then ``scan_x``                        |
| ``close``                         | ``close``                                         |

Progress callbacks are ``on_progress(done, total)`` in bytes. Cancel an operation by cancelling
its task. Errors are ``bus.errors`` classes; see ``actors.flux.session`` for the mapping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import structlog

from actors.flux import commands
from actors.flux.camera import CameraLink
from actors.flux.modes import ModeCommands
from actors.flux.session import ProgressCallback, Reply
from actors.fluxfamily.framing import ProtocolViolation
from actors.fluxfamily.tls import HandshakeError
from bus.errors import DeviceFault, DeviceTimeout, DeviceUnavailable, InvalidArguments

__all__ = ["Download", "FluxDriver"]

log = structlog.get_logger()

_T = TypeVar("_T")

MAX_UPLOAD = 1 << 30
MAX_FIRMWARE = 100 << 20


@dataclass(frozen=True, slots=True)
class Download:
    """A downloaded file: the mimetype the device announced and the bytes."""

    mimetype: str
    data: bytes


def _path_command(operation: str, path: str, argument: str = "path") -> str:
    try:
        return commands.file_command(operation, path)
    except ValueError as exc:
        raise InvalidArguments(str(exc), details={"argument": argument}) from exc


def _unexpected(what: str, text: str) -> DeviceFault:
    # fluxclient's symbol for an answer of the wrong shape (a plain string there, too)
    return DeviceFault(f"{what}: unexpected answer {text[:120]!r}", device_code="L_UNKNOW_ERROR")


class FluxDriver(ModeCommands):
    """Drive one FLUX Delta over the robot protocol; usable as ``async with``.

    The device's banner picks protocol 2 (RSA + AES, the default) or 3 (TLS, a device set
    ``bare=Y``); ``protocol`` tells which one the current session speaks.

    Args:
        host: Device address.
        client_key: Our RSA key; the device must trust it (``discovery`` management ``add_trust``).
        config: Port and timing (``FluxConfig``).
        device_key: Protocol 2: the device's slave public key (discovery v1), to verify it.
        device_uuid / master_key: Protocol 3: pins on the device's TLS certificate (its uuid
            and master key, from discovery); see ``actors.fluxfamily.tls``.
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _command(self, command: str, **kwargs: Any) -> Reply:
        self._require("command")
        return await self.call(command, **kwargs)

    # ------------------------------------------------------------ files

    async def list_files(self, path: str) -> list[tuple[bool, str]]:
        """List folders, ``.fc`` and ``.gcode`` files under ``path``: ``[(is_dir, name), ...]``."""
        reply = await self._command(_path_command("ls", path))
        listing = [text for text in reply.texts if text != "continue"]
        return commands.parse_listing(listing[0]) if listing else []

    async def file_info(self, path: str) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
        """FCode metadata (plus ``size``) and preview images ``[(mimetype, bytes), ...]``."""
        reply = await self._command(_path_command("info", path))
        return commands.parse_kv(reply.final[3:]), reply.binaries

    async def file_md5(self, path: str) -> str:
        """MD5 hex of a file on the device."""
        reply = await self._command(
            _path_command("md5", path), final=lambda text: text.startswith("md5 ")
        )
        return reply.final[4:].strip()

    async def mkdir(self, path: str) -> None:
        """Create a folder (SD only)."""
        await self._command(_path_command("mkdir", path))

    async def rmdir(self, path: str) -> None:
        """Remove a folder and its contents (SD only)."""
        await self._command(_path_command("rmdir", path))

    async def cpfile(self, source_path: str, dist_path: str) -> None:
        """Copy a file from SD or USB to SD."""
        try:
            command = commands.cp_command(source_path, dist_path)
        except ValueError as exc:
            raise InvalidArguments(str(exc), details={"argument": "source_path/dist_path"}) from exc
        await self._command(command)

    async def rmfile(self, path: str) -> None:
        """Delete a file (SD only)."""
        await self._command(_path_command("rm", path))

    async def download_file(
        self, path: str, on_progress: ProgressCallback | None = None
    ) -> Download:
        """Fetch a file; ``on_progress(done, total)`` is called as bytes arrive."""
        reply = await self._command(_path_command("download", path), on_binary=on_progress)
        if len(reply.binaries) != 1:
            raise _unexpected(f"{self.address}: download {path}", reply.final)
        mimetype, data = reply.binaries[0]
        return Download(mimetype, data)

    async def upload_file(
        self,
        data: bytes,
        upload_to: str = "#",
        *,
        mimetype: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Upload bytes to ``upload_to`` (``/SD/...``), or to ``#``: the job to run next, not stored.

        The mimetype is guessed from ``upload_to`` when not given (``#`` defaults to FCode).
        """
        self._require("command")
        if len(data) > MAX_UPLOAD:
            raise InvalidArguments(
                f"upload of {len(data)} bytes exceeds {MAX_UPLOAD}", details={"argument": "data"}
            )
        if not upload_to:
            raise InvalidArguments("upload_to is empty", details={"argument": "upload_to"})
        kind = mimetype or (
            "application/fcode" if upload_to == "#" else commands.guess_mimetype(upload_to)
        )
        try:
            command = commands.upload_command(kind, len(data), upload_to)
        except ValueError as exc:
            raise InvalidArguments(str(exc), details={"argument": "upload_to"}) from exc
        await self._send_binary(command, data, on_progress=on_progress)
        log.info("flux_uploaded", device=self.address, target=upload_to, size=len(data))

    # ------------------------------------------------------------ job

    async def select_file(self, path: str) -> None:
        """Select a file on the device as the job."""
        await self._command(_path_command("select", path))

    async def start_play(self) -> None:
        """Start the selected (or ``#``-uploaded) job."""
        await self._command("player start")

    async def pause_play(self) -> None:
        """Pause the job."""
        await self._command("player pause")

    async def resume_play(self) -> None:
        """Resume the paused job."""
        await self._command("player resume")

    async def abort_play(self) -> None:
        """Abort the job."""
        await self._command("player abort")

    async def report_play(self) -> dict[str, Any]:
        """Job status: ``st_id``, ``st_label``, ``prog``, ``error`` ... (a bare JSON answer)."""
        reply = await self._command("player report", final=lambda text: text.startswith("{"))
        return self._json("player report", reply.final)

    async def play_info(self) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        """Job metadata and preview images ``[(mimetype, bytes), ...]``."""
        reply = await self._command("player info")
        info = [data for mime, data in reply.binaries if mime == "text/json"]
        images = [(mime, data) for mime, data in reply.binaries if mime != "text/json"]
        return (self._json("player info", info[0].decode(errors="replace")) if info else {}), images

    async def quit_play(self) -> None:
        """Leave a completed or aborted job (status back to idle)."""
        await self._command("player quit")

    # ------------------------------------------------------------ device

    async def deviceinfo(self) -> dict[str, str]:
        """Version, model, uuid, serial, nickname, addresses ... as strings."""
        return commands.parse_deviceinfo((await self._command("deviceinfo")).final)

    async def config_get(self, key: str) -> str | None:
        """One device config value, or None when unset."""
        return commands.parse_config_get((await self._command(f"config get {key}")).final)

    async def config_set(self, key: str, value: str) -> None:
        """Set one device config value."""
        await self._command(f"config set {key} {value}")

    async def config_del(self, key: str) -> None:
        """Unset one device config value."""
        await self._command(f"config del {key}")

    async def kick(self) -> None:
        """Disconnect the session holding the device in maintain/scan (not a print job)."""
        await self._command("kick")

    async def update_firmware(
        self, data: bytes, on_progress: ProgressCallback | None = None
    ) -> None:
        """Send a firmware image; the device checks it, answers, then restarts (link drops)."""
        self._require("command")
        if len(data) > MAX_FIRMWARE:
            raise InvalidArguments(
                f"firmware of {len(data)} bytes exceeds {MAX_FIRMWARE}",
                details={"argument": "data"},
            )
        await self._send_binary(
            f"update_fw binary/flux-firmware {len(data)} #",
            data,
            on_progress=on_progress,
            final_timeout_s=self.config.firmware_timeout_s,
        )
        log.info("flux_firmware_sent", device=self.address, size=len(data))
        await self._hang_up("device restarts into its updater")

    async def fetch_log(self, path: str, on_progress: ProgressCallback | None = None) -> Download:
        """Fetch a device log (``fetch_log <path>``, relative to the device's log folder)."""
        try:
            command = commands.fetch_log_command(path)
        except ValueError as exc:
            raise InvalidArguments(str(exc), details={"argument": "path"}) from exc
        reply = await self._command(command, on_binary=on_progress)
        if len(reply.binaries) != 1:
            raise _unexpected(f"{self.address}: fetch_log {path}", reply.final)
        mimetype, data = reply.binaries[0]
        return Download(mimetype, data)

    async def cloud_validation_code(self) -> tuple[str, bytes]:
        """``cloud_validation_code`` → ``(token, 32-byte hash)``; the caller signs the hash."""
        reply = await self._command("cloud_validation_code")
        words = reply.final.split(" ")
        try:
            if len(words) != 3:
                raise ValueError("expected ok <token> <base64 hash>")
            return words[1], base64.b64decode(words[2], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise _unexpected(f"{self.address}: cloud_validation_code", reply.final) from exc

    async def position(self) -> str:
        """The device's current task class (``CommandTask``, ``MaintainTask`` ...): a cheap probe."""
        if self.mode in ("raw", "icontrol"):
            self._require("command")  # the link carries another protocol now
        return (await self.call("position", final=lambda text: True)).final

    # ------------------------------------------------------------ camera (TCP 23812)

    async def open_camera(self) -> CameraLink:
        """Open an authenticated camera connection (protocol 3); the caller closes it.

        Raises:
            DeviceFault: The device refused our key (``AUTH_ERROR``) or is no camera port.
            DeviceUnavailable: It cannot be reached, or the handshake did not finish in time.
        """
        address = f"{self.host}:{self.config.camera_port}"
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                return await CameraLink.open(
                    self.host,
                    self.config.camera_port,
                    self._key,
                    device_uuid=self._device_uuid,
                    master_key=self._master_key,
                )
        except HandshakeError as exc:
            raise DeviceFault(
                f"{address}: camera: {exc}",
                details={"device_code": exc.symbols[0], "symbols": list(exc.symbols)},
            ) from exc
        except TimeoutError as exc:
            raise DeviceUnavailable(
                f"{address}: camera: no handshake within {self.config.connect_timeout_s} s"
            ) from exc
        except (OSError, EOFError) as exc:
            raise DeviceUnavailable(f"{address}: camera: connect failed: {exc}") from exc

    async def camera_frame(self) -> bytes:
        """One camera frame (``f``) as JPEG bytes, on a connection of its own."""
        link = await self.open_camera()
        try:
            return await self._camera_io(link.frame(self.config.reply_timeout_s))
        finally:
            link.close()

    async def camera_frames(self) -> AsyncIterator[bytes]:
        """Stream camera frames (``s+``) as JPEG bytes until the caller stops iterating.

        Each frame must come within ``reply_timeout_s``. Leaving the loop sends ``s-`` and closes.

        Raises:
            DeviceFault / DeviceUnavailable: As ``open_camera``; DeviceUnavailable or
                DeviceTimeout when the stream breaks (the caller may open a new one).
        """
        link = await self.open_camera()
        wait = self.config.reply_timeout_s
        try:
            await self._camera_io(link.start_stream(wait))
            while True:
                yield await self._camera_io(link.next_image(wait))
        finally:
            if link.streaming:
                try:
                    async with asyncio.timeout(1.0):
                        await link.stop_stream(1.0)
                except (OSError, TimeoutError):
                    pass  # the link is going away in any case
            link.close()

    async def _camera_io(self, work: Awaitable[_T]) -> _T:
        address = f"{self.host}:{self.config.camera_port}"
        try:
            return await work
        except TimeoutError as exc:
            raise DeviceTimeout(f"{address}: camera: no frame in time") from exc
        except (OSError, ProtocolViolation) as exc:
            raise DeviceUnavailable(f"{address}: camera: {exc}") from exc
