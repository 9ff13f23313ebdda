"""``fr_comm``'s public surface over linebus: code written for SMH's ``fr_comm`` reads the same.

::

    from clients.flashrunner import FlashRunner, FR_Comm_Exception, FR_FileType

    try:
        with FlashRunner("LAN", "192.168.1.100:1234") as fr:   # as fr_comm: the bus finds the actor
            fr.FR_SendCommand("#GETENGSTATUS")
            print(fr.FR_GetAnswer(1500))                       # timeout in ms
            fr.FR_SendFile("app.frb", FR_FileType.FRB)
            fr.FR_RunProject("demo.prj", [1, 2, 3, 4], 120000, lambda ch, ok: print(ch, ok))
    except FR_Comm_Exception as exc:
        print(exc.code, exc)

The six public symbols of the seed are here: ``FlashRunner``, ``FR_Logger``, ``FR_Comm_Exception``,
``FR_FileType``, ``ProgressHandler`` and ``FR_GetDllVersion``. Where ``fr_comm`` opens the device,
an actor owns it here: ``FlashRunner("LAN", "ip:port")`` (or a serial port) connects to the bus
of ``LINEBUS_ENDPOINT`` and asks the broker which ``flashrunner`` actor drives that address;
``FlashRunner(bus, service)`` names the actor instead (``bus``: a ``bus.client.Client`` or an
endpoint such as ``tcp://127.0.0.1:7750``). Every failure is an ``FR_Comm_Exception`` with the
linebus code. Files are read and written here, on the caller's machine, and travel over the bus
as bytes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Self

from bus.client import Call, Client
from bus.errors import BusError
from clients._session import BusSession, connect_bus, sibling_client
from clients._vendor import is_bus, vendor_session

__all__ = [
    "FR_Comm_Exception",
    "FR_FileType",
    "FR_GetDllVersion",
    "FR_Logger",
    "FlashRunner",
    "ProgressHandler",
]

VERSION = "linebus fr_comm facade 0.1.0"

#: Added to a device timeout (ms) to get the bus deadline of the call: the device's own timeout
#: must fire first, so the caller gets ``device_timeout`` rather than ``deadline_exceeded``.
_MARGIN_S = 5.0


def FR_GetDllVersion() -> str:
    """Return the version string of this client library.

    ``FlashRunner.FR_GetDllVersion`` gives the actor's.
    """
    return VERSION


class FR_Comm_Exception(Exception):
    """The one exception type of every communication and protocol error.

    Attributes:
        code: Machine-readable: the linebus error code (``device_fault``, ``device_timeout``,
            ``device_unavailable``, ``invalid_arguments``, ``busy``, ``cancelled``,
            ``deadline_exceeded``, ``unavailable``, ``unknown_service`` ...).
        device_code: The device's own error symbol for ``device_fault`` (``ERR_FILE_NOT_FOUND``).
        details: Every machine-readable detail the error carried.

    The original bus error is the ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        code: str = "internal",
        *,
        device_code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.device_code = device_code
        self.details = dict(details or {})

    @classmethod
    def from_bus(cls, exc: BusError) -> FR_Comm_Exception:
        """Wrap a bus error, keeping its code and details."""
        code = getattr(exc, "remote_code", None) or exc.code
        device_code = exc.details.get("device_code")
        return cls(
            exc.message,
            code,
            device_code=device_code if isinstance(device_code, str) else None,
            details=exc.details,
        )

    def __str__(self) -> str:
        extra = f" {self.device_code}" if self.device_code else ""
        return f"[{self.code}{extra}] {self.args[0]}"


class FR_FileType(StrEnum):
    """The file categories of the unit; each has its own area on the device."""

    FRB = "FRB"
    PRJ = "PRJ"
    LIC = "LIC"
    LOG = "LOG"
    LIB = "LIB"


class ProgressHandler:
    """Transfer progress callback: subclass and override ``on_progress``, or pass any callable.

    ``on_progress(percent, done, total)`` is called with monotonic values, ending at 100 when a
    transfer completes. Call ``cancel()`` (from ``on_progress`` or another thread) to stop the
    transfer: the call then raises ``FR_Comm_Exception`` with code ``cancelled``.
    """

    def __init__(self) -> None:
        self.cancelled = False

    def on_progress(self, percent: int, done: int, total: int) -> None:
        """Called for each progress update; the default does nothing."""

    def cancel(self) -> None:
        """Ask for the running transfer to stop."""
        self.cancelled = True


ProgressArg = ProgressHandler | Callable[[int, int, int], Any] | None


class EncryptedData(NamedTuple):
    """The result of ``FR_EncryptData``: send ``header`` to the device before ``payload``."""

    header: bytes
    payload: bytes


