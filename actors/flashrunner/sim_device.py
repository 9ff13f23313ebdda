"""The simulated FlashRunner's state and command handling, with no I/O (see ``simulator``).

``SimDevice.handle`` takes one parsed ``Request`` and returns the answer bytes; the server in
``simulator`` moves the bytes and adds timing faults. Project runs are computed from the clock
(a channel is running until its end time), so no task per run is needed.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flashrunner import crypto
from actors.flashrunner.protocol import (
    MASTER_CHANNEL,
    EngineState,
    FileType,
    Request,
    crc32_hex,
    encode_answer,
    format_engine_status,
)

__all__ = ["FILE_DIRS", "Reply", "SimChannel", "SimDevice", "TransferSession"]

#: Directory of each file type on the unit (assumption; the real mapping is unknown, §12 item 4).
FILE_DIRS = {
    FileType.FRB: "/DATA",
    FileType.PRJ: "/PROJECTS",
    FileType.LIC: "/LICENSES",
    FileType.LOG: "/LOGS",
    FileType.LIB: "/LIBS",
}
VERSION = "FlashRunner 2.0 simulator 1.0.0"


class _Nack(Exception):
    """A command failed; the message starts with the device's error symbol."""


@dataclass
class SimChannel:
    """One engine: its run, its last error, and its dynamic memory."""

    number: int
    run_until: float = 0.0
    will_fail: bool = False
    ran: bool = False
    error: str = ""
    dynmem: dict[int, bytes] = field(default_factory=dict)
    decryptor: crypto.DynMemDecryptor | None = None

    def state(self, now: float) -> EngineState:
        """The engine state at monotonic time ``now``."""
        if now < self.run_until:
            return EngineState.RUNNING
        if not self.ran:
            return EngineState.IDLE
        return EngineState.FAIL if self.will_fail else EngineState.PASS


@dataclass
class TransferSession:
    """Per-connection state: the file being written, if any."""

    writing: tuple[FileType, str, int] | None = None
    buffer: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class Reply:
    """What to send for one request: the answers, after ``busy_s`` of BUSY frames."""

    answers: list[bytes]
    busy_s: float = 0.0
    carries_data: bool = False


