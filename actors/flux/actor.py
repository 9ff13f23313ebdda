"""``FluxActor``: one FLUX Delta on the bus, with every ``FluxRobot`` method as a command.

Options (the ``[actor.options]`` table, read into ``FluxOptions``)::

    [actor.options]
    host = "192.168.1.30"          # the printer (required); "host:port" also sets the robot port
    key = "~/.linebus/flux-client-key.pem"   # our RSA client key; created on first use
    password = "..."               # optional: authorise over the management port and trust our
                                   # key when the robot port refuses it (fluxclient's UpnpTask)
    port = 23811                   # robot port
    manage_port = 1901             # management (TLS) port; or manage = "host:port"
    poll_interval_s = 0.5          # job status polling while a job runs
    camera_port = 23812            # the camera (protocol 3, JPEG frames)
    # any other FluxConfig field: connect_timeout_s, reply_timeout_s, mode_timeout_s,
    # firmware_timeout_s, backoff_initial_s, backoff_max_s, chunk_bytes, progress_interval_s
"""

from __future__ import annotations

import asyncio
import binascii
import dataclasses
import time
from dataclasses import field
from typing import Annotated, Any

from actors.flux.config import FluxConfig
from actors.flux.driver import FluxDriver
from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import DISCOVERY_PORT, STATUS_LABELS
from actors.fluxfamily.keys import DEFAULT_KEY, load_key
from actors.fluxfamily.manager import FluxManager
from bus.actor import Actor, CommandContext, command
from bus.backoff import Backoff
from bus.errors import (
    Busy,
    ConfigError,
    DeviceError,
    DeviceUnavailable,
    InvalidArguments,
)
from bus.options import FLATTEN, NON_BLANK, Example, Port, Seconds, Secret, from_table, options

__all__ = [
    "ACTOR",
    "MAX_CAMERA_FPS",
    "MAX_RAW_WAIT_S",
    "START_WAIT_S",
    "FluxActor",
    "FluxOptions",
    "status_label",
]

#: How long ``on_start`` waits for the first connection attempt before registering anyway.
START_WAIT_S = 5.0
#: The fastest camera stream a caller may ask for (frames per second published on the bus).
MAX_CAMERA_FPS = 10.0
#: The longest a ``raw_recv`` may wait (a command holds the actor's queue while it waits).
MAX_RAW_WAIT_S = 30.0
#: st_id values after which a job is over (or none runs): the watcher stops there.
_AT_REST = {0, 64, 128}


def status_label(st_id: int) -> str:
    """fluxclient's label of a status id (``RUNNING``, ``COMPLETED``, ``UNKNOWN`` ...)."""
    return STATUS_LABELS.get(st_id, "UNKNOWN")


@options
class FluxOptions:
    """The ``[actor.options]`` of a FLUX actor (see the module docstring for an example).

    Args:
        host: The printer; ``host:port`` also sets the robot port.
        key: Our RSA client key (PEM); created on first use.
        password: Authorise over the management port and trust our key when the robot port
            refuses it (fluxclient's UpnpTask), on the first connection and on every reconnect.
        manage: ``host:port`` of the management (TLS) port; only its port is used.
        manage_port: The management port (when ``manage`` is not given).
        poll_interval_s: Job status polling while a job runs.
        driver: Every ``FluxConfig`` field, at the top level of the table.
    """

    host: Annotated[str, NON_BLANK, Example('host = "192.168.1.30"')]
    key: str = DEFAULT_KEY
    password: Secret | None = None
    manage: str | None = None
    manage_port: Port = DISCOVERY_PORT
    poll_interval_s: Seconds = 0.5
    driver: Annotated[FluxConfig, FLATTEN] = field(default_factory=FluxConfig)


