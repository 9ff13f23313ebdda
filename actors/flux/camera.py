"""The FLUX camera port, TCP 23812 (flux.md §1.3): protocol 3 only, then frames of JPEG.

After the protocol-3 handshake (``actors.fluxfamily.tls``) the client sends text commands with
the robot's client → device framing: ``f`` (one frame), ``s+`` (start streaming), ``s-`` (stop).
The device answers with images only, each a uint32 little-endian length and that many JPEG bytes
(fluxclient's ``FluxCamera``, firmware ``interfaces/camera.py``).

``ImageReader`` and ``encode_image`` are the sans-io halves; ``CameraLink`` is one client
connection over asyncio streams. Like ``RobotConnection`` it raises plain ``OSError`` /
``TimeoutError`` / ``HandshakeError`` / ``ProtocolViolation``; the driver maps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import uuid as uuidlib

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.fluxfamily import tls
from actors.fluxfamily.framing import ProtocolViolation, encode_command

__all__ = [
    "FRAME",
    "MAX_IMAGE",
    "STREAM_OFF",
    "STREAM_ON",
    "CameraLink",
    "ImageReader",
    "encode_image",
]

#: The three commands, framed (fluxclient sends exactly these bytes).
FRAME = encode_command("f")
STREAM_ON = encode_command("s+")
STREAM_OFF = encode_command("s-")
#: A length field above this is taken for a broken stream, not an image to buffer.
MAX_IMAGE = 16 << 20
_LENGTH = struct.Struct("<I")


def encode_image(jpeg: bytes) -> bytes:
    """One image as the device sends it: uint32-LE length, then the bytes."""
    return _LENGTH.pack(len(jpeg)) + jpeg


class ImageReader:
    """Decode device → client camera bytes into whole images (any split, any size)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every image now complete.

        Raises:
            ProtocolViolation: A length field larger than ``MAX_IMAGE``.
        """
        self._buffer += data
        images: list[bytes] = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size > MAX_IMAGE:
                raise ProtocolViolation(f"camera image of {size} bytes exceeds {MAX_IMAGE}")
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                break
            images.append(bytes(self._buffer[_LENGTH.size : end]))
            del self._buffer[:end]
        return images


class CameraLink:
    """One authenticated camera connection; build it with ``CameraLink.open``."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, device: uuidlib.UUID
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._images = ImageReader()
        self._ready: list[bytes] = []
        self.device = device
        self.streaming = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        client_key: rsa.RSAPrivateKey,
        *,
        device_uuid: uuidlib.UUID | None = None,
        master_key: rsa.RSAPublicKey | None = None,
    ) -> CameraLink:
        """Connect, check the banner and run the protocol-3 handshake; the caller bounds it.

        ``device_uuid`` / ``master_key`` pin the device as for the robot (``tls.ClientIdentify``).

        Raises:
            OSError: Connect or I/O failed, or the device hung up.
            HandshakeError: Not a protocol-3 port, a pin mismatch, or the device refused our key.
        """
        reader, writer = await asyncio.open_connection(host, port)
        try:
            try:
                banner = await reader.readexactly(len(tls.BANNER_TLS))
                if banner != tls.BANNER_TLS:
                    raise tls.HandshakeError(
                        f"not a FLUX camera port (banner {banner!r})",
                        ("PROTOCOL_ERROR", "MAGICNUMBER_ERROR"),
                    )
                device = await tls.client_handshake(
                    reader, writer, client_key, expect_uuid=device_uuid, expect_key=master_key
                )
            except asyncio.IncompleteReadError as exc:
                raise ConnectionResetError("device closed the camera connection") from exc
            except ssl.SSLError as exc:
                raise tls.HandshakeError(
                    f"TLS handshake failed: {exc}", ("PROTOCOL_ERROR",)
                ) from exc
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, device)

    async def _send(self, data: bytes, timeout_s: float) -> None:
        self._writer.write(data)
        async with asyncio.timeout(timeout_s):
            await self._writer.drain()

    async def request_frame(self, timeout_s: float) -> None:
        """Ask for one frame (``f``); it arrives through ``next_image``."""
        await self._send(FRAME, timeout_s)

    async def start_stream(self, timeout_s: float) -> None:
        """Ask for a continuous stream (``s+``)."""
        await self._send(STREAM_ON, timeout_s)
        self.streaming = True

    async def stop_stream(self, timeout_s: float) -> None:
        """Stop the stream (``s-``); images already on their way still arrive."""
        await self._send(STREAM_OFF, timeout_s)
        self.streaming = False

    async def next_image(self, timeout_s: float) -> bytes:
        """The next whole image.

        Raises:
            TimeoutError: None arrived within ``timeout_s``.
            ConnectionResetError: The device closed the connection.
            ProtocolViolation: The device broke the framing.
        """
        async with asyncio.timeout(timeout_s):
            while not self._ready:
                data = await self._reader.read(65536)
                if not data:
                    raise ConnectionResetError("device closed the camera connection")
                self._ready.extend(self._images.feed(data))
        return self._ready.pop(0)

    async def frame(self, timeout_s: float) -> bytes:
        """Request one frame and return it (not while streaming: frames would mix)."""
        await self.request_frame(timeout_s)
        return await self.next_image(timeout_s)

    def close(self) -> None:
        """Close the socket (the protocol has no goodbye)."""
        with contextlib.suppress(Exception):  # closing a broken TLS transport may raise anything
            self._writer.close()
