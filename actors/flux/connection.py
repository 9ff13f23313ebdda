"""One authenticated robot session over asyncio streams: the thin I/O shell of ``protocol``.

The device's 8-byte banner picks the protocol, as in fluxclient's ``FluxRobot``: ``FLUX0002``
runs the RSA handshake and AES-CFB8 stream of ``actors.flux.protocol``; ``FLUX0003`` (a device
set ``bare=Y``) runs TLS and the key handshake of ``actors.fluxfamily.tls``. After either the
frames are the same.

It raises plain ``OSError`` / ``TimeoutError`` / ``HandshakeError`` / ``ProtocolViolation``;
mapping them to ``bus.errors`` is the driver's job (one boundary).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import uuid as uuidlib
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux.protocol import ClientHandshake, HandshakeError
from actors.fluxfamily import tls
from actors.fluxfamily.framing import AnswerEvent, AnswerReader, encode_command

__all__ = ["RobotConnection"]

_READ_SIZE = 65536
_BANNER_SIZE = 8


class SessionStream(Protocol):
    """What a session pushes its bytes through: ``crypto.AesStream`` or ``tls.TlsStream``."""

    def encrypt(self, data: bytes) -> bytes:
        """Bytes to write for ``data``."""
        ...

    def decrypt(self, data: bytes) -> bytes:
        """``data`` as read, made plain."""
        ...


class RobotConnection:
    """An open, handshaken robot session (protocol 2 or 3); build it with ``RobotConnection.open``.

    ``protocol`` is 2 or 3, as the device's banner said.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stream: SessionStream,
        leftover: bytes,
        protocol: int = 2,
    ) -> None:
        self.protocol = protocol
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
        device_uuid: uuidlib.UUID | None = None,
        master_key: rsa.RSAPublicKey | None = None,
    ) -> RobotConnection:
        """Connect and run the handshake the banner asks for; the caller bounds it with a timeout.

        Args:
            host, port: The robot port.
            client_key: Our private key; the device must trust it.
            device_key: Protocol 2: the device's slave key (discovery v1) to check its signature.
            device_uuid: Protocol 3: the uuid the certificate must name (a pin).
            master_key: Protocol 3: the public key the certificate must carry (a pin).

        Raises:
            OSError: Connect or I/O failed, or the device hung up.
            HandshakeError: The device refused us, failed a pin, or spoke another protocol.
        """
        reader, writer = await asyncio.open_connection(host, port)
        try:
            try:
                banner = await reader.readexactly(_BANNER_SIZE)
            except asyncio.IncompleteReadError as exc:
                raise ConnectionResetError(
                    "device closed the connection before its banner"
                ) from exc
            if banner == tls.BANNER_TLS:
                try:
                    await tls.client_handshake(
                        reader, writer, client_key, expect_uuid=device_uuid, expect_key=master_key
                    )
                except asyncio.IncompleteReadError as exc:
                    raise ConnectionResetError(
                        "device closed the connection during the handshake"
                    ) from exc
                except ssl.SSLError as exc:
                    raise HandshakeError(
                        f"TLS handshake failed: {exc}", ("PROTOCOL_ERROR",)
                    ) from exc
                return cls(reader, writer, tls.TlsStream(), b"", protocol=3)
            handshake = ClientHandshake(client_key, device_key)
            data = banner
            while True:
                reply = handshake.receive(data)
                if reply:
                    writer.write(reply)
                    await writer.drain()
                if handshake.done:
                    break
                data = await reader.read(_READ_SIZE)
                if not data:
                    raise ConnectionResetError("device closed the connection during the handshake")
        except BaseException:
            writer.close()
            raise
        assert handshake.stream is not None
        return cls(reader, writer, handshake.stream, handshake.leftover, protocol=2)

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

    async def read_raw(self, timeout_s: float) -> bytes:
        """Unframed device bytes (raw mode): what the frame reader still holds, else the next read.

        Raises:
            TimeoutError: Nothing arrived within ``timeout_s``.
            ConnectionResetError: The device closed the connection.
        """
        held = self._answers.take_buffer()
        if held:
            return held
        async with asyncio.timeout(timeout_s):
            data = await self._reader.read(_READ_SIZE)
        if not data:
            raise ConnectionResetError("device closed the connection")
        return self._stream.decrypt(data)

    def feed_frames(self, data: bytes) -> None:
        """Give back bytes read raw that are frames again (the device left raw mode)."""
        self._events.extend(self._answers.feed(data))

    def close(self) -> None:
        """Close the socket (no goodbye exists in the protocol)."""
        with contextlib.suppress(Exception):  # closing a broken transport may raise anything
            self._writer.close()
