"""One authenticated robot session over asyncio streams: the thin I/O shell of ``protocol``.

It raises plain ``OSError`` / ``TimeoutError`` / ``HandshakeError`` / ``ProtocolViolation``;
mapping them to ``bus.errors`` is the driver's job (one boundary).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux.protocol import ClientHandshake
from actors.fluxfamily import crypto
from actors.fluxfamily.framing import AnswerEvent, AnswerReader, encode_command

__all__ = ["RobotConnection"]

_READ_SIZE = 65536


class RobotConnection:
    """An open, handshaken protocol-2 session; build it with ``RobotConnection.open``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stream: crypto.AesStream,
        leftover: bytes,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._stream = stream
        self._answers = AnswerReader()
        self._events: collections.deque[AnswerEvent] = collections.deque(
            self._answers.feed(leftover)
        )

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        client_key: rsa.RSAPrivateKey,
        *,
        device_key: rsa.RSAPublicKey | None = None,
    ) -> RobotConnection:
        """Connect and run the handshake; the caller bounds it with a timeout.

        Raises:
            OSError: Connect or I/O failed, or the device hung up.
            HandshakeError: The device refused us or spoke another protocol.
        """
        reader, writer = await asyncio.open_connection(host, port)
        try:
            handshake = ClientHandshake(client_key, device_key)
            while not handshake.done:
                data = await reader.read(_READ_SIZE)
                if not data:
                    raise ConnectionResetError("device closed the connection during the handshake")
                reply = handshake.receive(data)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except BaseException:
            writer.close()
            raise
        assert handshake.stream is not None
        return cls(reader, writer, handshake.stream, handshake.leftover)

    async def send_command(self, text: str, timeout_s: float) -> None:
        """Send one framed, encrypted text command."""
        await self.send_raw(encode_command(text), timeout_s)

    async def send_raw(self, data: bytes, timeout_s: float) -> None:
        """Send bytes unframed (upload bodies), encrypted."""
        self._writer.write(self._stream.encrypt(data))
        async with asyncio.timeout(timeout_s):
            await self._writer.drain()

    async def next_event(self, timeout_s: float) -> AnswerEvent:
        """The next decoded answer event.

        Raises:
            TimeoutError: Nothing complete arrived within ``timeout_s``.
            ConnectionResetError: The device closed the connection.
            ProtocolViolation: The device broke the framing.
        """
        async with asyncio.timeout(timeout_s):
            while not self._events:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    raise ConnectionResetError("device closed the connection")
                self._events.extend(self._answers.feed(self._stream.decrypt(data)))
        return self._events.popleft()

    def close(self) -> None:
        """Close the socket (no goodbye exists in the protocol)."""
        with contextlib.suppress(Exception):  # closing a broken transport may raise anything
            self._writer.close()
