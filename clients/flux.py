"""fluxclient's ``FluxRobot`` over linebus: code written for fluxclient reads the same.

::

    from clients.flux import FluxRobot, RobotError

    with FluxRobot(("192.168.1.30", 23811), client_key) as robot:   # or FluxRobot(bus, "p1")
        print(robot.list_files("/SD/"))
        robot.upload_file("part.fc", "#", lambda robot, sent, total: print(sent, total))
        robot.start_play()
        print(robot.report_play())
        robot.config["autoresume"] = "Y"
        task = robot.scan()
        jpeg = task.oneshot()
        task.quit()
        jpeg = robot.camera_frame()                    # the camera port (23812)
        with robot.watch_camera(max_fps=2) as camera:  # fluxclient's FluxCamera, streaming
            for jpeg in camera.frames(timeout=5):
                break

``FluxRobot((ip, 23811), client_key)`` works as in fluxclient: it connects to the bus of
``LINEBUS_ENDPOINT`` and asks the broker which ``flux`` actor drives that printer; the actor owns
the connection and the key (its options ``host``, ``key``, ``password``). ``FluxRobot(bus,
service)`` names the actor instead. Local files and streams are read and written here, on the
caller's machine. Also here: fluxclient's ``get_or_create_default_key`` (``commands.misc``;
from ``clients.fluxkey``). ``discover_device`` and its ``Device.connect_robot`` are in
``clients.discovery``.
Errors are ``RobotError`` (the device answered with an error; ``error_symbol`` holds its words)
or ``RobotSessionError`` (link, timeout, bus), each raised ``from`` the bus error.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Self

from bus.client import Call, Client
from bus.errors import BusError
from clients._session import BusSession, connect_bus
from clients._vendor import is_bus, vendor_session
from clients.fluxkey import KeyObject, get_or_create_default_key

__all__ = [
    "FluxCamera",
    "FluxRobot",
    "IControlTasks",
    "KeyObject",
    "MaintainTasks",
    "RawTasks",
    "RobotError",
    "RobotSessionError",
    "ScanTasks",
    "StatusWatcher",
    "get_or_create_default_key",
]

#: Bus codes that mean the session, not the device's answer, failed.
_SESSION_CODES = {
    "broker_unreachable",
    "config_error",
    "unauthenticated",
    "forbidden",
    "device_unavailable",
    "device_timeout",
    "unavailable",
    "deadline_exceeded",
    "unknown_service",
    "closed",
    "internal",
    "cancelled",
}


class _FluxErrorMixin:
    code: str
    details: dict[str, Any]
    error_symbol: tuple[str, ...]

    def _init(self, symbols: tuple[str, ...], code: str, details: dict[str, Any] | None) -> None:
        self.error_symbol = symbols
        self.code = code
        self.details = dict(details or {})

    @property
    def device_code(self) -> str:
        """The first device symbol (``NOT_EXIST``, ``RESOURCE_BUSY`` ...)."""
        return self.error_symbol[0] if self.error_symbol else ""


class RobotError(_FluxErrorMixin, RuntimeError):
    """The device (or the actor, for its own checks) refused the operation.

    Attributes:
        error_symbol: The device's words after ``error`` (``("NOT_EXIST", "BAD_NODE")``).
        code: The linebus error code (``device_fault``, ``busy``, ``invalid_arguments``).
        details: Everything the bus error carried.
    """

    def __init__(
        self,
        message: str,
        *symbols: str,
        code: str = "device_fault",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self._init(symbols or ("UNKNOWN_ERROR",), code, details)


class RobotSessionError(_FluxErrorMixin, Exception):
    """The session failed: link down, no answer in time, actor or broker unavailable, cancelled.

    ``error_symbol`` is ``("DISCONNECTED",)``, ``("TIMEOUT",)`` or the device's handshake symbols.
    """

    def __init__(
        self,
        message: str,
        *symbols: str,
        code: str = "device_unavailable",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self._init(symbols or ("DISCONNECTED",), code, details)


def _translate(exc: BusError) -> RobotError | RobotSessionError:
    code = getattr(exc, "remote_code", None) or exc.code
    details = dict(exc.details)
    raw = details.get("symbols")
    symbols = tuple(str(s) for s in raw) if isinstance(raw, list) and raw else ()
    if not symbols and isinstance(details.get("device_code"), str):
        symbols = (details["device_code"],)
    if code in ("device_timeout", "deadline_exceeded"):
        return RobotSessionError(
            exc.message, *(symbols or ("TIMEOUT",)), code=code, details=details
        )
    if code == "device_fault" and symbols and symbols[0] in ("AUTH_ERROR", "KICKED"):
        return RobotSessionError(exc.message, *symbols, code=code, details=details)
    if code in _SESSION_CODES:
        if code == "cancelled" and not symbols:
            symbols = ("CANCELLED",)
        return RobotSessionError(exc.message, *symbols, code=code, details=details)
    if code == "busy" and not symbols:
        symbols = ("RESOURCE_BUSY",)
    if code == "invalid_arguments" and not symbols:
        symbols = ("BAD_PARAMS",)
    return RobotError(exc.message, *symbols, code=code, details=details)


ProgressCallback = Callable[[Any, int, int], Any]


def _robot_address(endpoint: object) -> str:
    """``host:port`` of fluxclient's ``(ip, port)`` endpoint (``[v6]:port`` for IPv6)."""
    if (
        isinstance(endpoint, (tuple, list))
        and len(endpoint) == 2
        and isinstance(endpoint[0], str)
        and isinstance(endpoint[1], int)
        and not isinstance(endpoint[1], bool)
    ):
        host, port = endpoint
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raise RobotSessionError(
        f"endpoint must be an (ip, port) pair or a bus endpoint (tcp://host:port), not {endpoint!r}",
        "BAD_PARAMS",
        code="invalid_arguments",
    )


