"""Sans-io FLUX robot protocol on TCP 23811 (flux.md §1.2): banner and RSA handshake.

Nothing here touches a socket. Each state machine is fed the bytes that arrived (any split, any
size: partial input is normal) and returns the bytes to send.

* ``ClientHandshake`` / ``ServerHandshake``: protocol 2, banner ``FLUX0002``, RSA handshake,
  then an ``AesStream`` for the rest of the session (§1.2).

Protocol 3 (banner ``FLUX0003``, TLS, a device set ``bare=Y``, §1.3) opens like the camera port,
so it lives with the other TLS channel pieces in ``actors.fluxfamily.tls``; ``HandshakeError``
is that module's, shared by both protocols.

The frames that follow the handshake (length prefixes, binary bodies, ``error ...`` answers) are
the ones device management speaks too: they live in ``actors.fluxfamily.framing``. Command words
and reply shapes of each FluxRobot method live in ``actors.flux.commands``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.fluxfamily import crypto
from actors.fluxfamily.tls import HandshakeError

__all__ = [
    "BANNER_AES",
    "CHALLENGE_SIZE",
    "STATUS_SIZE",
    "ClientHandshake",
    "HandshakeError",
    "ServerHandshake",
    "status_bytes",
]

BANNER_AES = b"FLUX0002"
CHALLENGE_SIZE = 128
STATUS_SIZE = 16


class ClientHandshake:
    """The client side of the protocol-2 handshake (§1.2).

    Feed it the device's bytes with ``receive``; send what it returns. When ``done`` is true,
    ``stream`` holds the session ciphers and ``leftover`` any (decrypted) session bytes that
    arrived with the handshake.

    Args:
        client_key: The client's private key; the device must trust its public half.
        device_key: The device's slave public key, when known from discovery. Its signature over
            the challenge is then checked; without it 128 bytes are assumed and not checked,
            as fluxclient does for direct connections.
    """

    def __init__(
        self, client_key: rsa.RSAPrivateKey, device_key: rsa.RSAPublicKey | None = None
    ) -> None:
        self._key = client_key
        self._device_key = device_key
        self._buffer = bytearray()
        self._state = "banner"
        self.stream: crypto.AesStream | None = None
        self.leftover = b""

    @property
    def done(self) -> bool:
        """True once the session key is installed."""
        return self._state == "done"

    def receive(self, data: bytes) -> bytes:
        """Consume device bytes; return the bytes to send now (possibly empty).

        Raises:
            HandshakeError: Bad banner, bad device signature, or a refusal (``AUTH_ERROR`` ...).
        """
        self._buffer += data
        out = b""
        if self._state == "banner" and len(self._buffer) >= len(BANNER_AES):
            banner = bytes(self._buffer[:8])
            del self._buffer[:8]
            if not banner.startswith(b"FLUX"):
                raise HandshakeError(
                    f"bad banner {banner!r}", ("PROTOCOL_ERROR", "MAGICNUMBER_ERROR")
                )
            if banner != BANNER_AES:
                raise HandshakeError(
                    f"protocol {banner[4:].decode(errors='replace')} not supported",
                    ("NOT_SUPPORT",),
                )
            self._state = "challenge"
        sig_size = self._device_key.key_size // 8 if self._device_key else 128
        if self._state == "challenge" and len(self._buffer) >= sig_size + CHALLENGE_SIZE:
            signature = bytes(self._buffer[:sig_size])
            challenge = bytes(self._buffer[sig_size : sig_size + CHALLENGE_SIZE])
            del self._buffer[: sig_size + CHALLENGE_SIZE]
            if self._device_key and not crypto.verify(self._device_key, signature, challenge):
                raise HandshakeError("device signature does not verify", ("REMOTE_IDENTIFY_ERROR",))
            out = crypto.access_id(self._key) + crypto.sign(self._key, challenge)
            self._state = "status"
        if self._state == "status" and len(self._buffer) >= STATUS_SIZE:
            status = bytes(self._buffer[:STATUS_SIZE]).rstrip(b"\x00 ").decode(errors="replace")
            del self._buffer[:STATUS_SIZE]
            if status != "OK":
                raise HandshakeError(
                    f"handshake refused: {status}", tuple(status.split()) or ("UNKNOWN_ERROR",)
                )
            self._state = "session_key"
        size = self._key.key_size // 8
        if self._state == "session_key" and len(self._buffer) >= size:
            try:
                secret = crypto.oaep_decrypt(self._key, bytes(self._buffer[:size]))
            except ValueError as exc:
                raise HandshakeError("session key does not decrypt", ("PROTOCOL_ERROR",)) from exc
            del self._buffer[:size]
            if len(secret) < 48:
                raise HandshakeError("session key too short", ("PROTOCOL_ERROR",))
            self.stream = crypto.AesStream(secret[:32], secret[32:48])
            self.leftover = self.stream.decrypt(bytes(self._buffer))
            self._buffer.clear()
            self._state = "done"
        return out


def status_bytes(text: str) -> bytes:
    """The 16-byte NUL-padded handshake status of protocol 2 (``OK``, ``AUTH_ERROR`` ...)."""
    return text.encode().ljust(STATUS_SIZE, b"\x00")


class ServerHandshake:
    """The device side of the protocol-2 handshake, for the simulator.

    Args:
        device_key: The device's (slave) private key; it signs the challenge.
        lookup: Maps a 20-byte access id to the trusted public key, or None when not trusted.
        random_bytes: Source of randomness (tests pass a fixed one).
    """

    def __init__(
        self,
        device_key: rsa.RSAPrivateKey,
        lookup: Callable[[bytes], rsa.RSAPublicKey | None],
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._key = device_key
        self._lookup = lookup
        self._random = random_bytes
        self._challenge = random_bytes(CHALLENGE_SIZE)
        self._buffer = bytearray()
        self._client: rsa.RSAPublicKey | None = None
        self.stream: crypto.AesStream | None = None
        self.failed: str | None = None
        self.client_access_id = b""

    @property
    def done(self) -> bool:
        """True once the session key was sent."""
        return self.stream is not None

    def start(self) -> bytes:
        """The first flight: banner, signature over the challenge, challenge (one write)."""
        return BANNER_AES + crypto.sign(self._key, self._challenge) + self._challenge

    def receive(self, data: bytes) -> bytes:
        """Consume client bytes; return what to send. After a failure, send it and close."""
        if self.failed or self.done:
            return b""
        self._buffer += data
        if self._client is None and len(self._buffer) >= 20:
            self.client_access_id = bytes(self._buffer[:20])
            self._client = self._lookup(self.client_access_id)
            if self._client is None:
                return self._fail("AUTH_ERROR")  # unknown id: refused before the signature arrives
        if self._client is None:
            return b""
        expected = 20 + self._client.key_size // 8
        if len(self._buffer) > expected:
            return self._fail("PROTOCOL_ERROR")
        if len(self._buffer) < expected:
            return b""
        if not crypto.verify(self._client, bytes(self._buffer[20:expected]), self._challenge):
            return self._fail("AUTH_ERROR")
        secret = self._random(48)
        self.stream = crypto.AesStream(secret[:32], secret[32:])
        self._buffer.clear()
        return status_bytes("OK") + crypto.oaep_encrypt(self._client, secret)

    def _fail(self, symbol: str) -> bytes:
        self.failed = symbol
        return status_bytes(symbol)
