"""A simulated FLUX Delta on its own loopback address: discovery, management and robot.

Run it as ``python -m actors.flux.simulator --address 127.0.0.2 [--name N] [--password P]``.
Once listening it prints one JSON line
``{"event": "ready", "robot": "127.0.0.2:23811", "manage": "127.0.0.2:1901", "udp": "127.0.0.2:1901",
"camera": "127.0.0.2:23812", ...}``
and serves until SIGTERM/SIGINT. In-process: ``async with FluxSimulator(address=...) as sim``.
Linux routes all of 127/8 to ``lo``, so several simulators share a host, one address each, all
on the real ports.

What is implemented follows reference/flux.md: the default profile (discovery v1, robot
protocol 2) or, with ``bare``, the ``bare=Y`` profile (discovery v2, robot protocol 3 over TLS);
management over TLS in both. **Assumptions**, where the reference is silent or the real
device cannot be copied:

1. Identity: the firmware's dev identity (§2.9): uuid = eight 0xFF bytes followed by
   SHA-512(master DER)[8:16], serial ``XXXXXXXXXX``, identify ``WAWASUREMONO``, which
   unmodified fluxclient accepts.
   The master key is 2048-bit unless given; the slave key is 1024-bit, new at each start.
2. Discovery: one UDP socket on ``(address, udp_port)`` sends the announcements (to the
   multicast group, or to the unicast/broadcast ``announce_to`` targets when multicast is not
   available) and answers pokes and touches. It announces every ``announce_interval_s`` and also
   at once when the status changes. ``slave_ts`` steps by 256 s on each metadata change, since it
   travels as float32 (128 s resolution at today's epoch). A ``bare`` device speaks discovery v2
   (§2.6) instead of v1 and, unlike fluxclient's pokes, answers a version-2 poke (the firmware
   drops other versions; that it answers v2 pokes is an assumption). The broadcast beacon
   (§2.7) goes to ``beacon_to`` (default: the announcement targets; the device's
   255.255.255.255 would leave the loopback) once at start, then every 2.5 s with config
   ``broadcast=A``, 27.5 s when unset or ``L``, never with ``N``.
3. Robot: protocol 2, or protocol 3 (TLS, §1.3) when started ``bare`` (``bare=True``,
   ``--bare``; its ``config get bare`` then says ``Y``). Like the device, the profile is chosen
   at start: ``config set bare`` is stored but switches nothing until a restart, which the
   simulator does not do. Protocol 3 refuses an untrusted key and, like the firmware, does not
   require the signature (whether it verified is logged). Macros (home, calibration,
   filament) answer at once. ``scan_check`` answers ``ok camera``; photos are real 64 x 48
   baseline JPEGs. ``update_fw`` accepts any non-empty image, answers ``ok`` and closes the
   session; the device does not actually restart. ``update_head`` takes up to 256 KiB and
   reports ``CTRL WRITE`` per 4 KiB between its two ``ok``. ``fetch_log`` serves a few fixed logs
   as ``text/plain`` (refusing absolute paths and ``..`` with ``BAD_PARAMS``, unknown ones with
   ``NOT_EXIST NOT_FILE``); ``cloud_validation_code`` answers a random token and the SHA-256 of
   token and uuid. ``task raw`` echoes each line back (the mainboard's stand-in) until ``quit``;
   ``task icontrol`` holds the device but ignores the msgpack SDK protocol, and ends with the
   connection. While a task holds the device, st_id is -1 (maintain), -2 (scan), -3 (icontrol)
   or -10 (raw): the reference lists those ids in that order without pairing them. Paths
   containing ``..`` are refused as ``NOT_EXIST SECURITY_ISSUE`` even when they stay inside the
   root.
3b. Camera (TCP ``camera_port``, 23812): protocol 3 in either profile (banner, TLS with the
   device certificate, the key handshake of ``actors.fluxfamily.tls``), then ``f`` / ``s+`` /
   ``s-`` with ``camera_fps`` frames per second of JPEG (``actors.flux.sim_camera``).
4. Job: a job walks 1 → 4 → 16 (progress) → 66 → 64 in ``job_duration_s``; transitional ids
   last one tick (duration / 20, between 10 and 100 ms). A job needs an FCode file
   (``FILE_BROKEN HEADER_ERROR`` otherwise).
5. Management: ``network`` answers ``ok`` (or ``er BAD_PARAMS method``) and records the options;
   ``scan_wifi`` returns a fixed list of two access points. Password changes with ACL reset
   clear the trust list.
6. Faults: ``drop_upload_after`` closes the robot connection once that many upload bytes
   arrived (once); ``error_label`` is announced in the status block and job reports; ``silent``
   stops all UDP traffic (the device seems gone; TCP still answers); ``mute`` leaves robot
   commands unanswered (a hung device).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux.config import CAMERA_PORT, ROBOT_PORT
from actors.flux.sim_camera import CameraServer
from actors.flux.sim_device import Faults, SimDevice
from actors.flux.sim_manage import ManageServer
from actors.flux.sim_robot import RobotServer
from actors.flux.sim_storage import SimStorage
from actors.flux.sim_udp import UdpAnnouncer
from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import DEFAULT_GROUP, DISCOVERY_PORT
from actors.fluxfamily.tls import server_context
from bus.options import secret_from_file

__all__ = ["Faults", "FluxSimulator", "main"]

log = structlog.get_logger()


def _endpoint(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host else (text, default_port)


class FluxSimulator:
    """One simulated FLUX device.

    Args:
        address: Loopback address of this device (``127.0.0.x``).
        name: Nickname.
        password: Management password ("" = none).
        robot_port / manage_port / udp_port / camera_port: Ports (0 = any free one; defaults are
            the real ones).
        camera_fps: Frames per second the camera port streams.
        group: Multicast group announcements go to (None: only ``announce_to``).
        announce_to: Extra announcement targets, ``"host:port"`` (unicast or broadcast).
        announce_interval_s: Announcement period.
        job_duration_s: How long a print job runs.
        sd_files / usb_files: Initial storage (``usb_files=None``: no stick).
        trusted_keys: Public keys trusted from the start.
        master_key / slave_key: Device keys (tests pass them to save generating).
        faults: Initial faults.
        serial / model / version: Identity strings.
        throttle_bps: Read at most this many bytes per second from each robot connection
            (0 = unthrottled), so an upload lasts long enough to watch and cancel.
        bare: The ``bare=Y`` profile: robot protocol 3 (TLS) and discovery v2.
        broadcast: The ``broadcast`` config (beacon period): "A", "L" or "N"; "" = unset.
        beacon_to: Beacon targets ``"host:port"``; default: the announcement targets.
    """

    def __init__(
        self,
        *,
        address: str = "127.0.0.2",
        name: str = "flux-sim",
        password: str = "",
        robot_port: int = ROBOT_PORT,
        manage_port: int = DISCOVERY_PORT,
        udp_port: int = DISCOVERY_PORT,
        camera_port: int = CAMERA_PORT,
        camera_fps: float = 5.0,
        group: str | None = DEFAULT_GROUP,
        announce_to: Sequence[str] = (),
        announce_interval_s: float = 3.0,
        job_duration_s: float = 5.0,
        sd_files: dict[str, bytes] | None = None,
        usb_files: dict[str, bytes] | None = None,
        trusted_keys: Sequence[rsa.RSAPublicKey] = (),
        master_key: rsa.RSAPrivateKey | None = None,
        slave_key: rsa.RSAPrivateKey | None = None,
        faults: Faults | None = None,
        serial: str = "XXXXXXXXXX",
        model: str = "delta-1",
        version: str = "1.6.95",
        throttle_bps: int = 0,
        bare: bool = False,
        broadcast: str = "",
        beacon_to: Sequence[str] = (),
    ) -> None:
        self.throttle_bps = throttle_bps
        self.bare = bare
        self.address = address
        self.robot_port, self.manage_port, self.udp_port = robot_port, manage_port, udp_port
        self.camera_port = camera_port
        self.camera_fps = camera_fps
        targets = [(group, udp_port or DISCOVERY_PORT)] if group else []
        self._targets = targets + [_endpoint(target, DISCOVERY_PORT) for target in announce_to]
        self._interval = announce_interval_s
        self._beacon_targets = [_endpoint(target, DISCOVERY_PORT) for target in beacon_to] or list(
            self._targets
        )
        self.device = SimDevice(
            name=name,
            serial=serial,
            model=model,
            version=version,
            master_key=master_key or crypto.new_key(2048),
            slave_key=slave_key or crypto.new_key(1024),
            password=password,
            job_duration_s=job_duration_s,
            storage=SimStorage(sd_files, usb_files),
            faults=faults or Faults(),
        )
        for key in trusted_keys:
            self.device.add_trust(key, "preset")
        if bare:
            self.device.config["bare"] = "Y"
        if broadcast:
            self.device.set_config("broadcast", broadcast)
        self._tls = server_context(self.device.master_key, self.device.uuid, self.device.serial)
        self.robot = RobotServer(self.device, self._tls if bare else None)
        self.manage: ManageServer | None = None
        self.camera: CameraServer | None = None
        self.udp: UdpAnnouncer | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the robot, management and UDP sockets."""
        robot = await asyncio.start_server(
            self._tracked(self._throttled(self.robot.handle)), self.address, self.robot_port
        )
        self._servers.append(robot)
        self.robot_port = robot.sockets[0].getsockname()[1]
        self.manage = ManageServer(self.device, self._tls)
        manage = await asyncio.start_server(
            self._tracked(self.manage.handle), self.address, self.manage_port
        )
        self._servers.append(manage)
        self.manage_port = manage.sockets[0].getsockname()[1]
        self.camera = CameraServer(self.device, self._tls, self.camera_fps)
        camera = await asyncio.start_server(
            self._tracked(self.camera.handle), self.address, self.camera_port
        )
        self._servers.append(camera)
        self.camera_port = camera.sockets[0].getsockname()[1]
        self.udp = UdpAnnouncer(
            self.device,
            self.address,
            self.udp_port,
            self._targets,
            self._interval,
            version=2 if self.bare else 1,
            beacon_targets=self._beacon_targets,
        )
        await self.udp.start()
        self.udp_port = self.udp.port
        log.info(
            "flux_sim_started",
            address=self.address,
            uuid=self.device.uuid.hex,
            name=self.device.name,
        )

    def _tracked(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        # Connection handlers must end before the loop does, or asyncio reports them cancelled.
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections[task] = writer
            try:
                await handler(reader, writer)
            finally:
                self._connections.pop(task, None)
                writer.close()

        return run

    def _throttled(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        rate = self.throttle_bps
        if rate <= 0:
            return handler

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await handler(_SlowReader(reader, rate), writer)  # type: ignore[arg-type]

        return run

    async def stop(self) -> None:
        """Close every socket and stop the job."""
        if self.udp is not None:
            await self.udp.stop()
        for server in self._servers:
            server.close()
        self.robot.close_all()
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            _done, pending = await asyncio.wait(list(self._connections), timeout=2)
            for task in pending:
                task.cancel()
        self._servers.clear()
        self.device.stop()
        log.info("flux_sim_stopped", address=self.address)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ test API

    @property
    def uuid(self) -> Any:
        """The device uuid."""
        return self.device.uuid

    @property
    def ready_info(self) -> dict[str, Any]:
        """What the ready line says."""
        return {
            "event": "ready",
            "robot": f"{self.address}:{self.robot_port}",
            "manage": f"{self.address}:{self.manage_port}",
            "udp": f"{self.address}:{self.udp_port}",
            "camera": f"{self.address}:{self.camera_port}",
            "uuid": self.device.uuid.hex,
            "name": self.device.name,
            "bare": self.bare,
        }

    def trust(self, key: rsa.RSAPublicKey | rsa.RSAPrivateKey, label: str = "test") -> str:
        """Trust a client key (as ``add_trust`` would); returns its access id."""
        public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
        return self.device.add_trust(public, label)

    def set_error_label(self, label: str) -> None:
        """Announce an error label (empty to clear)."""
        self.device.faults.error_label = label
        self.device.notify()

    def go_silent(self, silent: bool = True) -> None:
        """Stop (or resume) all UDP traffic."""
        self.device.faults.silent = silent
        self.device.notify()

    def drop_upload_after(self, size: int | None) -> None:
        """Close the robot link once ``size`` bytes of the next upload arrived."""
        self.device.faults.drop_upload_after = size

    def mute(self, mute: bool = True) -> None:
        """Stop (or resume) answering robot commands."""
        self.device.faults.mute = mute

    def drop_connections(self) -> None:
        """Close every robot connection now (link loss)."""
        self.robot.close_all()

    @property
    def status(self) -> tuple[int, float]:
        """``(st_id, prog)`` as announced."""
        status = self.device.status()
        return status.st_id, status.st_prog


class _SlowReader:
    """A stream reader that hands out at most ``rate`` bytes per second (``read`` only)."""

    def __init__(self, reader: asyncio.StreamReader, rate: int) -> None:
        self._reader = reader
        self._rate = rate

    async def read(self, n: int = -1) -> bytes:
        chunk = max(1, self._rate // 20)
        data = await self._reader.read(chunk if n < 0 else min(n, chunk))
        if data:
            await asyncio.sleep(len(data) / self._rate)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m actors.flux.simulator", description="A simulated FLUX Delta."
    )
    parser.add_argument("--address", default="127.0.0.2", help="loopback address of this device")
    parser.add_argument("--name", default="flux-sim")
    parser.add_argument("--password", default="")
    parser.add_argument(
        "--password-file",
        help="read the management password from this file instead (created 0600 with a random"
        " password if missing): keeps it out of the command line",
    )
    parser.add_argument("--robot-port", type=int, default=ROBOT_PORT)
    parser.add_argument("--manage-port", type=int, default=DISCOVERY_PORT)
    parser.add_argument("--udp-port", type=int, default=DISCOVERY_PORT)
    parser.add_argument("--camera-port", type=int, default=CAMERA_PORT)
    parser.add_argument(
        "--camera-fps", type=float, default=5.0, help="frames per second the camera streams"
    )
    parser.add_argument(
        "--robot-listen",
        type=_listen,
        help="host:port of the robot port (sets --address and --robot-port)",
    )
    parser.add_argument(
        "--manage-listen",
        type=_listen,
        help="host:port of the management port (port only; the host must be --address)",
    )
    parser.add_argument(
        "--udp-listen",
        type=_listen,
        help="host:port of the UDP socket (port only; the host must be --address)",
    )
    parser.add_argument(
        "--throttle",
        type=int,
        default=0,
        help="read at most N bytes/s per robot connection (slow uploads)",
    )
    parser.add_argument("--group", default=DEFAULT_GROUP, help="multicast group ('' for none)")
    parser.add_argument(
        "--announce-to",
        action="append",
        default=[],
        help="extra announcement target host:port (repeatable)",
    )
    parser.add_argument(
        "--announce-interval", type=float, default=3.0, help="seconds between announcements"
    )
    parser.add_argument("--job-duration", type=float, default=5.0, help="seconds a print job runs")
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        help="PEM file of a client public key to trust (repeatable)",
    )
    parser.add_argument("--usb", action="store_true", help="plug in an (empty) USB stick")
    parser.add_argument(
        "--drop-upload-after",
        type=int,
        default=None,
        help="fault: drop the link after N upload bytes",
    )
    parser.add_argument("--error-label", default="", help="fault: announce this error label")
    parser.add_argument("--silent", action="store_true", help="fault: send no UDP at all")
    parser.add_argument("--mute", action="store_true", help="fault: never answer robot commands")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="the bare=Y profile: robot protocol 3 (TLS) and discovery v2",
    )
    parser.add_argument(
        "--broadcast",
        choices=["A", "L", "N"],
        default=None,
        help="beacon period: A ~3 s, L ~30 s (the default), N off",
    )
    parser.add_argument(
        "--beacon-to",
        action="append",
        default=[],
        help="broadcast beacon target host:port (repeatable; default: the announcement targets)",
    )
    parser.add_argument("--json-logs", action="store_true")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    keys = [crypto.load_public_key(Path(path).read_bytes()) for path in args.trust]
    if args.robot_listen:
        args.address, args.robot_port = args.robot_listen
    if args.manage_listen:
        args.manage_port = args.manage_listen[1]
    if args.udp_listen:
        args.udp_port = args.udp_listen[1]
    password = args.password
    if args.password_file:
        password = secret_from_file(args.password_file, create=True)
    simulator = FluxSimulator(
        address=args.address,
        name=args.name,
        password=password,
        robot_port=args.robot_port,
        manage_port=args.manage_port,
        udp_port=args.udp_port,
        camera_port=args.camera_port,
        camera_fps=args.camera_fps,
        group=args.group or None,
        announce_to=args.announce_to,
        announce_interval_s=args.announce_interval,
        job_duration_s=args.job_duration,
        usb_files={} if args.usb else None,
        trusted_keys=keys,
        throttle_bps=args.throttle,
        bare=args.bare,
        broadcast=args.broadcast or "",
        beacon_to=args.beacon_to,
        faults=Faults(
            drop_upload_after=args.drop_upload_after,
            error_label=args.error_label,
            silent=args.silent,
            mute=args.mute,
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with simulator:
        sys.stdout.write(json.dumps(simulator.ready_info) + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m actors.flux.simulator``."""
    args = _parser().parse_args(argv)
    from bus.logs import configure_logging

    configure_logging(json=True if args.json_logs else None)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
