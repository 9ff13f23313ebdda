"""The LAN transport: a TCP connection to the FlashRunner's command port."""

from __future__ import annotations

import asyncio
import socket

from actors.flashrunner.config import DEFAULT_PORT
from bus.errors import InvalidArguments

__all__ = ["TcpTransport", "parse_address"]

_READ_BYTES = 64 * 1024


def parse_address(address: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split ``host:port`` (``fr_comm``'s LAN settings string); the port defaults to 1234.

    Raises:
        InvalidArguments: The port is not a number in 1..65535.
    """
    host, sep, port_text = address.strip().rpartition(":")
    if not sep:
        host, port_text = address.strip(), str(default_port)
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not host or not 0 < port < 65536:
        raise InvalidArguments(
            f"bad LAN address {address!r}; expected host:port", details={"argument": "address"}
        )
    return host, port


class TcpTransport:
    """Talk to a FlashRunner over TCP.

    Args:
        host: Device IP or name.
        port: Command port.
        connect_timeout_s: Wait for the TCP handshake.
    """

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 3.0) -> None:
        self.host = host
        self.port = port
        self._connect_timeout_s = connect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def description(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    async def open(self) -> None:
        """Connect, with TCP keep-alive so a dead peer is noticed on an idle link."""
        await self.close()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as exc:
            raise OSError(f"connect to {self.description} timed out") from exc
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def send(self, data: bytes) -> None:
        """Queue ``data`` (synchronously, so a cancelled caller cannot cut a frame) and drain."""
        if self._writer is None:
            raise OSError(f"{self.description}: not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self) -> bytes:
        """Return the next bytes, ``b""`` on EOF."""
        if self._reader is None:
            raise OSError(f"{self.description}: not connected")
        return await self._reader.read(_READ_BYTES)

    async def close(self) -> None:
        """Close the socket without waiting for the peer (it may be gone)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()