class FlashRunner(BusSession):
    """A session with a FlashRunner on the bus, built the vendor's way or the bus's way.

    Vendor-style, as ``fr_comm`` (the bus is ``LINEBUS_ENDPOINT``'s, or ``tcp://127.0.0.1:7750``;
    the keys are the client environment's)::

        FlashRunner("LAN", "192.168.1.100:1234")     # a LAN unit
        FlashRunner("COM3", "115200")                  # a serial unit (the baud rate is the actor's)

    The broker tells which ``flashrunner`` actor drives that address (``lookup``); none:
    ``FR_Comm_Exception`` code ``unknown_service`` (``unavailable`` if it is down).

    Bus-style, naming the actor::

        FlashRunner("tcp://127.0.0.1:7750", "fr1")   # or FlashRunner(client, "fr1")

    The rule: bus-style when ``port`` is a ``bus.client.Client`` or a string with a ZeroMQ
    transport scheme (``tcp://``, ``ipc://``, ``inproc://`` ...); vendor-style otherwise
    (``"LAN"``, a serial port name or a pyserial URL such as ``socket://host:7000``).

    Args:
        port: ``"LAN"`` or a serial port (vendor-style); a ``Client`` or the broker's command
            endpoint (bus-style).
        settings: LAN ``"host:port"`` or the baud rate (vendor-style; a LAN address without a
            port finds the unit on any port of that host); the actor's service name (bus-style).
        subscribe_endpoint: With an endpoint string, where events are read (default: port + 2).
        timeout: Bus deadline, in seconds, of calls that have no device timeout of their own.
        transfer_timeout: Bus deadline, in seconds, of one file transfer.

    Like ``fr_comm.FlashRunner`` it checks the device at once and is best used in a ``with``
    block. Every failure, a bad endpoint and an unreachable broker included, is an
    ``FR_Comm_Exception`` carrying the linebus code. Not thread-safe: use one per thread.
    """

    def __init__(
        self,
        port: Client | str,
        settings: str,
        *,
        subscribe_endpoint: str | None = None,
        timeout: float = 30.0,
        transfer_timeout: float = 600.0,
    ) -> None:
        self._closed = True  # until there is a connection to close
        self.timeout = timeout
        self.transfer_timeout = transfer_timeout
        try:
            if is_bus(port):
                self._bus, self._owned = connect_bus(port, subscribe_endpoint)
                self.service = settings
            else:
                address, what = _vendor_address(port, settings)
                self._bus, self._owned, self.service = vendor_session(
                    "flashrunner", address, what, timeout=timeout
                )
        except BusError as exc:
            raise FR_Comm_Exception.from_bus(exc) from exc
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
            raise FR_Comm_Exception("the FlashRunner session is closed", "closed")
        try:
            return self._bus.call(
                self.service, command, args or {}, timeout=timeout or self.timeout
            )
        except BusError as exc:
            raise FR_Comm_Exception.from_bus(exc) from exc

    def _follow(
        self,
        command: str,
        args: dict[str, Any],
        timeout: float,
        on_update: Callable[[Any], bool | None],
    ) -> Any:
        """Start a long command, feed its progress to ``on_update`` (True = cancel), return its result.

        An exception in ``on_update`` (or Ctrl-C) cancels the command on the actor, then propagates.
        """
        if self._closed:
            raise FR_Comm_Exception("the FlashRunner session is closed", "closed")
        try:
            call: Call = self._bus.start(self.service, command, args, timeout=timeout)
        except BusError as exc:
            raise FR_Comm_Exception.from_bus(exc) from exc
        try:
            for update in call.updates():
                if on_update(update):
                    call.cancel()
                    break
            return call.result()
        except BusError as exc:
            raise FR_Comm_Exception.from_bus(exc) from exc
        except BaseException:
            call.cancel()
            # Cancelled (or ended meanwhile): the caller's exception is what matters.
            with contextlib.suppress(BusError):
                call.result()
            raise

    # ------------------------------------------------------------ commands

    def FR_SendCommand(self, command: str) -> None:
        """Send a complete command frame (``#55*SPING``, ``#GETENGSTATUS``).

        Fetch its answer with FR_GetAnswer.
        """
        self._call("FR_SendCommand", {"command": command})

    def FR_SendCommand_Ex(self, channels: Sequence[int], command: str) -> None:
        """Send ``command`` to ``channels``; the channel header is built for you (one answer per channel)."""
        self._call("FR_SendCommand_Ex", {"channels": list(channels), "command": command})

    def FR_GetAnswer(self, timeout: int) -> str:
        """Return the next answer (text ending in ``>``, or ``!`` for a failure); ``timeout`` in ms.

        The answer queue belongs to the device, shared by every client of the service.
        """
        answer: str = self._call(
            "FR_GetAnswer", {"timeout": int(timeout)}, timeout=timeout / 1000 + _MARGIN_S
        )
        return answer

    def FR_SendFile(
        self, path: str | Path, file_type: FR_FileType | str, progress: ProgressArg = None
    ) -> None:
        """Send the local file ``path`` to the unit's ``file_type`` area, under its base name."""
        source = Path(path)
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise FR_Comm_Exception(
                f"cannot read {source}: {exc}", "invalid_arguments", details={"argument": "path"}
            ) from exc
        args = {"name": source.name, "data": data, "file_type": _file_type(file_type)}
        self._follow("FR_SendFile", args, self.transfer_timeout, _progress_feed(progress))

    def FR_GetFile(
        self,
        name: str,
        dest_dir: str | Path,
        file_type: FR_FileType | str,
        progress: ProgressArg = None,
    ) -> Path:
        """Fetch ``name`` from the unit's ``file_type`` area into the local ``dest_dir``.

        Returns the path of the written file.
        """
        target = Path(dest_dir) / Path(name).name
        args = {"name": name, "file_type": _file_type(file_type)}
        data = self._follow("FR_GetFile", args, self.transfer_timeout, _progress_feed(progress))
        try:
            target.write_bytes(data)
        except OSError as exc:
            raise FR_Comm_Exception(
                f"cannot write {target}: {exc}",
                "invalid_arguments",
                details={"argument": "dest_dir"},
            ) from exc
        return target

    def FR_RunProject(
        self,
        project: str,
        channels: Sequence[int],
        timeout: int,
        callback: Callable[[int, bool], Any] | None = None,
    ) -> dict[int, bool]:
        """Run ``project`` on ``channels``; block until all finish or ``timeout`` (ms) expires.

        ``callback(channel, passed)`` is called as each channel finishes. Returns ``{channel: passed}``.
        Raises ``FR_Comm_Exception`` (code ``device_timeout``, ``details["pending"]``) on timeout.
        """

        def on_update(update: Any) -> None:
            if callback is not None and isinstance(update, dict) and "channel" in update:
                callback(int(update["channel"]), bool(update["passed"]))

        args = {"project": project, "channels": list(channels), "timeout": int(timeout)}
        results = self._follow("FR_RunProject", args, timeout / 1000 + _MARGIN_S, on_update)
        return {int(channel): bool(passed) for channel, passed in results.items()}

    def FR_GetPublicKey(self) -> bytes:
        """Fetch the device's RSA public key (PEM); the actor keeps it for the encryption calls."""
        key: bytes = self._call("FR_GetPublicKey")
        return key

    def FR_EncryptData(self, data: bytes) -> EncryptedData:
        """Encrypt one block with a fresh AES key and IV; returns ``(header, payload)``."""
        result = self._call("FR_EncryptData", {"data": bytes(data)})
        return EncryptedData(result["header"], result["payload"])

    def FR_DynMemBeginEncryption(self) -> bytes:
        """Start a session encryption; returns the header to send to the device once."""
        header: bytes = self._call("FR_DynMemBeginEncryption")
        return header

    def FR_DynMemEncryptData(self, data: bytes) -> bytes:
        """Encrypt the next block of the session (CBC-chained to the previous block)."""
        block: bytes = self._call("FR_DynMemEncryptData", {"data": bytes(data)})
        return block

    def FR_DynMemResetEncryption(self) -> None:
        """End the session encryption."""
        self._call("FR_DynMemResetEncryption")

    def FR_DynMemSendHeader(self, channels: Sequence[int], header: bytes) -> None:
        """Send an encryption header to ``channels`` (linebus extension)."""
        self._call("FR_DynMemSendHeader", {"channels": list(channels), "header": bytes(header)})

    def FR_DynMemWriteEncrypted(self, channels: Sequence[int], address: int, data: bytes) -> None:
        """Write an encrypted block at ``address`` of the dynamic memory (linebus extension)."""
        self._call(
            "FR_DynMemWriteEncrypted",
            {"channels": list(channels), "address": int(address), "data": bytes(data)},
        )

    def FR_DynMemWrite(self, channels: Sequence[int], address: int, data: bytes) -> None:
        """Write plain bytes at ``address`` of the dynamic memory (linebus extension)."""
        self._call(
            "FR_DynMemWrite",
            {"channels": list(channels), "address": int(address), "data": bytes(data)},
        )

    def FR_GetDllVersion(self) -> str:
        """Return the version of the FlashRunner library the actor runs."""
        version: str = self._call("FR_GetDllVersion")
        return version

    def FR_Logger(self) -> FR_Logger:
        """Return a real-time logger of this device (see ``FR_Logger``)."""
        return FR_Logger(self._bus, self.service)


