"""The simulator's camera server on TCP 23812 (flux.md §1.3): protocol 3, then JPEG frames.

Each connection gets the banner, TLS with the device certificate and the key handshake
(``sim_handshake.accept_tls``, as the robot port of a ``bare`` device); an untrusted key gets
``AUTH_ERROR`` and is closed. Then ``f`` sends one frame, ``s+`` starts a stream
of ``fps`` frames per second and ``s-`` stops it. Frames are real baseline JPEGs
(``actors.simsupport.jpeg``, 64 x 48, a bar that moves with the time). **Assumption**: the
firmware's answer to any other command is not documented; the simulator ignores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import structlog

from actors.flux.camera import encode_image
from actors.flux.sim_device import SimDevice
from actors.flux.sim_handshake import accept_tls
from actors.fluxfamily.framing import CommandReader, ProtocolViolation, Text
from actors.simsupport.jpeg import camera_frame

__all__ = ["CameraServer"]

log = structlog.get_logger()


class CameraServer:
    """Serves camera connections for one ``SimDevice``.

    Args:
        device: The device (its trust list decides who may connect).
        tls: Server TLS context holding the device certificate.
        fps: Frames per second while streaming.
    """

    def __init__(self, device: SimDevice, tls: ssl.SSLContext, fps: float = 5.0) -> None:
        self.device = device
        self.tls = tls
        self.fps = fps
        self.frames_sent = 0

    def frame(self) -> bytes:
        """The current picture."""
        return camera_frame(0, time.time())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it closes."""
        stream: asyncio.Task[None] | None = None
        try:
            accepted = await accept_tls(reader, writer, self.device, self.tls)
            if accepted is None:
                return  # refused (AUTH_ERROR was sent) or the client left
            commands = CommandReader()
            pending = commands.feed(accepted.leftover)
            while True:
                for event in pending:
                    if not isinstance(event, Text):
                        continue
                    word = event.text.rstrip("\x00\n\r ")
                    if word == "f":
                        self._send(writer)
                    elif word == "s+" and stream is None:
                        stream = asyncio.create_task(self._stream(writer), name="flux-sim-camera")
                    elif word == "s-" and stream is not None:
                        stream.cancel()
                        stream = None
                await writer.drain()
                data = await reader.read(4096)
                if not data:
                    return
                pending = commands.feed(data)
        except (OSError, ssl.SSLError, ProtocolViolation) as exc:
            log.info("flux_sim_camera_closed", reason=str(exc))
        finally:
            if stream is not None:
                stream.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await stream
            with contextlib.suppress(Exception):  # the peer may be gone already
                writer.close()

    def _send(self, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_image(self.frame()))
        self.frames_sent += 1

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        while True:
            self._send(writer)
            await writer.drain()
            await asyncio.sleep(1 / self.fps)
