"""``FlashRunnerDriver``: every ``fr_comm`` operation as one async method, over any ``Transport``.

| fr_comm                          | driver                                   |
|----------------------------------|------------------------------------------|
| ``FlashRunner(port, settings)``  | ``FlashRunnerDriver.from_settings`` + ``open`` |
| ``FR_SendCommand``               | ``send_command``                         |
| ``FR_SendCommand_Ex``            | ``send_command_ex``                      |
| ``FR_GetAnswer``                 | ``get_answer``                           |
| ``FR_SendFile`` / ``FR_GetFile`` | ``send_file`` / ``get_file`` (``upload``/``download`` for bytes) |
| ``FR_RunProject``                | ``run_project``                          |
| ``FR_GetPublicKey``              | ``get_public_key``                       |
| ``FR_EncryptData``               | ``encrypt_data``                         |
| ``FR_DynMem*Encryption``         | ``dynmem_begin_encryption`` / ``dynmem_encrypt_data`` / |
|                                  | ``dynmem_reset_encryption``              |
| ``FR_Logger``                    | ``logger``                               |
| ``FR_GetDllVersion``             | ``library_version``                      |

Durations are seconds (fr_comm takes milliseconds; the actor converts). Every error is a
``bus.errors`` class: a ``!`` answer is ``DeviceFault`` (``Busy`` for ``ERR_BUSY``), no answer in
time is ``DeviceTimeout``, a down link is ``DeviceUnavailable``, bad arguments ``InvalidArguments``.
The wire commands used for files, keys and dynamic memory are assumptions; see ``simulator``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flashrunner import crypto
from actors.flashrunner.config import FlashRunnerConfig
from actors.flashrunner.link import Link
from actors.flashrunner.protocol import (
    MASTER_CHANNEL,
    Answer,
    EngineState,
    EngineStatus,
    FileType,
    crc32_hex,
    encode_command,
    encode_frame,
    expected_answers,
    parse_engine_status,
)
from actors.flashrunner.realtime_log import FlashRunnerLogger
from actors.flashrunner.transport import BaudrateSwitchable, Transport
from actors.flashrunner.transport_lan import TcpTransport, parse_address
from actors.flashrunner.transport_serial import BAUD_HIGH, BAUD_LOW, SerialTransport
from bus.errors import Busy, DeviceError, DeviceFault, DeviceTimeout, InvalidArguments

__all__ = ["LIBRARY_VERSION", "ChannelResult", "FlashRunnerDriver", "ProgressCallback"]

log = structlog.get_logger()

LIBRARY_VERSION = "linebus-flashrunner 0.1.0"
ProgressCallback = Callable[[int, int], None]
ChannelCallback = Callable[[int, bool], None]
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True, slots=True)
class ChannelResult:
    """How one channel's project run ended; ``error`` is the device's SGETERR text on failure."""

    channel: int
    passed: bool
    error: str | None = None


def _check_name(name: str) -> str:
    if not _REMOTE_NAME.match(name):
        raise InvalidArguments(
            f"bad file name {name!r}: letters, digits, '._-' only", details={"argument": "name"}
        )
    return name


def _fault(command: str, answer: Answer) -> Busy | DeviceFault:
    code = answer.error_code or "NACK"
    message = f"{command!r} failed: {answer.raw}"
    if code == "ERR_BUSY":
        return Busy(message, details={"device_code": code})
    return DeviceFault(message, device_code=code)


class FlashRunnerDriver:
    """Drive one FlashRunner 2.0 over a transport; usable as ``async with``.

    Args:
        transport: LAN (``TcpTransport``), serial (``SerialTransport``) or a test fake.
        config: Timing and framing; the defaults suit a real unit.
    """

    def __init__(self, transport: Transport, config: FlashRunnerConfig | None = None) -> None:
        self.config = config or FlashRunnerConfig()
        self.transport = transport
        self._link = Link(transport, self.config)
        self._unclaimed: list[asyncio.Future[Answer]] = []
        self._transfer_lock = asyncio.Lock()
        self._public_key: rsa.RSAPublicKey | None = None
        self._session: crypto.DynMemEncryptor | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls, port: str, settings: str, config: FlashRunnerConfig | None = None
    ) -> Self:
        """Build a driver from ``fr_comm``'s pair: ``("LAN", "ip:port")`` or ``("/dev/ttyUSB0", "115200")``.

        Raises:
            InvalidArguments: The address or baud rate is malformed.
        """
        config = config or FlashRunnerConfig()
        if port.upper() == "LAN":
            host, tcp_port = parse_address(settings)
            return cls(
                TcpTransport(host, tcp_port, connect_timeout_s=config.connect_timeout_s), config
            )
        if settings.strip() not in (str(BAUD_LOW), str(BAUD_HIGH)):
            raise InvalidArguments(
                f"baud rate must be {BAUD_LOW} or {BAUD_HIGH}, not {settings!r}",
                details={"argument": "settings"},
            )
        return cls(SerialTransport(port, int(settings)), config)

    # ------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        """True while the link to the device is up."""
        return self._link.connected

    @property
    def reconnects(self) -> int:
        """How many times the link was re-established after a loss."""
        return self._link.reconnects

    async def open(self) -> None:
        """Connect (and switch a serial link to 3 Mbaud if configured).

        Raises:
            DeviceUnavailable: The device cannot be reached.
        """
        await self._link.open()
        if self.config.high_baudrate and isinstance(self.transport, BaudrateSwitchable):
            await self.set_high_baudrate()

    async def close(self) -> None:
        """Disconnect; pending commands fail with ``DeviceUnavailable``."""
        await self._link.close()
        for task in list(self._cleanups):
            task.cancel()

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

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until the link is up (after a reconnect); raise ``DeviceUnavailable`` on timeout."""
        await self._link.wait_connected(timeout_s)

    @staticmethod
    def library_version() -> str:
        """Return the version of this driver library (``FR_GetDllVersion``)."""
        return LIBRARY_VERSION

    # ------------------------------------------------------------ raw commands

    async def send_command(self, command: str) -> None:
        """Send a complete frame such as ``#55*SPING`` (``FR_SendCommand``); fetch with ``get_answer``."""
        frame = encode_frame(command)
        self._unclaimed.extend(await self._link.send(frame, expected_answers(command)))

    async def send_command_ex(self, channels: Sequence[int], command: str) -> None:
        """Send ``command`` to ``channels``, building the header (``FR_SendCommand_Ex``).

        The device answers once per channel; fetch each with ``get_answer``.
        """
        frame = encode_command(command, list(channels), multi=self.config.multi_channel)
        self._unclaimed.extend(await self._link.send(frame, len(set(channels))))

    async def get_answer(self, timeout_s: float | None = None) -> Answer:
        """Return the next answer to a command sent with ``send_command[_ex]`` (``FR_GetAnswer``).

        A failure answer (``!``) is returned, not raised. After a timeout the same answer can
        still be fetched by the next call.

        Raises:
            InvalidArguments: No sent command is waiting for its answer.
            DeviceTimeout: It did not come within ``timeout_s``.
        """
        if not self._unclaimed:
            raise InvalidArguments(
                "no command is waiting for an answer; send one first",
                details={"argument": "command"},
            )
        future = self._unclaimed[0]
        try:
            answer = await self._link.wait(future, self._timeout(timeout_s))
        except BaseException:
            if future.done():  # failed for good (link lost, garbled): it cannot be fetched again
                self._unclaimed.remove(future)
            raise
        self._unclaimed.remove(future)
        return answer

    async def execute(
        self,
        command: str,
        channels: int | Sequence[int] | None = MASTER_CHANNEL,
        *,
        data: bytes | None = None,
        timeout_s: float | None = None,
        check: bool = True,
    ) -> list[Answer]:
        """Send ``command`` to ``channels`` and wait for every answer (one per channel).

        Args:
            command: Command and arguments without header (``SGETVER``).
            channels: A channel, a list, or None for the bare ``#CMD`` form.
            data: Raw bytes attached to the command.
            timeout_s: Wait per answer; defaults to ``config.command_timeout_s``.
            check: Raise ``DeviceFault`` (or ``Busy``) on a ``!`` answer.
        """
        frame = encode_command(command, channels, multi=self.config.multi_channel, data=data)
        count = 1 if channels is None or isinstance(channels, int) else len(set(channels))
        answers = await self._link.request(frame, count, self._timeout(timeout_s))
        for answer in answers:
            if check and not answer.ok:
                raise _fault(command, answer)
        return answers

    async def _call(
        self, command: str, channel: int | None = MASTER_CHANNEL, **kwargs: Any
    ) -> Answer:
        return (await self.execute(command, channel, **kwargs))[0]

    async def ping(self, timeout_s: float | None = None) -> None:
        """Check the unit answers (``#55*SPING``)."""
        await self._call("SPING", timeout_s=timeout_s)

    async def version(self) -> str:
        """Return the unit's firmware version (``#55*SGETVER``)."""
        return (await self._call("SGETVER")).text

    async def engine_status(self, timeout_s: float | None = None) -> EngineStatus:
        """Return the state of every engine (``#55*GETENGSTATUS``).

        Raises:
            DeviceFault: The answer is not an engine status.
        """
        answer = await self._call("GETENGSTATUS", timeout_s=timeout_s)
        try:
            return parse_engine_status(answer)
        except ValueError as exc:
            raise DeviceFault(str(exc), device_code="BAD_STATUS") from exc

    async def set_high_baudrate(self) -> None:
        """Switch a serial link to 3 Mbaud: ``#55*SETSERIALBAUDRATE HIGH``, then reopen the port.

        Raises:
            InvalidArguments: The transport is not a serial port.
        """
        transport = self.transport
        if not isinstance(transport, BaudrateSwitchable):
            raise InvalidArguments(
                "only a serial link has a baud rate", details={"argument": "transport"}
            )
        await self._call("SETSERIALBAUDRATE HIGH")
        await self._link.reconfigure(lambda: transport.set_baudrate(BAUD_HIGH))
        log.info("flashrunner_baudrate", device=self.transport.description)

    def _timeout(self, timeout_s: float | None) -> float:
        return self.config.command_timeout_s if timeout_s is None else timeout_s

    # ------------------------------------------------------------ files

    async def upload(
        self,
        name: str,
        data: bytes,
        file_type: FileType,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Store ``data`` as ``name`` in the unit's ``file_type`` area, chunk by acknowledged chunk.

        Cancelling the calling task aborts the transfer; the unit discards the partial file and
        stays usable.
        """
        _check_name(name)
        total, chunk = len(data), self.config.chunk_bytes
        timeout = self.config.transfer_timeout_s
        async with self._transfer_lock:
            await self._call(f"FSWRITE {FileType(file_type)} {name} {total}")
            _report(on_progress, 0, total)
            try:
                for offset in range(0, total, chunk):
                    piece = data[offset : offset + chunk]
                    await self._call("FSDATA", data=piece, timeout_s=timeout)
                    _report(on_progress, offset + len(piece), total)
                await self._call(f"FSCLOSE {crc32_hex(data)}", timeout_s=timeout)
            except BaseException:
                await self._shielded(self._abort_upload(name))
                raise
        log.info("flashrunner_file_sent", file=name, file_type=str(file_type), size=total)

    async def download(
        self, name: str, file_type: FileType, *, on_progress: ProgressCallback | None = None
    ) -> bytes:
        """Return the content of ``name`` from the unit's ``file_type`` area, chunk by chunk.

        Reads are stateless on the unit, so cancelling leaves nothing to clean up there.
        """
        _check_name(name)
        ftype = FileType(file_type)
        size_text = (await self._call(f"FSSIZE {ftype} {name}")).text
        if not size_text.isdigit():
            raise DeviceFault(f"bad size answer {size_text!r}", device_code="BAD_SIZE")
        total, out = int(size_text), bytearray()
        _report(on_progress, 0, total)
        async with self._transfer_lock:
            while len(out) < total:
                want = min(self.config.chunk_bytes, total - len(out))
                answer = await self._call(
                    f"FSREAD {ftype} {name} {len(out)} {want}",
                    timeout_s=self.config.transfer_timeout_s,
                )
                if answer.data is None or len(answer.data) != want:
                    raise DeviceFault(
                        f"short read of {name} at {len(out)}", device_code="SHORT_READ"
                    )
                out += answer.data
                _report(on_progress, len(out), total)
        return bytes(out)

    async def send_file(
        self,
        path: str | Path,
        file_type: FileType,
        *,
        remote_name: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Send a local file to the unit (``FR_SendFile``); it keeps its base name unless renamed."""
        source = Path(path)
        try:
            data = await asyncio.to_thread(source.read_bytes)
        except OSError as exc:
            raise InvalidArguments(
                f"cannot read {source}: {exc}", details={"argument": "path"}
            ) from exc
        await self.upload(remote_name or source.name, data, file_type, on_progress=on_progress)

    async def get_file(
        self,
        name: str,
        dest_dir: str | Path,
        file_type: FileType,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Path:
        """Fetch ``name`` from the unit into ``dest_dir`` (``FR_GetFile``); return the written path."""
        target = Path(dest_dir) / _check_name(name)
        data = await self.download(name, file_type, on_progress=on_progress)
        try:
            await asyncio.to_thread(target.write_bytes, data)
        except OSError as exc:
            raise InvalidArguments(
                f"cannot write {target}: {exc}", details={"argument": "dest_dir"}
            ) from exc
        return target

    async def _abort_upload(self, name: str) -> None:
        if not self.connected:
            return  # the unit drops a half-written file when the link goes (simulator assumption)
        try:
            await self._call("FSABORT", timeout_s=self.config.command_timeout_s)
            log.info("flashrunner_upload_aborted", file=name)
        except DeviceError as exc:
            log.warning("flashrunner_abort_failed", file=name, error=str(exc))

    async def _shielded(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run ``cleanup`` to the end even if the caller is cancelled again meanwhile."""
        task = asyncio.create_task(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        # Cancelled a second time: the cleanup goes on in the background.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    # ------------------------------------------------------------ projects

    async def run_project(
        self,
        project: str,
        channels: Sequence[int],
        timeout_s: float,
        on_channel_done: ChannelCallback | None = None,
    ) -> dict[int, ChannelResult]:
        """Run ``project`` on ``channels`` until each passes or fails (``FR_RunProject``).

        Sends ``#<ch>*RUN <project>`` per channel, polls ``GETENGSTATUS``, and asks ``SGETERR``
        for each failed channel. ``on_channel_done(channel, passed)`` is called as each finishes.

        Raises:
            DeviceTimeout: Some channels were still running after ``timeout_s``;
                ``details["results"]`` holds the finished ones, ``details["pending"]`` the rest.
        """
        selected = sorted(set(channels))
        if not selected or MASTER_CHANNEL in selected:
            raise InvalidArguments(
                "give one or more engine channels", details={"argument": "channels"}
            )
        name = project if project.lower().endswith(".prj") else f"{project}.prj"
        _check_name(name)
        results: dict[int, ChannelResult] = {}
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                for channel in selected:
                    await self._call(f"RUN {name}", channel)
                log.info("flashrunner_run_started", project=name, channels=selected)
                await self._poll_until_done(selected, results, on_channel_done)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # a DeviceTimeout of one command, not the run's deadline
            pending = [c for c in selected if c not in results]
            raise DeviceTimeout(
                f"{name}: channels {pending} not done within {timeout_s} s",
                details={
                    "pending": pending,
                    "results": {str(c): r.passed for c, r in results.items()},
                },
            ) from exc
        return results

    async def _poll_until_done(
        self,
        channels: list[int],
        results: dict[int, ChannelResult],
        on_done: ChannelCallback | None,
    ) -> None:
        while True:
            status = await self.engine_status()
            for channel in channels:
                state = status.state(channel)
                if channel in results or state.working:
                    continue
                error = None
                if state is EngineState.FAIL:
                    error = (await self._call("SGETERR", channel, check=False)).text or "failed"
                results[channel] = ChannelResult(channel, state is not EngineState.FAIL, error)
                log.info(
                    "flashrunner_channel_done",
                    channel=channel,
                    passed=state is not EngineState.FAIL,
                    error=error,
                )
                if on_done is not None:
                    on_done(channel, state is not EngineState.FAIL)
            if len(results) == len(channels):
                return
            await asyncio.sleep(self.config.poll_interval_s)

    # ------------------------------------------------------------ encryption

    async def get_public_key(self) -> bytes:
        """Fetch and remember the unit's RSA public key (``FR_GetPublicKey``); return it as PEM.

        Assumption: ``#55*SGETPUBKEY`` answers with the base64 DER key.
        """
        text = (await self._call("SGETPUBKEY")).text
        try:
            der = base64.b64decode(text, validate=True)
        except ValueError as exc:
            raise DeviceFault(f"bad public key answer: {exc}", device_code="BAD_KEY") from exc
        try:
            self._public_key = crypto.load_public_key(der)
        except InvalidArguments as exc:
            raise DeviceFault(exc.message, device_code="BAD_KEY") from exc
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def _key(self) -> rsa.RSAPublicKey:
        if self._public_key is None:
            raise InvalidArguments("call get_public_key first", details={"argument": "public_key"})
        return self._public_key

    def encrypt_data(self, data: bytes) -> crypto.EncryptedData:
        """Encrypt one block with a fresh key and IV (``FR_EncryptData``); no I/O."""
        return crypto.encrypt_data(self._key(), data)

    def dynmem_begin_encryption(self) -> bytes:
        """Start a session and return its header (``FR_DynMemBeginEncryption``); no I/O."""
        self._session = crypto.DynMemEncryptor(self._key())
        return self._session.begin()

    def dynmem_encrypt_data(self, data: bytes) -> bytes:
        """Encrypt the next block of the session, CBC-chained (``FR_DynMemEncryptData``); no I/O."""
        if self._session is None:
            raise InvalidArguments(
                "begin an encryption session first", details={"argument": "session"}
            )
        return self._session.encrypt(data)

    def dynmem_reset_encryption(self) -> None:
        """End the session (``FR_DynMemResetEncryption``); no I/O."""
        self._session = None

    async def dynmem_send_header(self, channels: int | Sequence[int], header: bytes) -> None:
        """Send an encryption header to ``channels`` (assumed command ``DYNMEMKEY``)."""
        await self.execute("DYNMEMKEY", channels, data=header)

    async def dynmem_write_encrypted(
        self, channels: int | Sequence[int], address: int, payload: bytes
    ) -> None:
        """Write an encrypted block at ``address`` of the dynamic memory (assumed ``DYNMEMSETENC``)."""
        await self.execute(f"DYNMEMSETENC {address:08X}", channels, data=payload)

    async def dynmem_write(self, channels: int | Sequence[int], address: int, data: bytes) -> None:
        """Write plain bytes at ``address`` of the dynamic memory (assumed ``DYNMEMSET <addr> <hex>``)."""
        await self.execute(f"DYNMEMSET {address:08X} {data.hex().upper()}", channels)

    # ------------------------------------------------------------ logger

    def logger(self) -> FlashRunnerLogger:
        """Return a real-time logger client for this unit (``FR_Logger``); LAN only.

        Raises:
            InvalidArguments: The driver is not on a LAN transport.
        """
        if not isinstance(self.transport, TcpTransport):
            raise InvalidArguments(
                "the real-time logger is available over LAN only", details={"argument": "transport"}
            )
        return FlashRunnerLogger(
            self.transport.host,
            self.config.logger_port,
            connect_timeout_s=self.config.connect_timeout_s,
        )


def _report(on_progress: ProgressCallback | None, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(done, total)
