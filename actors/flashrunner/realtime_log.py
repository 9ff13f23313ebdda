"""The real-time logger client (``fr_comm.FR_Logger``): log lines from the device's logger port.

Assumption (reference/flashrunner.md §9, §12 item 5): the logger is a second TCP port on the same
host that streams UTF-8 text lines ended by LF; the port is configurable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from bus.errors import DeviceUnavailable

__all__ = ["FlashRunnerLogger"]

_MAX_LINE = 64 * 1024


class FlashRunnerLogger:
    """Stream the device's log, one line at a time.

    ::

        async with FlashRunnerLogger("192.168.1.100", 1235) as logger:
            async for line in logger:
                print(line)

    Iteration ends when ``close()`` is called; a dropped connection raises ``DeviceUnavailable``.
    """

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 3.0) -> None:
        self.host = host
        self.port = port
        self._connect_timeout_s = connect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closed = False

    async def open(self) -> None:
        """Connect to the logger port.

        Raises:
            DeviceUnavailable: The port cannot be reached.
        """
        self._closed = False
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, limit=_MAX_LINE
                )
        except (OSError, TimeoutError) as exc:
            raise DeviceUnavailable(
                f"logger {self.host}:{self.port}: connect failed: {exc}"
            ) from exc

    async def close(self) -> None:
        """Disconnect; a running iteration ends."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.transport.abort()

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

    async def lines(self) -> AsyncIterator[str]:
        """Yield each log line without its line end."""
        reader = self._reader
        if reader is None:
            raise DeviceUnavailable(f"logger {self.host}:{self.port}: not open")
        while True:
            try:
                raw = await reader.readline()
            except (OSError, ValueError) as exc:  # ValueError: a line longer than the limit
                if self._closed:
                    return
                raise DeviceUnavailable(f"logger {self.host}:{self.port}: {exc}") from exc
            if not raw.endswith(b"\n"):
                if self._closed:
                    return
                raise DeviceUnavailable(f"logger {self.host}:{self.port}: connection closed")
            yield raw.decode("utf-8", "replace").rstrip("\r\n")

    def __aiter__(self) -> AsyncIterator[str]:
        return self.lines()
