"""The simulator's side of the robot handshakes (flux.md §1.2, §1.3), over asyncio streams.

``accept`` runs protocol 2 (banner ``FLUX0002``, RSA, AES-CFB8) for a default device, or
protocol 3 (banner ``FLUX0003``, TLS, key handshake; ``actors.fluxfamily.tls``) for a device set
``bare=Y``, and returns the session's stream. The camera port speaks protocol 3 too.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import structlog

from actors.flux.protocol import ServerHandshake
from actors.flux.sim_device import SimDevice
from actors.fluxfamily import tls
from actors.fluxfamily.crypto import AesStream

__all__ = ["Accepted", "accept", "accept_tls"]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Accepted:
    """A handshaken session: its stream, session bytes that came with the handshake, protocol."""

    stream: AesStream | tls.TlsStream
    leftover: bytes
    protocol: int


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    device: SimDevice,
    context: ssl.SSLContext | None,
) -> Accepted | None:
    """Run the device's handshake: protocol 3 when ``context`` is given, else 2.

    Returns None when the client was refused (the refusal is flushed) or left.
    """
    if context is not None:
        return await accept_tls(reader, writer, device, context)
    handshake = ServerHandshake(device.slave_key, device.trusted_key)
    writer.write(handshake.start())
    while not handshake.done:
        data = await reader.read(65536)
        if not data:
            return None
        writer.write(handshake.receive(data))
        if handshake.failed:
            await writer.drain()
            log.info("flux_sim_handshake_refused", protocol=2, reason=handshake.failed)
            return None
    assert handshake.stream is not None
    return Accepted(handshake.stream, b"", 2)


async def accept_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    device: SimDevice,
    context: ssl.SSLContext,
) -> Accepted | None:
    """Protocol 3: banner, TLS, challenge, access id.

    Like the firmware, an untrusted access id is refused but the signature is not required;
    whether it verified is logged (``flux_sim_tls_identified``).
    """
    identify = tls.ServerIdentify(device.uuid, device.trusted_key)
    if not await tls.server_handshake(reader, writer, context, identify):
        log.info("flux_sim_handshake_refused", protocol=3, reason=identify.failed or "left")
        return None
    log.info("flux_sim_tls_identified", signature_ok=identify.signature_ok)
    return Accepted(tls.TlsStream(), identify.leftover, 3)