def _vendor_address(port: object, settings: object) -> tuple[str, str]:
    """The device address of ``fr_comm.FlashRunner(port, settings)`` and how to name it."""
    if not isinstance(port, str) or not port.strip():
        raise FR_Comm_Exception(
            f"port must be 'LAN', a serial port name, or a bus endpoint, not {port!r}",
            "invalid_arguments",
            details={"argument": "port"},
        )
    if port.strip().upper() != "LAN":
        return port.strip(), f"the FlashRunner on serial port {port.strip()!r}"
    if not isinstance(settings, str) or not settings.strip():
        raise FR_Comm_Exception(
            f"a LAN FlashRunner needs settings 'host:port', not {settings!r}",
            "invalid_arguments",
            details={"argument": "settings"},
        )
    return settings.strip(), f"the FlashRunner at LAN {settings.strip()}"


def _file_type(file_type: FR_FileType | str) -> str:
    try:
        return FR_FileType(
            file_type.value if isinstance(file_type, Enum) else str(file_type).upper()
        ).value
    except ValueError:
        raise FR_Comm_Exception(
            f"unknown file type {file_type!r}",
            "invalid_arguments",
            details={"argument": "file_type"},
        ) from None


def _progress_feed(progress: ProgressArg) -> Callable[[Any], bool]:
    def on_update(update: Any) -> bool:
        if progress is None or not isinstance(update, dict):
            return False
        done, total = int(update.get("done", 0)), int(update.get("total", 0))
        percent = 100 if total == 0 else done * 100 // total
        if isinstance(progress, ProgressHandler):
            progress.on_progress(percent, done, total)
            return progress.cancelled
        progress(percent, done, total)
        return False

    return on_update


