"""The USB/serial transport: pyserial, read by one thread that hands bytes to the event loop.

pyserial blocks, so a reader thread owns ``read()`` and posts what it gets into an asyncio queue
(no byte is lost to a cancelled ``to_thread`` call). Writes run on one dedicated writer thread:
a write finishes even if the awaiting task is cancelled (a frame is never cut in half), and the
next write queues behind it instead of interleaving its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import serial

__all__ = ["BAUD_HIGH", "BAUD_LOW", "SerialTransport"]

BAUD_LOW = 115_200
BAUD_HIGH = 3_000_000
_POLL_S = 0.05  # read timeout of the reader thread: how fast it notices close()

_Item = bytes | BaseException


class SerialTransport:
    """Talk to a FlashRunner over a serial port (``/dev/ttyUSB0``, ``COM3``, or a pty).

    Args:
        port: Device path or name.
        baudrate: Line speed to open at; FlashRunner starts at 115200.
    """

    def __init__(self, port: str, baudrate: int = BAUD_LOW) -> None:
        self.port = port
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None
        self._queue: asyncio.Queue[_Item] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"serial-writer {port}")

    @property
    def description(self) -> str:
        """``port@baudrate``."""
        return f"{self.port}@{self.baudrate}"

    async def open(self) -> None:
        """Open the port and start the reader thread."""
        await self.close()
        try:
            port = await asyncio.to_thread(
                serial.Serial, self.port, self.baudrate, timeout=_POLL_S, write_timeout=10.0
            )
        except (serial.SerialException, ValueError) as exc:
            raise OSError(f"open {self.description}: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._serial, self._queue, self._stop = port, asyncio.Queue(), threading.Event()
        self._thread = threading.Thread(
            target=_read_loop,
            args=(port, self._queue, loop, self._stop),
            name=f"serial-reader {self.port}",
            daemon=True,
        )
        self._thread.start()

    async def send(self, data: bytes) -> None:
        """Write all of ``data`` from a worker thread."""
        port = self._serial
        if port is None:
            raise OSError(f"{self.description}: not open")
        try:
            # Shielded: cancelling the wrapper of a job not yet started would cancel the job itself.
            await asyncio.shield(
                asyncio.get_running_loop().run_in_executor(self._writer, _write_all, port, data)
            )
        except serial.SerialException as exc:
            raise OSError(f"write {self.description}: {exc}") from exc

    async def receive(self) -> bytes:
        """Return the next bytes the reader thread got; raise OSError if the port failed."""
        if self._queue is None:
            raise OSError(f"{self.description}: not open")
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise OSError(f"read {self.description}: {item}") from item
        return item

    async def close(self) -> None:
        """Stop the reader thread, then close the port; idempotent."""
        port, thread, self._serial, self._thread = self._serial, self._thread, None, None
        self._stop.set()
        if self._queue is not None:
            self._queue.put_nowait(b"")  # a receive() still waiting sees EOF, as a socket would
        if port is not None:
            # Not every platform supports it; the read timeout ends the thread anyway.
            with contextlib.suppress(AttributeError, OSError, serial.SerialException):
                port.cancel_read()
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        if port is not None:
            # Through the writer thread, so the port closes after the writes queued before it.
            await asyncio.get_running_loop().run_in_executor(self._writer, port.close)

    async def set_baudrate(self, baudrate: int) -> None:
        """Reopen the port at ``baudrate`` (after the device confirmed the switch)."""
        self.baudrate = baudrate
        await self.open()


def _write_all(port: serial.Serial, data: bytes) -> None:
    port.write(data)
    port.flush()


def _read_loop(
    port: serial.Serial,
    queue: asyncio.Queue[_Item],
    loop: asyncio.AbstractEventLoop,
    stop: threading.Event,
) -> None:
    def post(item: _Item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:
            stop.set()  # the loop is closed: nobody is listening any more

    while not stop.is_set():
        try:
            data = port.read(max(1, port.in_waiting))
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's read on a port closed under it.
            if not stop.is_set():
                post(exc)
            return
        if data:
            post(data)