def _flux_session(
    endpoint: object, client_key: Any, bus: Client | str | None, timeout: float
) -> tuple[Client, bool, str]:
    """``(client, owned, service)`` of a facade built bus-style (``endpoint`` a bus, then the
    service name) or vendor-style (``(ip, port)``, then fluxclient's key: the flux actor that
    drives that address, looked up on ``bus`` or the default bus).

    Raises:
        RobotSessionError: A bad endpoint, no such actor, an unreachable broker ...
    """
    try:
        if is_bus(endpoint):
            if not isinstance(client_key, str):
                raise RobotSessionError(
                    "with a bus, the second argument is the flux actor's service name, "
                    f"not {type(client_key).__name__}",
                    "BAD_PARAMS",
                    code="invalid_arguments",
                )
            client, owned = connect_bus(endpoint)
            return client, owned, client_key
        address = _robot_address(endpoint)
        return vendor_session(
            "flux", address, f"the FLUX device at {address}", bus=bus, timeout=timeout
        )
    except BusError as exc:
        raise _translate(exc) from exc


def _bus_call(bus: Client, service: str, command: str, args: dict[str, Any], timeout: float) -> Any:
    """One command on the bus, its failure raised as fluxclient's exception."""
    try:
        return bus.call(service, command, args, timeout=timeout)
    except BusError as exc:
        raise _translate(exc) from exc


def _no_usb(what: str) -> RobotSessionError:
    return RobotSessionError(
        f"{what}.from_usb: USB connections are not offered over linebus; the flux actor reaches"
        " the printer over the network (name it by address or service)",
        "NOT_SUPPORT",
        code="invalid_arguments",
    )