def _port(text: str, option: str, where: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{where}: {option} must be host:port with a port number")
    return int(text)


def _status_key(status: dict[str, Any]) -> tuple[int, float, tuple[str, ...]]:
    """What makes a status worth publishing again: its id, progress (to 0.1 %) and errors."""
    return status["st_id"], round(status["prog"], 3), tuple(status["error"])


def _images(pairs: list[tuple[str, bytes]]) -> list[list[Any]]:
    return [[mime, data] for mime, data in pairs]


class FluxActor(Actor):
    """One FLUX Delta printer/scanner; every ``FluxRobot`` method is a command of the same name.

    Where fluxclient reads or writes a local file or stream, the command takes or returns bytes
    (the ``clients.flux`` facade does the file side). Uploads, downloads and firmware updates
    report ``{"done", "total"}`` progress and can be cancelled (the link is renewed). The maintain
    and scan sub-tasks are ``maintain`` / ``scan`` then ``maintain_<task>`` / ``scan_<task>``
    (fluxclient's ``MaintainTasks`` / ``ScanTasks`` method names), ended by ``maintain_quit`` /
    ``scan_quit``.

    Errors come back typed: ``device_fault`` with the device's first symbol in ``device_code`` and
    all of them in ``details["symbols"]`` (``NOT_EXIST``, ``FILE_BROKEN`` ...), ``busy``
    (``RESOURCE_BUSY``, or this actor's own maintain/scan mode), ``invalid_arguments``
    (``BAD_PARAMS``), ``device_timeout``, ``device_unavailable`` while the link is down.

    Events: ``<service>.status`` ``{"st_id", "st_label", "label", "prog", "error", ...}`` on each
    change of the job status, polled every ``poll_interval_s`` from ``start_play`` (or a job found
    running at connect) until it completes, aborts or the device goes idle. ``label`` is
    fluxclient's meaning of ``st_id`` (``RUNNING``, ``COMPLETED`` ...). ``<service>.camera``
    ``{"seq", "time", "data"}`` (JPEG bytes) between ``camera_start`` and ``camera_stop``, at most
    ``max_fps`` a second (frames the camera sends faster are skipped).

    The camera (TCP 23812, its own connection) works beside the robot link: ``camera_frame``,
    ``camera_start`` and ``camera_stop`` run concurrently with other commands. ``raw`` turns the
    robot link into a byte pipe (``raw_send`` / ``raw_recv`` / ``raw_quit``); ``icontrol`` holds
    the device for fluxclient's msgpack SDK, which linebus does not speak (``icontrol_quit``).

    The printer may be unreachable at start: the actor still registers, commands fail with
    ``device_unavailable``, and it keeps connecting in the background.
    """

    kind = "flux"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        where = f"flux {name}"
        opts = from_table(FluxOptions, self.options, where, noun="option")
        self.host = opts.host.strip()
        self.config = opts.driver
        if ":" in self.host:  # "host:port" sets the robot port
            self.host, _, port_text = self.host.rpartition(":")
            self.config = dataclasses.replace(self.config, port=_port(port_text, "host", where))
        self.password = opts.password
        self.key_path = opts.key or DEFAULT_KEY
        self.manage_port = opts.manage_port
        if opts.manage is not None:
            self.manage_port = _port(opts.manage.rpartition(":")[2], "manage", where)
        self.poll_interval_s = opts.poll_interval_s
        self.driver: FluxDriver | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._last_status: dict[str, Any] | None = None
        self._uuid = ""  # the printer's, once known (advertised for the broker's lookup)
        self._camera: asyncio.Task[None] | None = None
        self._camera_fps = 0.0
        self._camera_counts = {"published": 0, "skipped": 0}

    # ------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        """Load the key and connect; if the printer is not there yet, keep trying in the background."""
        try:
            key = await asyncio.to_thread(load_key, self.key_path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"flux {self.name}: client key {self.key_path}: {exc}") from exc
        self.key = key
        self.driver = FluxDriver(self.host, key, self.config)
        self._ready = asyncio.Event()
        self._spawn(self._open_forever(), "open")
        # Give the first attempt a moment, so callers rarely meet a device that is about to be
        # connected; an unreachable printer does not hold up registration for longer than this.
        try:
            async with asyncio.timeout(START_WAIT_S):
                await self._ready.wait()
        except TimeoutError:
            pass

    async def on_stop(self) -> None:
        """Stop the background tasks and close the link."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.driver is not None:
            await self.driver.close()

    def describe_extra(self) -> dict[str, Any]:
        """The printer's address, whether it is connected, and whether its camera streams."""
        connected = self.driver is not None and self.driver.connected
        streaming = self._camera is not None and not self._camera.done()
        return {
            "device": {
                "host": self.host,
                "port": self.config.port,
                "connected": connected,
                "camera_port": self.config.camera_port,
                "camera_streaming": streaming,
            }
        }

    def device_addresses(self) -> list[str]:
        """The printer's robot and camera addresses ``host:port`` (fluxclient's
        ``FluxRobot((ip, 23811), key)`` and ``FluxCamera((ip, 23812), key)``), and its uuid
        once the first connection told it (``discover_device(uuid)`` finds this actor)."""
        addresses = [f"{self.host}:{self.config.port}", f"{self.host}:{self.config.camera_port}"]
        return [*addresses, self._uuid] if self._uuid else addresses

    async def _learn_uuid(self) -> None:
        """Ask the printer its uuid (``deviceinfo``) and advertise it; a printer that does not
        say is advertised by address only."""
        try:
            uuid = (await self.d.deviceinfo()).get("uuid", "")
        except DeviceError as exc:
            self.log.info("flux_uuid_unknown", error=str(exc))
            return
        if uuid and uuid != self._uuid:
            self._uuid = uuid
            self.devices_changed()  # no-op before registration: READY will carry it

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"flux {self.name} {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _open_forever(self) -> None:
        assert self.driver is not None
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        while True:
            try:
                await self._open()
            except DeviceError as exc:
                self._ready.set()  # the first attempt is over: no reason to hold up registration
                if not backoff.failures:
                    self.log.warning(
                        "flux_unreachable", error=str(exc), hint="retrying in the background"
                    )
                await asyncio.sleep(backoff.next_delay())
                continue
            self.log.info("flux_ready", host=self.host)
            await self._learn_uuid()
            self._ready.set()
            self._watch()  # a job may already be running (actor restarted mid-print)
            return

    async def _open(self) -> None:
        assert self.driver is not None
        if self.password is not None:
            # On the first connection and on every reconnect: a printer that restarted without
            # the key it trusted (or was reset) is authorised again, not left refusing us.
            self.driver.on_untrusted = self._authorize
        await self.driver.open()

    async def _authorize(self) -> None:
        """Have the printer trust our key: authorise with the password over its management port."""
        assert self.password is not None
        self.log.info("flux_authorizing", host=self.host, port=self.manage_port)
        async with FluxManager(self.host, self.key, port=self.manage_port) as manager:
            await manager.authorize(self.password, label=f"linebus {self.name}")

    def _require_driver(self) -> FluxDriver:
        if self.driver is None:
            raise DeviceUnavailable(f"{self.host}: not started")
        return self.driver

    @property
    def d(self) -> FluxDriver:
        """The driver (``device_unavailable`` before ``on_start``)."""
        return self._require_driver()

    # ------------------------------------------------------------ job status

    def _watch(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = self._spawn(self._watch_job(), "status")

    async def _watch_job(self) -> None:
        quiet_polls = 0
        while True:
            try:
                report = await self.d.report_play()
            except Busy:
                return  # held by our own maintain/scan mode: no job
            except DeviceError as exc:
                self.log.info("flux_status_poll_failed", error=str(exc))
                await asyncio.sleep(self.poll_interval_s)
                continue
            self._publish_status(report)
            st_id = int(report.get("st_id", 0))
            if st_id in _AT_REST:
                quiet_polls += 1
                if quiet_polls >= 2 or st_id != 0:
                    return
            await asyncio.sleep(self.poll_interval_s)

    def _publish_status(self, report: dict[str, Any]) -> None:
        st_id = int(report.get("st_id", 0))
        error = report.get("error") or []
        status: dict[str, Any] = {
            "st_id": st_id,
            "st_label": str(report.get("st_label", "")),
            "label": status_label(st_id),
            "prog": float(report.get("prog", 0.0) or 0.0),
            "error": [str(e) for e in error] if isinstance(error, list) else [str(error)],
        }
        for name in ("session", "time_total", "time_running", "module"):
            if name in report:
                status[name] = report[name]
        last = self._last_status
        if last is not None and _status_key(last) == _status_key(status):
            return
        self._last_status = status
        self.publish("status", status)

    # ------------------------------------------------------------ files

    @command
    async def list_files(self, path: str) -> list[list[Any]]:
        """List folders, ``.fc`` and ``.gcode`` files under ``path`` (``/SD/...`` or ``/USB/...``).

        Returns ``[[is_dir, name], ...]``.
        """
        return [[is_dir, name] for is_dir, name in await self.d.list_files(path)]

    @command
    async def file_info(self, path: str) -> dict[str, Any]:
        """FCode metadata (plus ``size``) and preview images of the file at ``path``.

        Returns ``{"metadata": {...}, "images": [[mimetype, bytes], ...]}``.
        """
        metadata, images = await self.d.file_info(path)
        return {"metadata": metadata, "images": _images(images)}

    @command
    async def file_md5(self, path: str) -> str:
        """MD5 hex digest of a file on the device."""
        return await self.d.file_md5(path)

    @command(privileged=True)
    async def mkdir(self, path: str) -> None:
        """Create a folder (SD only)."""
        await self.d.mkdir(path)

    @command(privileged=True)
    async def rmdir(self, path: str) -> None:
        """Remove a folder and everything in it (SD only)."""
        await self.d.rmdir(path)

    @command(privileged=True)
    async def cpfile(self, source_path: str, dist_path: str) -> None:
        """Copy a file from SD or USB to SD."""
        await self.d.cpfile(source_path, dist_path)

    @command(privileged=True)
    async def rmfile(self, path: str) -> None:
        """Delete a file (SD only)."""
        await self.d.rmfile(path)

    @command
    async def download_file(self, path: str, ctx: CommandContext) -> dict[str, Any]:
        """Fetch a file: ``{"mimetype", "data"}``. Progress ``{"done", "total"}`` in bytes; cancellable."""
        download = await self.d.download_file(path, on_progress=ctx.byte_progress())
        return {"mimetype": download.mimetype, "data": download.data}

    @command(privileged=True)
    async def upload_file(
        self, data: bytes, upload_to: str, ctx: CommandContext, mimetype: str | None = None
    ) -> None:
        """Upload ``data`` to ``upload_to`` (``/SD/dir/x.fc``), or to ``#``: the job to run next, not stored.

        The mimetype is guessed from ``upload_to`` unless given (``#`` means FCode). Progress
        ``{"done", "total"}`` in bytes; cancelling stops the transfer and renews the link.
        """
        await self.d.upload_file(
            data, upload_to, mimetype=mimetype, on_progress=ctx.byte_progress()
        )

    # ------------------------------------------------------------ job

    @command(privileged=True)
    async def select_file(self, path: str) -> None:
        """Select a file on the device as the job."""
        await self.d.select_file(path)

    @command(privileged=True)
    async def start_play(self) -> None:
        """Start the selected (or ``#``-uploaded) job; ``<service>.status`` events follow it."""
        await self.d.start_play()
        self._last_status = None
        self._watch()

    @command(privileged=True)
    async def pause_play(self) -> None:
        """Pause the job."""
        await self.d.pause_play()
        self._watch()

    @command(privileged=True)
    async def resume_play(self) -> None:
        """Resume the paused job."""
        await self.d.resume_play()
        self._watch()

    @command(privileged=True)
    async def abort_play(self) -> None:
        """Abort the job."""
        await self.d.abort_play()
        self._watch()

    @command
    async def report_play(self) -> dict[str, Any]:
        """The job status as the device reports it, plus ``label``.

        Keys: ``st_id``, ``st_label``, ``prog``, ``error`` ... and fluxclient's ``label``.
        """
        report = await self.d.report_play()
        return {**report, "label": status_label(int(report.get("st_id", 0)))}

    @command
    async def play_info(self) -> dict[str, Any]:
        """Job metadata and preview images: ``{"info": {...}, "images": [[mimetype, bytes], ...]}``."""
        info, images = await self.d.play_info()
        return {"info": info, "images": _images(images)}

    @command(privileged=True)
    async def quit_play(self) -> None:
        """Leave a completed or aborted job (the device goes back to idle)."""
        await self.d.quit_play()
        self._watch()

    @command(privileged=True)
    async def restart_play(self) -> None:
        """Restart the job (fluxclient has it; the device does not route it: ``UNKNOWN_COMMAND``)."""
        await self.d._command("player restart")

    @command(privileged=True)
    async def set_toolhead_operating_in_play(self) -> None:
        """Put the toolhead in operating mode during the job."""
        await self.d._command("player set_toolhead_operating")

    @command(privileged=True)
    async def set_toolhead_standby_in_play(self) -> None:
        """Put the toolhead in standby during the job."""
        await self.d._command("player set_toolhead_standby")

    @command(privileged=True)
    async def set_toolhead_heater_in_play(self, temp: float, index: int = 0) -> None:
        """Set the toolhead temperature ``temp`` (°C) during the job (only index 0 exists)."""
        await self.d._command(f"player set_toolhead_header {index} {temp:.1f}")

    @command(privileged=True)
    async def load_filament_in_play(self, index: int = 0) -> None:
        """Load filament during a paused job."""
        await self.d._command(f"player load_filament {index}")

    @command(privileged=True)
    async def unload_filament_in_play(self, index: int = 0) -> None:
        """Unload filament during a paused job."""
        await self.d._command(f"player unload_filament {index}")

    @command(privileged=True)
    async def press_button_in_play(self) -> None:
        """Press the toolhead button during the job."""
        await self.d._command("player press_button")

    # ------------------------------------------------------------ device

    @command
    async def deviceinfo(self) -> dict[str, str]:
        """Version, model, uuid, serial, nickname, addresses ... as strings."""
        return await self.d.deviceinfo()

    @command
    async def config_get(self, key: str) -> str | None:
        """One device config value (``robot.config[key]``), or None when unset."""
        return await self.d.config_get(key)

    @command(privileged=True)
    async def config_set(self, key: str, value: str) -> None:
        """Set one device config value (``robot.config[key] = value``)."""
        await self.d.config_set(key, value)

    @command(privileged=True)
    async def config_del(self, key: str) -> None:
        """Unset one device config value (``del robot.config[key]``)."""
        await self.d.config_del(key)

    @command(privileged=True)
    async def kick(self) -> None:
        """Disconnect the session holding the device in maintain/scan (not a print job)."""
        await self.d.kick()

    @command(privileged=True)
    async def update_firmware(self, data: bytes, ctx: CommandContext) -> None:
        """Send a firmware image; progress ``{"done", "total"}``.

        The device then restarts (the link is renewed).
        """
        await self.d.update_firmware(data, on_progress=ctx.byte_progress())

    @command
    async def fetch_log(self, path: str, ctx: CommandContext) -> dict[str, Any]:
        """A device log (``path`` relative to its log folder): ``{"mimetype", "data"}``.

        Progress ``{"done", "total"}`` in bytes.
        """
        log = await self.d.fetch_log(path, on_progress=ctx.byte_progress())
        return {"mimetype": log.mimetype, "data": log.data}

    @command(privileged=True)
    async def get_cloud_validation_code(self) -> dict[str, str]:
        """What binds the device to a cloud account: ``{"token", "access_id", "signature"}``.

        As fluxclient's: the device's token, our key's access id (hex) and our signature of the
        device's hash (base64 with its trailing newline, ``binascii.b2a_base64``). Privileged:
        the signature vouches for this actor's key.
        """
        token, code = await self.d.cloud_validation_code()
        signature = crypto.sign(self.key, code)
        return {
            "token": token,
            "access_id": crypto.access_id(self.key).hex(),
            "signature": binascii.b2a_base64(signature).decode("ascii"),
        }

    @command
    async def position(self) -> str:
        """The device's current task (``CommandTask``, ``MaintainTask``, ``ScanTask`` ...)."""
        return await self.d.position()

    # ------------------------------------------------------------ raw and icontrol

    @command(privileged=True)
    async def raw(self) -> None:
        """Enter raw mode (``robot.raw()``): bytes go to the mainboard and toolhead as they are.

        Other commands get ``busy`` until ``raw_quit``.
        """
        await self.d.raw()

    @command(privileged=True)
    async def raw_send(self, data: bytes) -> None:
        """Send bytes down the raw pipe (``+...`` mainboard, ``-...`` toolhead; G-code lines)."""
        await self.d.raw_send(data)

    @command
    async def raw_recv(self, timeout_s: float = 0.5) -> bytes:
        """What the device sent down the raw pipe within ``timeout_s`` (b"" when nothing came)."""
        if not 0 < timeout_s <= MAX_RAW_WAIT_S:
            raise InvalidArguments(
                f"timeout_s must be in (0, {MAX_RAW_WAIT_S}], got {timeout_s}",
                details={"argument": "timeout_s"},
            )
        return await self.d.raw_recv(timeout_s)

    @command(privileged=True)
    async def raw_quit(self) -> None:
        """Leave raw mode."""
        await self.d.raw_quit()

    @command(privileged=True)
    async def icontrol(self) -> None:
        """Enter icontrol (``robot.icontrol()``): the device is held for fluxclient's SDK protocol.

        linebus does not speak that protocol: the mode can only be left, with ``icontrol_quit``.
        """
        await self.d.icontrol()

    @command(privileged=True)
    async def icontrol_quit(self) -> None:
        """Leave icontrol (the link is renewed; the device ends the task)."""
        await self.d.icontrol_quit()

    # ------------------------------------------------------------ camera (TCP 23812)

    @command(concurrent=True)
    async def camera_frame(self) -> bytes:
        """One camera frame: JPEG bytes (its own camera connection, beside any stream)."""
        return await self.d.camera_frame()

    @command(concurrent=True)
    async def camera_start(self, max_fps: float = 2.0) -> dict[str, Any]:
        """Publish camera frames as ``<service>.camera`` events, at most ``max_fps`` a second.

        Already streaming: the new rate applies. The stream reconnects (with back-off) if the
        camera link drops, until ``camera_stop``. Returns ``{"max_fps"}``.
        """
        if not 0 < max_fps <= MAX_CAMERA_FPS:
            raise InvalidArguments(
                f"max_fps must be in (0, {MAX_CAMERA_FPS}], got {max_fps}",
                details={"argument": "max_fps"},
            )
        self._require_driver()
        self._camera_fps = max_fps
        if self._camera is None or self._camera.done():
            self._camera_counts = {"published": 0, "skipped": 0}
            self._camera = self._spawn(self._stream_camera(), "camera")
        return {"max_fps": max_fps}

    @command(concurrent=True)
    async def camera_stop(self) -> dict[str, int]:
        """Stop the camera events; returns ``{"published", "skipped"}`` frame counts."""
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.cancel()
            await asyncio.gather(camera, return_exceptions=True)
        return dict(self._camera_counts)

    async def _stream_camera(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        last = -float("inf")
        while True:
            try:
                async for frame in self.d.camera_frames():
                    backoff.reset()
                    now = loop.time()
                    if now - last < 1 / self._camera_fps:
                        self._camera_counts["skipped"] += 1
                        continue
                    last = now
                    self._camera_counts["published"] += 1
                    self.publish(
                        "camera",
                        {
                            "seq": self._camera_counts["published"],
                            "time": time.time(),
                            "data": frame,
                        },
                    )
            except DeviceError as exc:
                delay = backoff.next_delay()
                self.log.warning("flux_camera_stream_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    # ------------------------------------------------------------ maintain

    @command(privileged=True)
    async def maintain(self) -> None:
        """Enter maintain mode (``robot.maintain()``); other commands get ``busy`` until ``maintain_quit``."""
        await self.d.maintain()

    @command(privileged=True)
    async def maintain_home(self) -> None:
        """Home the head."""
        await self.d.maintain_home()

    @command(privileged=True)
    async def maintain_move(
        self,
        f: float | None = None,
        x: float | None = None,
        y: float | None = None,
        z: float | None = None,
        e: float | None = None,
    ) -> None:
        """Move the head: any of ``f`` (feed rate), ``x``, ``y``, ``z``, ``e``."""
        axes = {k: v for k, v in {"f": f, "x": x, "y": y, "z": z, "e": e}.items() if v is not None}
        await self.d.maintain_move(**axes)

    @command(privileged=True)
    async def maintain_calibrate(
        self, ctx: CommandContext, threshold: float | None = None, clean: bool = False
    ) -> list[float]:
        """Calibrate; returns the three values.

        Each ``CTRL POINT n`` line comes as progress ``{"message"}``.
        """
        return await self.d.maintain_calibrate(
            threshold, clean, on_message=lambda text: ctx.progress({"message": text})
        )

    @command(privileged=True)
    async def maintain_zprobe(self, ctx: CommandContext) -> float:
        """Probe z; returns the probed value (messages as progress ``{"message"}``)."""
        return await self.d.maintain_zprobe(
            None, on_message=lambda text: ctx.progress({"message": text})
        )

    @command(privileged=True)
    async def maintain_manual_level(self, height: float, ctx: CommandContext) -> float:
        """Level manually at ``height``; returns the probed value."""
        return await self.d.maintain_zprobe(
            height, on_message=lambda text: ctx.progress({"message": text})
        )

    @command
    async def maintain_head_info(self) -> dict[str, Any]:
        """The toolhead's profile (module, version ...)."""
        return await self.d.maintain_head_info()

    @command
    async def maintain_head_status(self) -> dict[str, Any]:
        """The toolhead's status."""
        return await self.d.maintain_head_status()

    @command(privileged=True)
    async def maintain_set_heater(self, index: int, temperature: float) -> None:
        """Set extruder ``index`` to ``temperature`` °C."""
        await self.d.maintain_set_heater(index, temperature)

    @command
    async def maintain_diagnosis_sensor(self) -> dict[str, str]:
        """Sensor readings."""
        return await self.d.maintain_diagnosis_sensor()

    @command
    async def maintain_diagnosis(self, option: str = "hal") -> str:
        """Run a diagnosis (only ``hal`` exists); the result text."""
        return await self.d.maintain_diagnosis(option)

    @command(privileged=True)
    async def maintain_load_filament(
        self, index: int, temperature: float, ctx: CommandContext
    ) -> None:
        """Load filament into extruder ``index`` at ``temperature``.

        ``CTRL`` lines come as progress ``{"message"}``.
        """
        await self.d.maintain_load_filament(
            index, temperature, on_message=lambda text: ctx.progress({"message": text})
        )

    @command(privileged=True)
    async def maintain_load_flexible_filament(
        self, index: int, temperature: float, ctx: CommandContext
    ) -> None:
        """Load flexible filament; ``CTRL`` lines as progress ``{"message"}``."""
        await self.d.maintain_load_filament(
            index,
            temperature,
            on_message=lambda text: ctx.progress({"message": text}),
            flexible=True,
        )

    @command(privileged=True)
    async def maintain_unload_filament(
        self, index: int, temperature: float, ctx: CommandContext
    ) -> None:
        """Unload filament; ``CTRL`` lines as progress ``{"message"}``."""
        await self.d.maintain_unload_filament(
            index, temperature, on_message=lambda text: ctx.progress({"message": text})
        )

    @command(privileged=True, concurrent=True)
    async def maintain_interrupt_load_filament(self) -> None:
        """Stop a running (un)load macro; runs beside it (the macro's command then ends)."""
        await self.d.maintain_interrupt_load_filament()

    @command(privileged=True)
    async def maintain_update_hbfw(self, data: bytes, ctx: CommandContext) -> None:
        """Flash toolhead firmware (at most 256 KiB).

        Progress ``{"done", "total"}`` while sending, then ``{"message"}`` lines.
        """
        await self.d.maintain_update_head(
            data,
            on_progress=ctx.byte_progress(),
            on_message=lambda text: ctx.progress({"message": text}),
        )

    @command(privileged=True)
    async def maintain_reset_hardware(self) -> None:
        """Reset the mainboard; the device also leaves maintain mode."""
        await self.d.maintain_reset_hardware()

    @command(privileged=True)
    async def maintain_quit(self) -> None:
        """Leave maintain mode."""
        await self.d.maintain_quit()

    # ------------------------------------------------------------ scan

    @command(privileged=True)
    async def scan(self) -> None:
        """Enter scan mode (``robot.scan()``); other commands get ``busy`` until ``scan_quit``."""
        await self.d.scan()

    @command(privileged=True)
    async def scan_step_length(self, length: float) -> None:
        """Set the turntable step."""
        await self.d.scan_step_length(length)

    @command(privileged=True)
    async def scan_forward(self) -> None:
        """Turn one step forward."""
        await self.d.scan_forward()

    @command(privileged=True)
    async def scan_backward(self) -> None:
        """Turn one step back."""
        await self.d.scan_backward()

    @command(privileged=True)
    async def scan_laser(self, left: bool, right: bool) -> None:
        """Switch the left and right lasers."""
        await self.d.scan_laser(left, right)

    @command
    async def scan_check_camera(self) -> str:
        """Camera check; the device's raw line."""
        return await self.d.scan_check()

    @command(privileged=True)
    async def scan_calibrate(self) -> str:
        """Calibrate the scanner; the raw ``ok ...`` answer."""
        return await self.d.scan_calibrate()

    @command
    async def scan_get_calibrate(self) -> list[int]:
        """The stored calibration (three ints)."""
        return await self.d.scan_get_calibrate()

    @command
    async def scan_oneshot(self, ctx: CommandContext) -> bytes:
        """Take one photo: JPEG bytes (progress ``{"done", "total"}``)."""
        return await self.d.scan_oneshot(on_progress=ctx.byte_progress())

    @command
    async def scan_scanimages(self) -> list[bytes]:
        """Take three photos (left laser, right laser, no laser): JPEG bytes each."""
        return await self.d.scan_images()

    @command(privileged=True)
    async def scan_quit(self) -> None:
        """Leave scan mode."""
        await self.d.scan_quit()


ACTOR = FluxActor
