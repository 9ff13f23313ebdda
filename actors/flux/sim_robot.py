"""The simulator's robot server on TCP 23811: protocol-2 or 3 handshake, then the command task.

One ``RobotSession`` per connection. The device lock of maintain/scan is held by a session;
``kick`` sends the holder ``error KICKED`` and closes it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import shlex
import ssl

import structlog

from actors.flux import commands
from actors.flux.fcode import FcodeError, read_fcode
from actors.flux.sim_device import CONFIG_CHOICES, SimDevice
from actors.flux.sim_handshake import accept
from actors.flux.sim_storage import SimError
from actors.flux.sim_tasks import maintain_command, scan_command
from actors.fluxfamily.crypto import AesStream
from actors.fluxfamily.framing import (
    AnswerEvent,
    BinaryChunk,
    BinaryEnd,
    BinaryStart,
    CommandReader,
    ProtocolViolation,
    encode_answer,
)
from actors.fluxfamily.tls import TlsStream

__all__ = ["RobotServer"]

log = structlog.get_logger()

MAX_UPLOAD = 1 << 30
MAX_FIRMWARE = 100 << 20
MAX_HEAD_FIRMWARE = 256 << 10
_TASKS = {
    "command": "CommandTask",
    "maintain": "MaintainTask",
    "scan": "ScanTask",
    "raw": "RawTask",
    "icontrol": "IControlTask",
}
#: What the device sends when raw mode ends, before its framed ``ok`` (flux.md §1.6).
RAW_END = b"\x00" * 64 + b"\x01"
_EXTENSION_OF = {"text/gcode": ".gcode", "application/fcode": ".fc"}


class RobotServer:
    """Accepts robot connections for one ``SimDevice``.

    Args:
        device: The device.
        tls: The device's TLS context: set for a ``bare=Y`` device, which speaks protocol 3.
    """

    def __init__(self, device: SimDevice, tls: ssl.SSLContext | None = None) -> None:
        self.device = device
        self.tls = tls
        self.sessions: set[RobotSession] = set()
        self.holder: RobotSession | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it closes."""
        session = RobotSession(self, reader, writer)
        self.sessions.add(session)
        try:
            await session.run()
        except (OSError, ProtocolViolation) as exc:
            log.info("flux_sim_robot_closed", reason=str(exc))
        finally:
            self.sessions.discard(session)
            if self.holder is session:
                self.release()
            session.close()

    def release(self) -> None:
        """Free the device lock (quit, kick, or the holder's connection ended)."""
        self.holder = None
        self.device.holder = None
        self.device.notify()

    def close_all(self) -> None:
        """Drop every connection (shutdown, or the injected link loss)."""
        for session in list(self.sessions):
            session.abort()