class FluxRobot(BusSession):
    """A session with a FLUX device on the bus, built the vendor's way or the bus's way.

    Vendor-style, as fluxclient (the bus is ``LINEBUS_ENDPOINT``'s, or ``tcp://127.0.0.1:7750``;
    the bus keys are the client environment's)::

        robot = FluxRobot(("192.168.1.30", 23811), client_key)

    The broker tells which ``flux`` actor drives that printer (``lookup`` of ``host:port``);
    none: ``RobotSessionError`` code ``unknown_service`` (``unavailable`` if it is down).
    ``client_key`` and ``ignore_key_validation`` are accepted and not used: the actor signs in
    with its own key (its option ``key``), which the printer must trust. ``device`` is kept as
    given (``Device.connect_robot`` passes itself).

    Bus-style, naming the actor::

        robot = FluxRobot("tcp://127.0.0.1:7750", "p1")   # or FluxRobot(client, "p1")

    The rule: bus-style when ``endpoint`` is a ``bus.client.Client`` or a string with a ZeroMQ
    transport scheme (``tcp://``, ``ipc://`` ...); vendor-style when it is an ``(ip, port)``
    pair (tuple or list). Anything else is ``RobotSessionError`` code ``invalid_arguments``.

    Args:
        endpoint: ``(ip, port)`` (vendor-style), or a ``Client`` or the broker's command
            endpoint (bus-style).
        client_key: fluxclient's key object (vendor-style, unused); the flux actor's service
            name (bus-style).
        device: fluxclient's device object or metadata, kept as ``self._device``.
        ignore_key_validation: Accepted for fluxclient's signature; the actor validates.
        bus: Vendor-style only: the bus to look the printer up on (a ``Client``, borrowed, or
            an endpoint) instead of ``LINEBUS_ENDPOINT``'s.
        timeout: Bus deadline, in seconds, of ordinary calls.
        transfer_timeout: Bus deadline of uploads, downloads, firmware and mode entry.

    It checks the actor at once. Every session failure, a bad endpoint and an unreachable
    broker included, is a ``RobotSessionError`` carrying the linebus ``code``. Not thread-safe.
    """

    _device: Any = None

    def __init__(
        self,
        endpoint: Client | str | tuple[str, int] | list[Any],
        client_key: Any,
        device: Any = None,
        ignore_key_validation: bool = False,
        *,
        bus: Client | str | None = None,
        timeout: float = 40.0,
        transfer_timeout: float = 600.0,
    ) -> None:
        self._closed = True  # until there is a connection to close
        self.timeout = timeout
        self.transfer_timeout = transfer_timeout
        self._task: ScanTasks | MaintainTasks | None = None
        self._device = device
        self._client_key = client_key
        self._bus, self._owned, self.service = _flux_session(endpoint, client_key, bus, timeout)
        self._closed = False
        try:
            self._call("ping")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ session

    def _call(
        self, command: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        if self._closed:
            raise RobotSessionError("Device is already closed", "OPERATION_ERROR", code="closed")
        return _bus_call(self._bus, self.service, command, args or {}, timeout or self.timeout)

    def _follow(self, command: str, args: dict[str, Any], on_update: Callable[[Any], Any]) -> Any:
        """Run a long command, feeding progress to ``on_update``; an exception there cancels it."""
        if self._closed:
            raise RobotSessionError("Device is already closed", "OPERATION_ERROR", code="closed")
        try:
            call: Call = self._bus.start(self.service, command, args, timeout=self.transfer_timeout)
        except BusError as exc:
            raise _translate(exc) from exc
        try:
            for update in call.updates():
                on_update(update)
            return call.result()
        except BusError as exc:
            raise _translate(exc) from exc
        except BaseException:
            call.cancel()
            with contextlib.suppress(BusError):  # cancelled, or ended meanwhile
                call.result()
            raise

    def _bytes_feed(
        self, callback: ProgressCallback | None, *, left: bool = False
    ) -> Callable[[Any], None]:
        def on_update(update: Any) -> None:
            if callback is not None and isinstance(update, dict) and "done" in update:
                done, total = int(update["done"]), int(update["total"])
                callback(self, total - done if left else done, total)

        return on_update

    # ------------------------------------------------------------ files

    def list_files(self, path: str) -> list[tuple[bool, str]]:
        """List folders, ``.fc`` and ``.gcode`` files: ``[(is_dir, name), ...]``."""
        return [
            (bool(is_dir), str(name)) for is_dir, name in self._call("list_files", {"path": path})
        ]

    def file_info(self, path: str) -> list[Any]:
        """``[metadata dict, [(mimetype, image bytes), ...]]``."""
        info = self._call("file_info", {"path": path})
        return [info["metadata"], [(mime, data) for mime, data in info["images"]]]

    def file_md5(self, path: str) -> str:
        """MD5 hex of a file on the device."""
        return str(self._call("file_md5", {"path": path}))

    def mkdir(self, path: str) -> None:
        """Create a folder on the device."""
        self._call("mkdir", {"path": path})

    def rmdir(self, path: str) -> None:
        """Remove a folder from the device."""
        self._call("rmdir", {"path": path})

    def cpfile(self, source_path: str, dist_path: str) -> None:
        """Copy a file (from SD or USB) to SD."""
        self._call("cpfile", {"source_path": source_path, "dist_path": dist_path})

    def rmfile(self, path: str) -> None:
        """Remove a file from the device."""
        self._call("rmfile", {"path": path})

    def download_file(
        self, path: str, stream: IO[bytes], process_callback: ProgressCallback | None = None
    ) -> str:
        """Download ``path`` into the file-like ``stream``; returns the mimetype.

        ``process_callback(robot, left, size)`` follows the transfer.
        """
        result = self._follow(
            "download_file", {"path": path}, self._bytes_feed(process_callback, left=True)
        )
        stream.write(result["data"])
        return str(result["mimetype"])

    def upload_file(
        self,
        filename: str | os.PathLike[str],
        upload_to: str = "#",
        process_callback: ProgressCallback | None = None,
    ) -> None:
        """Upload the local file ``filename`` to ``upload_to`` (``#``: the next job).

        ``process_callback(robot, sent, total)`` follows the transfer.
        """
        try:
            data = Path(filename).read_bytes()
        except OSError as exc:
            raise RobotError(
                f"cannot read {filename}: {exc}", "BAD_PARAMS", code="invalid_arguments"
            ) from exc
        mimetype = _guess_mimetype(str(filename))
        self._upload(data, mimetype, upload_to, process_callback)

    def upload_stream(
        self,
        stream: IO[bytes],
        mimetype: str,
        size: int,
        upload_to: str = "#",
        process_callback: ProgressCallback | None = None,
    ) -> None:
        """Upload ``size`` bytes read from ``stream`` with ``mimetype``."""
        data = stream.read(size)
        if len(data) != size:
            raise RobotError(
                f"stream ended after {len(data)} of {size} bytes",
                "BAD_PARAMS",
                code="invalid_arguments",
            )
        self._upload(data, mimetype, upload_to, process_callback)

    def yihniwimda_upload_stream(
        self, mimetype: str, size: int, upload_to: str = "#"
    ) -> Iterator[Callable[[bytes], int]]:
        """fluxclient's feeder upload of ``size`` bytes of ``mimetype``::

            for feeder in robot.yihniwimda_upload_stream("text/gcode", size):
                sent = feeder(buffer)            # the bytes taken so far

        It yields a feeder until ``size`` bytes were fed, then uploads them as one upload (the
        bytes travel over the bus once complete, so the device answers only at the end: a
        refused upload raises from the last ``next``). An empty buffer raises
        ``RobotSessionError`` as fluxclient's does; feeding more than ``size`` bytes raises
        ``RobotError`` ``BAD_PARAMS``.
        """
        chunks: list[bytes] = []
        sent = 0

        def feeder(buffer: bytes) -> int:
            nonlocal sent
            if not buffer:
                raise RobotSessionError(
                    "Upload file error", "UPLOAD_ERROR", code="invalid_arguments"
                )
            chunks.append(bytes(buffer))
            sent += len(buffer)
            return sent

        while sent < size:
            yield feeder
        if sent > size:
            raise RobotError(
                f"fed {sent} bytes to an upload of {size}",
                "BAD_PARAMS",
                code="invalid_arguments",
            )
        self._upload(b"".join(chunks), mimetype, upload_to, None)

    def _upload(
        self, data: bytes, mimetype: str, upload_to: str, process_callback: ProgressCallback | None
    ) -> None:
        args = {"data": data, "upload_to": upload_to, "mimetype": mimetype}
        self._follow("upload_file", args, self._bytes_feed(process_callback))

    # ------------------------------------------------------------ job

    def select_file(self, path: str) -> None:
        """Select a file on the device as the job."""
        self._call("select_file", {"path": path})

    def start_play(self) -> None:
        """Start the selected job."""
        self._call("start_play")

    def pause_play(self) -> None:
        """Pause the job."""
        self._call("pause_play")

    def resume_play(self) -> None:
        """Resume the job."""
        self._call("resume_play")

    def abort_play(self) -> None:
        """Abort the job."""
        self._call("abort_play")

    def report_play(self) -> dict[str, Any]:
        """The job status: ``st_id``, ``st_label``, ``prog``, ``error`` ... (plus ``label``)."""
        return dict(self._call("report_play"))

    def play_info(self) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        """Job metadata and preview images ``(info, [(mimetype, bytes), ...])``."""
        info = self._call("play_info")
        return info["info"], [(mime, data) for mime, data in info["images"]]

    def quit_play(self) -> None:
        """Leave a completed or aborted job."""
        self._call("quit_play")

    def restart_play(self) -> None:
        """Restart the job (the device answers ``UNKNOWN_COMMAND``: it does not route it)."""
        self._call("restart_play")

    def set_toolhead_operating_in_play(self) -> None:
        """Toolhead to operating mode during the job."""
        self._call("set_toolhead_operating_in_play")

    def set_toolhead_standby_in_play(self) -> None:
        """Toolhead to standby during the job."""
        self._call("set_toolhead_standby_in_play")

    def set_toolhead_heater_in_play(self, temp: float, index: int = 0) -> None:
        """Set the toolhead temperature ``temp`` (°C) during the job."""
        self._call("set_toolhead_heater_in_play", {"temp": float(temp), "index": int(index)})

    def load_filament_in_play(self, index: int = 0) -> None:
        """Load filament during the job."""
        self._call("load_filament_in_play", {"index": int(index)})

    def unload_filament_in_play(self, index: int = 0) -> None:
        """Unload filament during the job."""
        self._call("unload_filament_in_play", {"index": int(index)})

    def press_button_in_play(self) -> None:
        """Press the toolhead button during the job."""
        self._call("press_button_in_play")

    def watch_status(self) -> StatusWatcher:
        """Subscribe to the actor's ``<service>.status`` events (linebus extension)."""
        return StatusWatcher(self._bus, self.service)

    # ------------------------------------------------------------ device

    @property
    def deviceinfo(self) -> dict[str, str]:
        """Version, model, uuid, serial, nickname ... (a property, as in fluxclient)."""
        return dict(self._call("deviceinfo"))

    @property
    def config(self) -> RobotConfig:
        """The device config, subscriptable: ``robot.config["autoresume"] = "Y"``."""
        return RobotConfig(self)

    def config_get(self, key: str) -> str | None:
        """One device config value, or None when unset."""
        value = self._call("config_get", {"key": key})
        return None if value is None else str(value)

    def config_set(self, key: str, value: Any) -> None:
        """Set one device config value (sent as text, as fluxclient does)."""
        self._call("config_set", {"key": key, "value": str(value)})

    def config_del(self, key: str) -> None:
        """Unset one device config value."""
        self._call("config_del", {"key": key})

    @property
    def device(self) -> Any:
        """The device object or metadata this robot was built with (fluxclient's ``device``)."""
        return self._device

    @classmethod
    def from_usb(cls, client_key: Any, usbprotocol: Any) -> FluxRobot:
        """fluxclient's USB constructor: not offered (``RobotSessionError`` ``NOT_SUPPORT``)."""
        raise _no_usb("FluxRobot")

    def fetch_log(
        self, path: str, stream: IO[bytes], process_callback: ProgressCallback | None = None
    ) -> str:
        """Download the device log ``path`` into ``stream``; returns the mimetype.

        ``process_callback(robot, left, size)`` follows the transfer, as for ``download_file``.
        """
        result = self._follow(
            "fetch_log", {"path": path}, self._bytes_feed(process_callback, left=True)
        )
        stream.write(result["data"])
        return str(result["mimetype"])

    def get_cloud_validation_code(self) -> dict[str, str]:
        """``{"token", "access_id", "signature"}`` binding the device to a cloud account.

        The flux actor signs with its key (the one the printer trusts), not a local key.
        """
        return {
            str(key): str(value) for key, value in self._call("get_cloud_validation_code").items()
        }

    def position(self) -> str:
        """The device's current task (``CommandTask``, ``MaintainTask`` ...): a cheap probe."""
        return str(self._call("position"))

    def raw(self) -> RawTasks:
        """Enter raw mode; returns the task (``send``/``recv``, ``sock``, ``quit()``)."""
        self._call("raw", timeout=self.transfer_timeout)
        return RawTasks(self)

    def icontrol(self) -> IControlTasks:
        """Enter icontrol (the device is held); its SDK protocol is not offered, only ``quit()``."""
        self._call("icontrol", timeout=self.transfer_timeout)
        return IControlTasks(self)

    def camera_frame(self) -> bytes:
        """One frame of the camera (TCP 23812): JPEG bytes (linebus extension)."""
        return bytes(self._call("camera_frame"))

    def watch_camera(self, max_fps: float = 2.0) -> FluxCamera:
        """The camera, streaming at most ``max_fps`` frames a second (linebus extension).

        Use it as a context manager (it stops the stream), or call ``close()``.
        """
        camera = FluxCamera(self._bus, self.service, timeout=self.timeout, max_fps=max_fps)
        try:
            camera.enable_streaming()
        except BaseException:
            camera.close()
            raise
        return camera

    def kick(self) -> None:
        """Kick the session that holds the device in maintain/scan."""
        self._call("kick")

    def update_firmware(
        self, stream: IO[bytes], size: int, process_callback: ProgressCallback | None = None
    ) -> None:
        """Send ``size`` bytes of firmware from ``stream``; the device restarts after."""
        data = stream.read(size)
        self._follow("update_firmware", {"data": data}, self._bytes_feed(process_callback))

    def scan(self) -> ScanTasks:
        """Enter scan mode; returns the task object (call its ``quit()`` when done)."""
        self._call("scan", timeout=self.transfer_timeout)
        return ScanTasks(self)

    def maintain(self) -> MaintainTasks:
        """Enter maintain mode; returns the task object (call its ``quit()`` when done)."""
        self._call("maintain", timeout=self.transfer_timeout)
        return MaintainTasks(self)


class RobotConfig:
    """``robot.config[key]`` / ``robot.config[key] = value`` / ``del robot.config[key]``."""

    def __init__(self, robot: FluxRobot) -> None:
        self._robot = robot

    def __getitem__(self, key: str) -> str | None:
        return self._robot.config_get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._robot.config_set(key, value)

    def __delitem__(self, key: str) -> None:
        self._robot.config_del(key)


class _Tasks:
    _prefix = ""

    def __init__(self, robot: FluxRobot) -> None:
        self.robot = robot

    def _call(self, task: str, args: dict[str, Any] | None = None, *, long: bool = False) -> Any:
        return self.robot._call(
            f"{self._prefix}_{task}", args, timeout=self.robot.transfer_timeout if long else None
        )

    def _messages(
        self, task: str, args: dict[str, Any], callback: Callable[..., Any] | None
    ) -> Any:
        def on_update(update: Any) -> None:
            if callback is not None and isinstance(update, dict) and "message" in update:
                callback(self, *str(update["message"]).split())

        return self.robot._follow(f"{self._prefix}_{task}", args, on_update)

    def quit(self) -> None:
        """Leave the mode."""
        self._call("quit")


class ScanTasks(_Tasks):
    """fluxclient's ``ScanTasks``: each method is the actor's ``scan_<name>`` command."""

    _prefix = "scan"

    def step_length(self, length: float) -> None:
        """Set the turntable step."""
        self._call("step_length", {"length": float(length)})

    def forward(self) -> None:
        """Turn one step forward."""
        self._call("forward", long=True)

    def backward(self) -> None:
        """Turn one step back."""
        self._call("backward", long=True)

    def laser(self, left: bool, right: bool) -> None:
        """Switch the lasers."""
        self._call("laser", {"left": bool(left), "right": bool(right)})

    def check_camera(self) -> str:
        """The camera service's raw status line."""
        return str(self._call("check_camera"))

    def calibrate(self) -> str:
        """Calibrate; the raw answer."""
        return str(self._call("calibrate", long=True))

    def get_calibrate(self) -> list[int]:
        """The stored calibration."""
        return list(self._call("get_calibrate"))

    def oneshot(self) -> bytes:
        """One photo: JPEG bytes."""
        return bytes(self._call("oneshot", long=True))

    def scanimages(self) -> list[bytes]:
        """Three photos (left laser, right laser, none): JPEG bytes each."""
        return [bytes(image) for image in self._call("scanimages", long=True)]


class MaintainTasks(_Tasks):
    """fluxclient's ``MaintainTasks``: each method is the actor's ``maintain_<name>`` command."""

    _prefix = "maintain"

    def home(self) -> None:
        """Home the head."""
        self._call("home", long=True)

    def move(self, **axes: float) -> None:
        """Move: ``f``, ``x``, ``y``, ``z``, ``e``."""
        self._call("move", {k: float(v) for k, v in axes.items()}, long=True)

    def calibrate(
        self,
        threshold: float | None = None,
        clean: bool = False,
        process_callback: Callable[..., Any] | None = None,
    ) -> list[float]:
        """Calibrate; ``process_callback(task, *words)`` per ``CTRL`` line; the three values."""
        args: dict[str, Any] = {"clean": clean} | (
            {"threshold": float(threshold)} if threshold is not None else {}
        )
        return list(self._messages("calibrate", args, process_callback))

    def zprobe(self, process_callback: Callable[..., Any] | None = None) -> float:
        """Probe z."""
        return float(self._messages("zprobe", {}, process_callback))

    def manual_level(
        self, height: float, process_callback: Callable[..., Any] | None = None
    ) -> float:
        """Level manually at ``height``."""
        return float(self._messages("manual_level", {"height": float(height)}, process_callback))

    def head_info(self) -> dict[str, Any]:
        """The toolhead profile."""
        return dict(self._call("head_info"))

    def head_status(self) -> dict[str, Any]:
        """The toolhead status."""
        return dict(self._call("head_status"))

    def set_heater(self, index: int, temperature: float) -> None:
        """Set an extruder temperature."""
        self._call("set_heater", {"index": int(index), "temperature": float(temperature)})

    set_extruder_temperature = set_heater

    def diagnosis_sensor(self) -> dict[str, str]:
        """Sensor readings."""
        return dict(self._call("diagnosis_sensor"))

    def diagnosis(self, option: str = "hal") -> str:
        """Run a diagnosis."""
        return str(self._call("diagnosis", {"option": option}, long=True))

    def load_filament(
        self,
        index: int = 0,
        temperature: float = 210.0,
        process_callback: Callable[..., Any] | None = None,
    ) -> None:
        """Load filament."""
        self._messages(
            "load_filament",
            {"index": int(index), "temperature": float(temperature)},
            process_callback,
        )

    def load_flexible_filament(
        self,
        index: int = 0,
        temperature: float = 210.0,
        process_callback: Callable[..., Any] | None = None,
    ) -> None:
        """Load flexible filament."""
        self._messages(
            "load_flexible_filament",
            {"index": int(index), "temperature": float(temperature)},
            process_callback,
        )

    def unload_filament(
        self,
        index: int = 0,
        temperature: float = 210.0,
        process_callback: Callable[..., Any] | None = None,
    ) -> None:
        """Unload filament."""
        self._messages(
            "unload_filament",
            {"index": int(index), "temperature": float(temperature)},
            process_callback,
        )

    def interrupt_load_filament(self) -> None:
        """Stop a running (un)load macro."""
        self._call("interrupt_load_filament")

    def update_hbfw(
        self, stream: IO[bytes], size: int, process_callback: Callable[..., Any] | None = None
    ) -> None:
        """Flash toolhead firmware from ``stream``."""
        self.robot._follow(
            "maintain_update_hbfw",
            {"data": stream.read(size)},
            self.robot._bytes_feed(process_callback),
        )

    def reset_hardware(self) -> None:
        """Reset the mainboard (leaves maintain mode)."""
        self._call("reset_hardware")


class RawTasks(_Tasks):
    """fluxclient's ``RawTasks``: a byte pipe to the mainboard and toolhead, until ``quit()``.

    fluxclient hands out the socket (``task.sock``); here ``sock`` is this object, whose
    ``send`` and ``recv`` go through the actor's ``raw_send`` / ``raw_recv``.
    """

    _prefix = "raw"

    def __init__(self, robot: FluxRobot) -> None:
        super().__init__(robot)
        self._held = b""

    @property
    def sock(self) -> RawTasks:
        """What to ``send`` to and ``recv`` from (fluxclient's raw socket)."""
        return self

    def send(self, data: bytes) -> int:
        """Send bytes (``b"+G28\n"``: a line for the mainboard); returns how many."""
        self._call("send", {"data": bytes(data)})
        return len(data)

    def recv(self, bufsize: int = 4096, timeout: float = 0.5) -> bytes:
        """Up to ``bufsize`` bytes the device sent, waiting at most ``timeout`` seconds; b""
        when nothing came (unlike a socket, where b"" means closed)."""
        if not self._held:
            self._held = bytes(self._call("recv", {"timeout_s": float(timeout)}))
        data, self._held = self._held[:bufsize], self._held[bufsize:]
        return data


class IControlTasks(_Tasks):
    """The device held in icontrol mode (fluxclient's ``icontrol()``; its SDK is not offered)."""

    _prefix = "icontrol"

    def close(self) -> None:
        """Leave icontrol (as ``quit``)."""
        self.quit()


class FluxCamera(BusSession):
    """fluxclient's ``FluxCamera`` over the bus: the camera of the printer a flux actor drives.

    ::

        camera = FluxCamera("tcp://127.0.0.1:7750", "p1")   # or FluxCamera(client, "p1")
        camera.require_frame()
        camera.feed(lambda camera, jpeg: save(jpeg))       # one image
        camera.enable_streaming()
        camera.capture(lambda camera, jpeg: camera.abort())  # until abort()
        camera.close()

    Built as in fluxclient, ``FluxCamera((ip, 23812), client_key, device=None)`` (what
    ``Device.connect_camera`` does), the broker tells which flux actor drives that camera (the
    actor advertises its camera address beside its robot address); ``client_key`` is accepted and
    not used, as for ``FluxRobot``. Or bus-style, ``FluxCamera(bus, "p1")``.

    ``require_frame`` asks the actor for one frame (``camera_frame``); ``enable_streaming``
    subscribes to its ``<service>.camera`` events and starts them (``camera_start``, at most
    ``max_fps`` a second); ``disable_streaming`` stops them for every subscriber
    (``camera_stop``). Images reach ``image_callback(camera, jpeg_bytes)`` through ``feed``,
    ``unpack_image`` and ``capture``, as in fluxclient. ``fileno`` is not offered (there is no
    socket to ``select`` on); ``frames`` iterates instead.

    Args:
        endpoint: ``(ip, port)`` of the camera (vendor-style), or a ``Client`` (borrowed) or the
            broker's endpoint (bus-style).
        client_key: fluxclient's key (vendor-style, unused), or the flux actor's service name.
        sock: fluxclient's USB bridge socket: only None is accepted.
        device: fluxclient's device object, kept as given.
        bus: Vendor-style only: the bus to look the camera up on instead of the default one.
        timeout: Bus deadline of each call, and how long ``feed`` waits for an image.
        max_fps: Stream rate asked of the actor.
    """

    def __init__(
        self,
        endpoint: Client | str | tuple[str, int] | list[Any],
        client_key: Any,
        sock: Any = None,
        device: Any = None,
        *,
        bus: Client | str | None = None,
        timeout: float = 40.0,
        max_fps: float = 2.0,
    ) -> None:
        if sock is not None:
            raise _no_usb("FluxCamera")
        self._bus, self._owned, self.service = _flux_session(endpoint, client_key, bus, timeout)
        self.timeout = timeout
        self.max_fps = max_fps
        self._device = device
        self._images: collections.deque[bytes] = collections.deque()
        self._sub: Any = None
        self._running = False
        try:
            self._call("ping")
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_usb(cls, client_key: Any, usbprotocol: Any) -> FluxCamera:
        """fluxclient's USB constructor: not offered (``RobotSessionError`` ``NOT_SUPPORT``)."""
        raise _no_usb("FluxCamera")

    def _call(self, command: str, args: dict[str, Any] | None = None) -> Any:
        if self._closed:
            raise RobotSessionError("Camera is already closed", "OPERATION_ERROR", code="closed")
        return _bus_call(self._bus, self.service, command, args or {}, self.timeout)

    def enable_streaming(self) -> None:
        """Start the stream (its frames come to ``feed`` / ``capture`` / ``frames``)."""
        fresh = self._sub is None
        if self._sub is None:
            self._sub = self._bus.subscribe(f"{self.service}.camera")
        try:
            if fresh:
                self._sub.wait_ready(5.0)
            self._call("camera_start", {"max_fps": float(self.max_fps)})
        except BaseException as exc:
            if fresh:  # not streaming after all: no subscription left behind
                self._sub.close()
                self._sub = None
            if isinstance(exc, BusError):
                raise _translate(exc) from exc
            raise

    def disable_streaming(self) -> None:
        """Stop the stream (the actor's, for every subscriber)."""
        self._call("camera_stop")
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def require_frame(self) -> None:
        """Ask for one frame; the next ``feed`` delivers it."""
        self._images.append(bytes(self._call("camera_frame")))

    def fileno(self) -> int:
        """Not offered: there is no camera socket here (``RobotError`` ``NOT_SUPPORT``)."""
        raise RobotError(
            "FluxCamera.fileno: no socket to select on over the bus; use capture() or frames()",
            "NOT_SUPPORT",
            code="invalid_arguments",
        )

    def _receive(self, timeout: float | None) -> bool:
        """Take one streamed frame into the buffer; False when none came within ``timeout``."""
        if self._sub is None:
            return False
        event = self._sub.next(timeout)
        if event is None:
            return False
        if isinstance(event.data, dict) and isinstance(event.data.get("data"), bytes):
            self._images.append(event.data["data"])
        return True

    def feed(self, image_callback: Callable[[FluxCamera, bytes], Any]) -> None:
        """Deliver the images that are here, waiting up to ``timeout`` for one if none is.

        Raises:
            RobotSessionError: ``TIMEOUT`` when no image came (nothing requested or streaming).
        """
        if not self._images and not self._receive(self.timeout):
            raise RobotSessionError(
                f"{self.service}: no camera image within {self.timeout} s", "TIMEOUT"
            )
        self.unpack_image(image_callback)

    def unpack_image(self, image_callback: Callable[[FluxCamera, bytes], Any]) -> None:
        """Deliver every image already received to ``image_callback(camera, jpeg)``."""
        while self._images:
            image_callback(self, self._images.popleft())

    def capture(self, image_callback: Callable[[FluxCamera, bytes], Any]) -> None:
        """Deliver images as they come until ``abort()`` (from the callback or another thread)."""
        self._running = True
        while self._running:
            self._receive(0.05)
            self.unpack_image(image_callback)

    def frames(self, timeout: float | None = None) -> Iterator[bytes]:
        """Yield images (requested or streamed) until none comes within ``timeout`` seconds."""
        while self._images or self._receive(timeout):
            while self._images:
                yield self._images.popleft()

    def abort(self) -> None:
        """End ``capture``."""
        self._running = False

    def _release(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(RobotError, RobotSessionError):
                _bus_call(self._bus, self.service, "camera_stop", {}, self.timeout)
            self._sub.close()
            self._sub = None


class StatusWatcher:
    """The ``<service>.status`` events of a flux actor: ``for status in watcher.statuses(timeout=5)``."""

    def __init__(self, bus: Client, service: str) -> None:
        self.topic = f"{service}.status"
        try:
            self._sub = bus.subscribe(self.topic)
            self._sub.wait_ready(5.0)
        except BusError as exc:
            raise _translate(exc) from exc
        self._lock = threading.Lock()

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next status, or None if none comes within ``timeout`` seconds."""
        while True:
            try:
                event = self._sub.next(timeout)
            except BusError as exc:  # the broker refused our key meanwhile
                raise _translate(exc) from exc
            if event is None:
                return None
            if event.topic == self.topic and isinstance(event.data, dict):
                return dict(event.data)

    def statuses(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield statuses until none comes within ``timeout`` seconds."""
        while (status := self.next(timeout)) is not None:
            yield status

    def close(self) -> None:
        """Unsubscribe."""
        self._sub.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _guess_mimetype(filename: str) -> str:
    lower = filename.lower()
    if lower.endswith(".gcode"):
        return "text/gcode"
    if lower.endswith(".fc"):
        return "application/fcode"
    if lower.endswith(".fxfw"):
        return "binary/flux-firmware"
    return "binary"