class SimDevice:
    """A FlashRunner 2.0's observable behaviour: channels, file store, keys, dynamic memory.

    Args:
        channels: Number of engines (channels 1..N; 55 is the master).
        run_s: How long a project run takes.
        fail_channels: Channels on which every project run fails.
        sync_run: RUN answers only when the run ends, with BUSY frames meanwhile (else at once).
        private_key: The unit's RSA key; a fresh 2048-bit key when None.
        emit: Called with each log line for the logger port.
        schedule: ``(delay_s, callback)`` to run something later (the server's event loop).
    """

    def __init__(
        self,
        *,
        channels: int = 4,
        run_s: float = 0.5,
        fail_channels: set[int] | None = None,
        sync_run: bool = False,
        private_key: rsa.RSAPrivateKey | None = None,
        emit: Callable[[str], None] = lambda line: None,
        schedule: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.channels = {n: SimChannel(n) for n in range(1, channels + 1)}
        self.run_s = run_s
        self.fail_channels = set(fail_channels or ())
        self.sync_run = sync_run
        self.private_key = private_key or rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
        self.files: dict[FileType, dict[str, bytes]] = {ftype: {} for ftype in FileType}
        self.baud_high = False
        self.nack_commands: set[str] = set()
        self.commands_seen: list[str] = []
        self._emit = emit
        self._schedule = schedule

    # ------------------------------------------------------------ dispatch

    def handle(self, request: Request, session: TransferSession) -> Reply:
        """Execute one request and return its answers (one per addressed channel)."""
        self.commands_seen.append(request.name)
        targets = request.channels or (MASTER_CHANNEL,)
        if request.error:
            return Reply([encode_answer(request.error, ok=False, channel=targets[0])])
        if request.name == "RUN" and self.sync_run:
            return self._sync_run(request)
        answers, carries = [], False
        for channel in targets:
            try:
                result = self._dispatch(channel, request, session)
            except _Nack as exc:
                answers.append(encode_answer(str(exc), ok=False, channel=channel))
                continue
            carries = carries or isinstance(result, bytes)
            answers.append(
                encode_answer(channel=channel, data=result)
                if isinstance(result, bytes)
                else encode_answer(result, channel=channel)
            )
        return Reply(answers, carries_data=carries)

    def _dispatch(self, channel: int, request: Request, session: TransferSession) -> str | bytes:
        name, args = request.name, request.args
        if name in self.nack_commands:
            raise _Nack(f"ERR_INJECTED {name}")
        if channel != MASTER_CHANNEL and channel not in self.channels:
            raise _Nack(f"ERR_BAD_CHANNEL {channel}")
        handler = self._UNIT.get(name)
        if handler is not None:
            return handler(self, args, request.data, session)
        engine_handler = self._ENGINE.get(name)
        if engine_handler is None:
            raise _Nack(f"ERR_UNKNOWN_COMMAND {name}")
        if channel == MASTER_CHANNEL:
            raise _Nack(f"ERR_BAD_CHANNEL {name} needs an engine channel")
        return engine_handler(self, self.channels[channel], args, request.data)

    @staticmethod
    def stamp() -> str:
        """The UTC time stamp that starts each log line."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def log(self, text: str) -> None:
        """Emit one line on the logger port."""
        self._emit(f"{self.stamp()} {text}")

    # ------------------------------------------------------------ unit commands

    def _ping(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        return ""

    def _version(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        return VERSION

    def _status(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        now = time.monotonic()
        return format_engine_status(
            [ch.state(now) for ch in self.channels.values()], str(len(self.channels))
        )

    def _clear_errors(
        self, args: tuple[str, ...], data: bytes | None, session: TransferSession
    ) -> str:
        for ch in self.channels.values():
            if ch.state(time.monotonic()) is EngineState.FAIL:
                ch.ran, ch.error = False, ""
        return ""

    def _baudrate(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        if args[:1] not in (("HIGH",), ("LOW",)):
            raise _Nack("ERR_BAD_ARGS SETSERIALBAUDRATE HIGH|LOW")
        self.baud_high = args[0] == "HIGH"
        self.log(f"INFO baud rate {'3000000' if self.baud_high else '115200'}")
        return ""

    def _public_key(
        self, args: tuple[str, ...], data: bytes | None, session: TransferSession
    ) -> str:
        return base64.b64encode(crypto.public_key_der(self.private_key.public_key())).decode(
            "ascii"
        )

    def _file(self, args: tuple[str, ...], count: int) -> tuple[FileType, str]:
        if len(args) < count:
            raise _Nack("ERR_BAD_ARGS missing arguments")
        try:
            return FileType(args[0].upper()), args[1]
        except ValueError:
            raise _Nack(f"ERR_BAD_ARGS unknown file type {args[0]}") from None

    def _stored(self, args: tuple[str, ...], count: int) -> tuple[str, bytes]:
        ftype, name = self._file(args, count)
        content = self.files[ftype].get(name)
        if content is None:
            raise _Nack(f"ERR_FILE_NOT_FOUND {FILE_DIRS[ftype]}/{name}")
        return name, content

    def _fs_write(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        ftype, name = self._file(args, 3)
        if not args[2].isdigit():
            raise _Nack("ERR_BAD_ARGS size")
        session.writing, session.buffer = (
            (ftype, name, int(args[2])),
            bytearray(),
        )  # replaces any open write
        return ""

    def _fs_data(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        if session.writing is None or data is None:
            raise _Nack("ERR_NO_TRANSFER no file open for writing")
        if len(session.buffer) + len(data) > session.writing[2]:
            session.writing = None
            raise _Nack("ERR_TOO_MUCH_DATA transfer aborted")
        session.buffer += data
        return str(len(session.buffer))

    def _fs_close(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        if session.writing is None:
            raise _Nack("ERR_NO_TRANSFER no file open for writing")
        (ftype, name, size), content = session.writing, bytes(session.buffer)
        session.writing, session.buffer = None, bytearray()
        if len(content) != size or args[:1] != (crc32_hex(content),):
            raise _Nack("ERR_CRC file size or CRC mismatch; discarded")
        self.files[ftype][name] = content
        self.log(f"INFO file {FILE_DIRS[ftype]}/{name} stored ({size} bytes)")
        return ""

    def _fs_abort(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        if session.writing is not None:
            self.log(f"WARN file {session.writing[1]} transfer aborted")
        session.writing, session.buffer = None, bytearray()
        return ""

    def _fs_size(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        return str(len(self._stored(args, 2)[1]))

    def _fs_read(
        self, args: tuple[str, ...], data: bytes | None, session: TransferSession
    ) -> bytes:
        _, content = self._stored(args, 4)
        if not (args[2].isdigit() and args[3].isdigit()):
            raise _Nack("ERR_BAD_ARGS offset length")
        offset, length = int(args[2]), int(args[3])
        return content[offset : offset + length]

    def _fs_exist(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        ftype, name = self._file(args, 2)
        return "1" if name in self.files[ftype] else "0"

    def _fs_delete(
        self, args: tuple[str, ...], data: bytes | None, session: TransferSession
    ) -> str:
        ftype, name = self._file(args, 2)
        if self.files[ftype].pop(name, None) is None:
            raise _Nack(f"ERR_FILE_NOT_FOUND {FILE_DIRS[ftype]}/{name}")
        return ""

    def _fs_list(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        ftype, _ = self._file((*args, ""), 1)
        return ",".join(sorted(self.files[ftype]))

    def _crc(self, args: tuple[str, ...], data: bytes | None, session: TransferSession) -> str:
        name = args[-1] if args else ""
        for store in self.files.values():
            if name in store:
                return f"${crc32_hex(store[name]).upper()}"
        raise _Nack(f"ERR_FILE_NOT_FOUND {name}")

    # ------------------------------------------------------------ engine commands

    def _run(self, ch: SimChannel, args: tuple[str, ...], data: bytes | None) -> str:
        now = time.monotonic()
        if not args:
            raise _Nack("ERR_BAD_ARGS RUN <project>")
        if args[0] not in self.files[FileType.PRJ]:
            raise _Nack(f"ERR_FILE_NOT_FOUND {FILE_DIRS[FileType.PRJ]}/{args[0]}")
        if ch.state(now) is EngineState.RUNNING:
            raise _Nack(f"ERR_BUSY channel {ch.number} is running")
        ch.run_until, ch.ran, ch.error = now + self.run_s, True, ""
        ch.will_fail = ch.number in self.fail_channels
        if ch.will_fail:
            ch.error = f"ERR_PROJECT_FAILED {args[0]} verify failed at 0x08000000"
        self.log(f"INFO ch{ch.number:02d} RUN {args[0]} started")
        if self._schedule is not None:
            self._schedule(
                self.run_s,
                lambda: self.log(
                    f"INFO ch{ch.number:02d} RUN {args[0]} {'FAIL' if ch.will_fail else 'PASS'}"
                ),
            )
        return ""

    def _sync_run(self, request: Request) -> Reply:
        answers = []
        for channel in request.channels or (MASTER_CHANNEL,):
            ch = self.channels.get(channel)
            try:
                if ch is None:
                    raise _Nack(f"ERR_BAD_CHANNEL {channel}")
                self._run(ch, request.args, None)
            except _Nack as exc:
                answers.append(encode_answer(str(exc), ok=False, channel=channel))
                continue
            answers.append(encode_answer(ch.error, ok=not ch.will_fail, channel=channel))
        return Reply(answers, busy_s=self.run_s)

    def _last_error(self, ch: SimChannel, args: tuple[str, ...], data: bytes | None) -> str:
        return ch.error

    def _dynmem_key(self, ch: SimChannel, args: tuple[str, ...], data: bytes | None) -> str:
        ch.decryptor = crypto.DynMemDecryptor(self.private_key)
        try:
            mode = ch.decryptor.accept_header(data or b"")
        except ValueError as exc:
            ch.decryptor = None
            raise _Nack(f"ERR_BAD_HEADER {exc}") from None
        return mode.name

    def _dynmem_set_encrypted(
        self, ch: SimChannel, args: tuple[str, ...], data: bytes | None
    ) -> str:
        address = self._address(args)
        if ch.decryptor is None:
            raise _Nack("ERR_NO_KEY send a key header first")
        try:
            ch.dynmem[address] = ch.decryptor.decrypt(data or b"")
        except ValueError as exc:
            raise _Nack(f"ERR_DECRYPT {exc}") from None
        return ""

    def _dynmem_set(self, ch: SimChannel, args: tuple[str, ...], data: bytes | None) -> str:
        address = self._address(args)
        try:
            ch.dynmem[address] = bytes.fromhex(args[1])
        except (IndexError, ValueError):
            raise _Nack("ERR_BAD_ARGS DYNMEMSET <address> <hex>") from None
        return ""

    @staticmethod
    def _address(args: tuple[str, ...]) -> int:
        try:
            return int(args[0], 16)
        except (IndexError, ValueError):
            raise _Nack("ERR_BAD_ARGS address") from None

    _UNIT: ClassVar[
        dict[
            str, Callable[[SimDevice, tuple[str, ...], bytes | None, TransferSession], str | bytes]
        ]
    ] = {
        "SPING": _ping,
        "SGETVER": _version,
        "GETENGSTATUS": _status,
        "CLRERR": _clear_errors,
        "SETSERIALBAUDRATE": _baudrate,
        "SGETPUBKEY": _public_key,
        "FSWRITE": _fs_write,
        "FSDATA": _fs_data,
        "FSCLOSE": _fs_close,
        "FSABORT": _fs_abort,
        "FSSIZE": _fs_size,
        "FSREAD": _fs_read,
        "FSEXIST": _fs_exist,
        "FSDEL": _fs_delete,
        "FSLIST": _fs_list,
        "SGETCRC32": _crc,
    }
    _ENGINE: ClassVar[
        dict[str, Callable[[SimDevice, SimChannel, tuple[str, ...], bytes | None], str]]
    ] = {
        "RUN": _run,
        "SGETERR": _last_error,
        "DYNMEMKEY": _dynmem_key,
        "DYNMEMSETENC": _dynmem_set_encrypted,
        "DYNMEMSET": _dynmem_set,
    }