class RobotSession:
    """One robot connection."""

    def __init__(
        self, server: RobotServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.device = server.device
        self.reader = reader
        self.writer = writer
        self.peer = str(writer.get_extra_info("peername", ("?", 0))[0])
        self.mode = "command"
        self.commands = CommandReader()
        self.stream: AesStream | TlsStream | None = None
        self._upload: tuple[str, tuple[str, str] | None, int, bytearray] | None = None
        self._raw = bytearray()
        self.closed = False

    def is_open(self) -> bool:
        """True until ``close`` or ``abort`` (a method: a command that closes is seen at once)."""
        return not self.closed

    def close(self) -> None:
        """Close the connection, flushing what was written (a refusal must reach the client)."""
        self.closed = True
        with contextlib.suppress(Exception):  # the transport may already be gone
            self.writer.close()

    def abort(self) -> None:
        """Cut the connection at once, as a lost link would."""
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    async def run(self) -> None:
        """Handshake (protocol 3 when the server has a TLS context), then answer commands."""
        accepted = await accept(self.reader, self.writer, self.device, self.server.tls)
        if accepted is None:
            return
        self.stream = accepted.stream
        data = accepted.leftover
        while self.is_open():
            if not data:
                data = await self.reader.read(65536)
                if not data:
                    return
            self.receive(self.stream.decrypt(data))
            if not self.is_open():
                return
            data = b""
            await self.writer.drain()

    def receive(self, data: bytes) -> None:
        """Decrypted client bytes: frames, or (raw and icontrol modes) a byte stream."""
        if self.mode in ("raw", "icontrol"):
            self.pipe(data)
            return
        for event in self.commands.feed(data):
            self.dispatch(event)
            if not self.is_open():
                return
            if self.mode in ("raw", "icontrol"):
                self.pipe(self.commands.take_buffer())  # what follows the switch is not frames
                return

    # ------------------------------------------------------------ output

    def send(self, text: str) -> None:
        """Send one text answer."""
        assert self.stream is not None
        if not self.closed:
            self.writer.write(self.stream.encrypt(encode_answer(text)))

    def send_binary(self, mimetype: str, data: bytes) -> None:
        """Send ``binary <mime> <size>`` and the raw bytes."""
        self.send(f"binary {mimetype} {len(data)}")
        assert self.stream is not None
        if not self.closed:
            self.writer.write(self.stream.encrypt(data))

    def send_raw(self, data: bytes) -> None:
        """Send unframed bytes (raw mode)."""
        assert self.stream is not None
        if not self.closed and data:
            self.writer.write(self.stream.encrypt(data))

    def kicked(self) -> None:
        """Another client kicked us: tell, then hang up."""
        self.send("error KICKED")
        self.close()

    # ------------------------------------------------------------ dispatch

    def dispatch(self, event: AnswerEvent) -> None:
        """Handle one decoded event."""
        if isinstance(event, BinaryStart):
            return  # the device never announces uploads this way; CommandReader does not produce it
        if isinstance(event, BinaryChunk):
            self._upload_chunk(event.data)
            return
        if isinstance(event, BinaryEnd):
            self._upload_done()
            return
        if self.device.faults.mute:
            return
        try:
            words = shlex.split(event.text.rstrip("\x00\n\r"))
        except ValueError:
            words = []
        try:
            if not words:
                raise SimError("BAD_PARAMS")
            if self.mode == "command":
                self.command_task(words)
            else:
                self.mode_task(words)
        except SimError as exc:
            self.send("error " + " ".join(exc.symbols))
        except (IndexError, ValueError):
            self.send("error BAD_PARAMS")

    def pipe(self, data: bytes) -> None:
        """Raw mode: echo each line back (the mainboard's stand-in) until ``quit``.

        Icontrol: the msgpack SDK protocol is not simulated; its bytes are ignored, and the task
        ends when the connection does.
        """
        if self.mode == "icontrol":
            return
        self._raw += data
        while self._raw and self.mode == "raw":
            if self._raw.startswith(b"quit"):
                del self._raw[:4]
                self.mode = "command"
                self.server.release()
                self.send_raw(RAW_END)
                self.send("ok")
                rest = bytes(self._raw)
                self._raw.clear()
                self.receive(rest)
                return
            if b"quit".startswith(bytes(self._raw)):
                return  # maybe the start of ``quit``: wait for the rest
            end = self._raw.find(b"\n") + 1 or len(self._raw)
            self.send_raw(bytes(self._raw[:end]))
            del self._raw[:end]

    def mode_task(self, words: list[str]) -> None:
        """A command while this session holds maintain or scan."""
        if words[0] == "position":
            self.send(_TASKS[self.mode])
            return
        if words[0] == "quit" or (self.mode == "maintain" and words[0] == "reset_mb"):
            self.mode = "command"
            self.server.release()
            self.send("ok")
            return
        if self.mode == "maintain" and words[0] == "update_head":
            if len(words) != 3 or words[1] != "binary":
                raise SimError("BAD_PARAMS")
            if int(words[2]) > MAX_HEAD_FIRMWARE:
                raise SimError("TOO_LARGE")
            self._start_binary("head", None, int(words[2]))
            return
        handler = maintain_command if self.mode == "maintain" else scan_command
        handler(words, self.send, self.send_binary)

    def command_task(self, words: list[str]) -> None:
        """A command of the command task."""
        group, args = words[0], words[1:]
        if group == "file":
            self.file_command(args[0], args[1:])
        elif group == "player":
            self.player_command(args[0], args[1:])
        elif group in ("maintain", "scan") or (
            group == "task" and args[:1] in (["maintain"], ["scan"], ["raw"], ["icontrol"])
        ):
            self.enter(group if group != "task" else args[0])
        elif group == "deviceinfo":
            self.deviceinfo()
        elif group == "config":
            self.config_command(args)
        elif group == "kick":
            self.kick()
        elif group == "update_fw":
            self.begin_firmware(args)
        elif group == "position":
            self.send(_TASKS["command"])
        elif group == "fetch_log":
            self.fetch_log(args)
        elif group == "cloud_validation_code":
            self.cloud_validation_code()
        else:
            raise SimError("UNKNOWN_COMMAND")

    # ------------------------------------------------------------ files

    def file_command(self, operation: str, args: list[str]) -> None:
        """``file ...``."""
        storage = self.device.storage
        if operation == "upload":
            self.begin_upload(args)
            return
        if operation == "cp":
            if len(args) != 4:
                raise SimError("BAD_PARAMS")
            storage.write(args[2], args[3], storage.read(args[0], args[1]))
            self.send("ok")
            return
        if len(args) not in (1, 2):
            raise SimError("BAD_PARAMS")
        entry, path = args[0], args[1] if len(args) == 2 else ""
        if operation == "ls":
            listing = storage.list(entry, path)
            self.send("continue")
            self.send("".join(("D" if is_dir else "F") + name + "\x00" for is_dir, name in listing))
            self.send("ok")
        elif operation == "info":
            self.file_info(path, storage.read(entry, path))
        elif operation == "md5":
            self.send("md5 " + hashlib.md5(storage.read(entry, path)).hexdigest())
        elif operation in ("mkdir", "rmdir", "rm"):
            {"mkdir": storage.mkdir, "rmdir": storage.rmdir, "rm": storage.remove}[operation](
                entry, path
            )
            self.send("ok")
        elif operation == "download":
            data = storage.read(entry, path)
            mimetype = commands.guess_mimetype(path)
            self.send_binary(mimetype, data)
            self.send("ok")
        else:
            raise SimError("UNKNOWN_COMMAND")

    def file_info(self, path: str, data: bytes) -> None:
        """``file info``: previews and metadata for FCode, the size for others."""
        if not path.endswith(".fc"):
            self.send(f"ok size={len(data)}")
            return
        try:
            metadata, images = read_fcode(data)
        except FcodeError as exc:
            raise SimError("FILE_BROKEN", exc.reason) from None
        for image in images:
            self.send_binary("image/png", image)
        self.send(
            "ok " + "\x00".join([*(f"{k}={v}" for k, v in metadata.items()), f"size={len(data)}"])
        )

    def begin_upload(self, args: list[str]) -> None:
        """``file upload <mime> <size> #|<E> <P>``: answer ``continue`` and take raw bytes."""
        if len(args) not in (3, 4) or (len(args) == 3 and args[2] != "#"):
            raise SimError("BAD_PARAMS")
        mimetype, size = args[0], int(args[1])
        if size > MAX_UPLOAD:
            raise SimError("TOO_LARGE")
        target = None if len(args) == 3 else (args[2], args[3])
        if target is not None:
            if target[0] == "USB":
                raise SimError("BAD_PARAMS", "USB_NOT_ACCESSABLE")
            if not target[1].endswith(_EXTENSION_OF.get(mimetype, "\x00")):
                raise SimError("BAD_FILE_FORMAT")
        self._start_binary("upload", target, size)

    def begin_firmware(self, args: list[str]) -> None:
        """``update_fw binary/flux-firmware <size> #``."""
        if len(args) != 3:
            raise SimError("BAD_PARAMS")
        if args[0] != "binary/flux-firmware":
            raise SimError("BAD_FILE_FORMAT")
        size = int(args[1])
        if size > MAX_FIRMWARE:
            raise SimError("TOO_LARGE")
        self._start_binary("firmware", None, size)

    def _start_binary(self, kind: str, target: tuple[str, str] | None, size: int) -> None:
        self._upload = (kind, target, size, bytearray())
        self.send("continue")
        if size:
            self.commands.expect_binary(size)
        else:
            self._upload_done()

    def _upload_chunk(self, data: bytes) -> None:
        assert self._upload is not None
        buffer = self._upload[3]
        buffer += data
        limit = self.device.faults.drop_upload_after
        if limit is not None and len(buffer) >= limit:
            self.device.faults.drop_upload_after = None
            log.info("flux_sim_fault_drop_upload", received=len(buffer))
            self.abort()

    def _upload_done(self) -> None:
        assert self._upload is not None
        kind, target, _size, buffer = self._upload
        self._upload = None
        data = bytes(buffer)
        try:
            if kind == "firmware":
                if not data:
                    raise SimError("FILE_BROKEN")
                self.device.firmware_images.append(data)
                self.send("ok")
                self.close()  # the device restarts into its updater
                return
            if kind == "head":
                self.send("ok")
                self.send("CTRL INIT")
                for written in range(0, len(data), 4096):
                    self.send(f"CTRL WRITE {min(written + 4096, len(data))}")
                self.send("ok")
                return
            if target is None:
                self.device.select(data)
            else:
                self.device.storage.write(target[0], target[1], data)
            self.send("ok")
        except SimError as exc:
            self.send("error " + " ".join(exc.symbols))

    # ------------------------------------------------------------ player

    def player_command(self, operation: str, args: list[str]) -> None:
        """``player ...``."""
        device = self.device
        if operation == "select":
            if device.job is not None and not device.job.finished:
                raise SimError("RESOURCE_BUSY")
            device.select(device.storage.read(args[0], args[1] if len(args) > 1 else ""))
        elif operation == "start":
            device.start_job()
        elif operation in ("pause", "resume", "abort"):
            getattr(device.running_job(), operation)()
        elif operation == "report":
            self.send(json.dumps(device.report()))
            return
        elif operation == "info":
            self.play_info()
            return
        elif operation == "quit":
            device.quit_job()
        elif operation in (
            "set_toolhead_operating",
            "set_toolhead_standby",
            "press_button",
            "set_toolhead_header",
            "load_filament",
            "unload_filament",
        ):
            device.running_job()
        else:
            raise SimError(
                "UNKNOWN_COMMAND"
            )  # includes ``restart``, which the device does not route
        self.send("ok")

    def play_info(self) -> None:
        """``player info``: JSON metadata and the first preview."""
        device = self.device
        if device.selected is None:
            raise SimError("NO_TASK")
        metadata, images, _data = device.selected
        self.send_binary("text/json", json.dumps(metadata).encode())
        if images:
            self.send_binary("image/png", images[0])
        self.send("ok")

    # ------------------------------------------------------------ device

    def enter(self, mode: str) -> None:
        """``maintain`` / ``scan`` / ``task raw`` / ``task icontrol``: take the device lock."""
        device = self.device
        if device.job is not None and not device.job.finished:
            raise SimError("RESOURCE_BUSY", "Playing")
        if self.server.holder is not None:
            raise SimError(
                "RESOURCE_BUSY", f"{device.holder[0]}@{device.holder[1]}" if device.holder else ""
            )
        self.server.holder = self
        self.mode = mode
        device.holder = (self.peer, _TASKS[mode])
        device.notify()
        self.send("continue" if mode == "raw" else "ok")

    def kick(self) -> None:
        """``kick``: disconnect the lock holder (a job cannot be kicked)."""
        if self.device.job is not None and not self.device.job.finished:
            raise SimError("RESOURCE_BUSY")
        holder = self.server.holder
        if holder is not None and holder is not self:
            self.server.release()
            holder.kicked()
        self.send("ok")

    def fetch_log(self, args: list[str]) -> None:
        """``fetch_log <path>``: a log file, shaped like a download."""
        if len(args) != 1:
            raise SimError("BAD_PARAMS")
        path = args[0]
        if path.startswith("/") or ".." in path.split("/"):
            raise SimError("BAD_PARAMS")  # escapes the log folder
        data = self.device.logs.get(path)
        if data is None:
            raise SimError("NOT_EXIST", "NOT_FILE")
        self.send_binary("text/plain", data)
        self.send("ok")

    def cloud_validation_code(self) -> None:
        """``cloud_validation_code`` → ``ok <token> <base64 of a 32-byte hash>``."""
        token = secrets.token_hex(16)
        digest = hashlib.sha256(token.encode() + self.device.uuid.bytes).digest()
        self.send(f"ok {token} {base64.b64encode(digest).decode()}")

    def deviceinfo(self) -> None:
        """``deviceinfo``: ``ok`` then ``key:value`` lines."""
        device = self.device
        lines = {
            "version": device.version,
            "model": device.model,
            "uuid": device.uuid.hex,
            "serial": device.serial,
            "nickname": device.name,
            "cloud": "None",
            "macaddr": "lo:00:00:00:00:00:00",
            "ipaddr": f"lo:{self.writer.get_extra_info('sockname', ('?', 0))[0]}",
        }
        self.send("ok\n" + "\n".join(f"{key}:{value}" for key, value in lines.items()))

    def config_command(self, args: list[str]) -> None:
        """``config get|set|del <key> [value...]``."""
        operation, key = args[0], args[1]
        if operation == "get":
            if key not in CONFIG_CHOICES:
                raise SimError("BAD_PARAMS")
            value = self.device.config.get(key)
            self.send("ok EMPTY" if value is None else f"ok VAL {value}")
            return
        if operation == "set":
            self.device.set_config(key, " ".join(args[2:]))
        elif operation == "del":
            if key not in CONFIG_CHOICES:
                raise SimError("BAD_PARAMS")
            self.device.config.pop(key, None)
        else:
            raise SimError("BAD_PARAMS")
        self.send("ok")
