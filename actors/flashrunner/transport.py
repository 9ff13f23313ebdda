"""The one seam between the FlashRunner driver and the bytes: a small async ``Transport`` protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["BaudrateSwitchable", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """A byte stream to the device. Every method raises ``OSError`` when the link fails."""

    @property
    def description(self) -> str:
        """Where the link goes (``127.0.0.1:1234``, ``/dev/ttyUSB0@115200``), for errors and logs."""
        ...

    async def open(self) -> None:
        """Connect; may be called again after ``close`` to reconnect."""
        ...

    async def send(self, data: bytes) -> None:
        """Write all of ``data``; once called, the bytes go out even if the caller is cancelled."""
        ...

    async def receive(self) -> bytes:
        """Return the next bytes from the device, or ``b""`` when the link closed."""
        ...

    async def close(self) -> None:
        """Disconnect; idempotent."""
        ...


@runtime_checkable
class BaudrateSwitchable(Protocol):
    """A transport whose line speed can change (serial ports)."""

    async def set_baudrate(self, baudrate: int) -> None:
        """Reopen the port at ``baudrate``."""
        ...