class FR_Logger(BusSession):
    """The device's real-time log, from the ``<service>.log`` events the actor publishes (LAN units).

    ::

        with FR_Logger(bus, "fr1") as logger:     # subscribed from here on
            for line in logger.lines(timeout=5):   # ends after 5 s without a line
                print(line)

    Or in the background: ``logger.start(print)`` ... ``logger.stop()`` (runs its own bus
    connection in a thread). Lines published while nobody subscribed are not replayed.
    """

    def __init__(
        self, bus: Client | str, service: str, *, subscribe_endpoint: str | None = None
    ) -> None:
        try:
            self._bus, self._owned = connect_bus(bus, subscribe_endpoint)
        except BusError as exc:
            raise FR_Comm_Exception.from_bus(exc) from exc
        self.service = service
        self.missed = 0
        self._sub: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def open(self, timeout: float = 5.0) -> None:
        """Subscribe now, and wait until the broker forwards (lines after this are received)."""
        if self._sub is not None:
            return
        try:
            sub = self._bus.subscribe(f"{self.service}.log")
            sub.wait_ready(timeout)
        except BusError as exc:
            raise FR_Comm_Exception.from_bus(exc) from exc
        self._sub = sub

    def read_line(self, timeout: float | None = None) -> str | None:
        """Return the next log line, or None if none comes within ``timeout`` seconds."""
        self.open()
        while True:
            try:
                event = self._sub.next(timeout)
            except BusError as exc:  # the broker refused our key meanwhile
                raise FR_Comm_Exception.from_bus(exc) from exc
            if event is None:
                return None
            if event.topic != f"{self.service}.log" or not isinstance(event.data, dict):
                continue
            self.missed += event.missed
            return str(event.data.get("line", ""))

    def lines(self, timeout: float | None = None) -> Iterator[str]:
        """Yield log lines until none comes within ``timeout`` seconds (None: forever)."""
        while (line := self.read_line(timeout)) is not None:
            yield line

    def __iter__(self) -> Iterator[str]:
        return self.lines()

    def start(self, callback: Callable[[str], Any], ready_timeout: float = 5.0) -> None:
        """Call ``callback(line)`` for each log line from a background thread until ``stop()``."""
        if self._thread is not None:
            raise FR_Comm_Exception("the logger is already started", "invalid_arguments")
        ready = threading.Event()
        errors: list[BaseException] = []
        self._stop.clear()

        def run() -> None:
            try:
                with sibling_client(self._bus) as own:
                    reader = FR_Logger(own, self.service)
                    try:
                        reader.open(ready_timeout)
                    finally:
                        ready.set()
                    while not self._stop.is_set():
                        line = reader.read_line(0.1)
                        if line is not None:
                            callback(line)
                    reader.close()
            except BusError as exc:
                errors.append(FR_Comm_Exception.from_bus(exc))
                ready.set()
            except BaseException as exc:
                errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name=f"FR_Logger {self.service}", daemon=True)
        self._thread.start()
        ready.wait(ready_timeout + 1.0)
        if errors:
            self._thread = None
            raise errors[0]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread started by ``start``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _release(self) -> None:
        """Unsubscribe and stop the thread (``close`` is idempotent)."""
        self.stop()
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def __enter__(self) -> Self:
        self.open()
        return self
