"""The FLUX TLS channels (flux.md §1.3): banner ``FLUX0003``, TLS, then a key handshake inside.

The robot port of a ``bare=Y`` device (protocol 3) and the camera port 23812 open the same way,
as fluxclient's ``SSLSocket`` does for both (fc robot/ssl_socket.py):

1. device → client, in plaintext: the 8-byte banner ``FLUX0003``;
2. TLS, the device as server, with its self-signed certificate (CN ``<uuid hex>:<serial>:``);
3. inside TLS, device → client: 64 random bytes R;
4. client → device: access id (20 bytes, SHA-1 of our public key DER) ‖
   RSA-sign(HMAC-SHA1(key = the 16-byte uuid from the certificate's CN, msg = R));
5. device → client: 16 bytes, ``OK`` or ``AUTH_ERROR`` padded with **spaces**; the device hangs
   up after a refusal. The device refuses an access id it does not trust, but does *not* check
   the signature (the firmware's ``verify(...) or True``).

Then both sides speak the frames of ``actors.fluxfamily.framing`` over TLS, with no AES layer.
(Device management on TCP 1901 also starts with steps 1 to 3 but then exchanges PEM and text
frames: ``actors.fluxfamily.manage_protocol``.)

**What the client verifies, and why.** The certificate is self-signed and names no host, so no
chain or host name can be checked (``CERT_NONE``, ``check_hostname=False``; fluxclient does the
same, its code says ``TODO: check cert``). Always: the CN must be ``<uuid>:<serial>:``, since
the uuid keys the HMAC (fluxclient needs it too). When the caller knows the device from
discovery, two pins are checked before our key is shown: the CN's uuid must be the expected
uuid, and the certificate's public key must be the device's master key (discovery v1
announcements and v2 touch answers carry it); TLS itself proves the peer holds that key's
private half. Without those pins the device is not authenticated (as with fluxclient): only the
client is, by the device's trust list.

``ClientIdentify`` / ``ServerIdentify`` are sans-io; ``client_handshake`` and
``server_handshake`` run them over asyncio streams, after the banner.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.fluxfamily import crypto
from actors.fluxfamily.manage_protocol import BANNER_TLS, build_certificate, uuid_from_certificate

__all__ = [
    "BANNER_TLS",
    "CHALLENGE_SIZE",
    "STATUS_SIZE",
    "ClientIdentify",
    "HandshakeError",
    "ServerIdentify",
    "TlsStream",
    "client_context",
    "client_handshake",
    "server_context",
    "server_handshake",
    "status_bytes",
]

CHALLENGE_SIZE = 64
STATUS_SIZE = 16
ACCESS_ID_SIZE = 20


class HandshakeError(Exception):
    """A handshake failed; ``symbols`` are the device's words (``("AUTH_ERROR",)``) or ours."""

    def __init__(self, message: str, symbols: tuple[str, ...]) -> None:
        super().__init__(message)
        self.symbols = symbols


def status_bytes(text: str) -> bytes:
    """The 16-byte space-padded handshake status of the TLS channels (``OK``, ``AUTH_ERROR``)."""
    return text.encode().ljust(STATUS_SIZE, b" ")


class TlsStream:
    """``crypto.AesStream``'s interface for a TLS session: TLS already encrypts, so bytes pass as is.

    It lets one session type carry either protocol (2: AES-CFB8 over TCP; 3: plain over TLS).
    """

    def encrypt(self, data: bytes) -> bytes:
        """Outgoing bytes, unchanged."""
        return data

    def decrypt(self, data: bytes) -> bytes:
        """Incoming bytes, unchanged."""
        return data


def client_context() -> ssl.SSLContext:
    """TLS client settings for a FLUX device: its certificate is self-signed, so no chain check.

    Identity comes from the pins of ``ClientIdentify`` and the key handshake inside TLS.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def server_context(key: rsa.RSAPrivateKey, device: uuidlib.UUID, serial: str) -> ssl.SSLContext:
    """TLS server settings of a (simulated) device: a self-signed certificate like the firmware's.

    ``ssl`` loads certificates only from files; they live in a private temporary directory for
    the duration of this call.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="flux-tls-") as folder:
        cert, private = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert.write_bytes(build_certificate(key, device, serial))
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(crypto.private_pem(key))
        context.load_cert_chain(cert, private)
    return context


class ClientIdentify:
    """The client side of steps 3 to 5, given the device's certificate.

    Args:
        client_key: Our private key; the device must trust its public half.
        certificate: The device's certificate, DER (from the TLS session).
        expect_uuid: Pin: the device uuid known from discovery.
        expect_key: Pin: the device's master public key known from discovery.

    Raises:
        HandshakeError: ``PROTOCOL_ERROR`` for a certificate without a ``<uuid>:<serial>:`` CN;
            ``REMOTE_IDENTIFY_ERROR`` when a pin does not match.
    """

    def __init__(
        self,
        client_key: rsa.RSAPrivateKey,
        certificate: bytes,
        *,
        expect_uuid: uuidlib.UUID | None = None,
        expect_key: rsa.RSAPublicKey | None = None,
    ) -> None:
        self._key = client_key
        try:
            self.uuid = uuid_from_certificate(certificate)
            public = x509.load_der_x509_certificate(certificate).public_key()
        except ValueError as exc:
            raise HandshakeError(f"bad device certificate: {exc}", ("PROTOCOL_ERROR",)) from exc
        if expect_uuid is not None and self.uuid != expect_uuid:
            raise HandshakeError(
                f"certificate names device {self.uuid.hex}, expected {expect_uuid.hex}",
                ("REMOTE_IDENTIFY_ERROR",),
            )
        if expect_key is not None and (
            not isinstance(public, rsa.RSAPublicKey)
            or crypto.public_der(public) != crypto.public_der(expect_key)
        ):
            raise HandshakeError(
                "certificate key is not the device's master key", ("REMOTE_IDENTIFY_ERROR",)
            )

    def answer(self, challenge: bytes) -> bytes:
        """Step 4: access id ‖ RSA-sign(HMAC-SHA1(uuid, challenge))."""
        if len(challenge) != CHALLENGE_SIZE:
            raise HandshakeError(
                f"challenge of {len(challenge)} bytes, expected {CHALLENGE_SIZE}",
                ("PROTOCOL_ERROR",),
            )
        proof = crypto.hmac_sha1(self.uuid.bytes, challenge)
        return crypto.access_id(self._key) + crypto.sign(self._key, proof)

    @staticmethod
    def check_status(status: bytes) -> None:
        """Step 5: accept ``OK`` (spaces or NULs stripped, as fluxclient does).

        Raises:
            HandshakeError: The device refused; ``symbols`` are its words (``AUTH_ERROR``).
        """
        text = status.decode("ascii", errors="replace").rstrip(" \x00")
        if text != "OK":
            raise HandshakeError(
                f"handshake refused: {text}", tuple(text.split()) or ("UNKNOWN_ERROR",)
            )


class ServerIdentify:
    """The device side of steps 3 to 5, for the simulator.

    Like the firmware it refuses an unknown access id at once and otherwise answers ``OK``
    without requiring the signature to verify; ``signature_ok`` records whether it did (tests
    check our client's signature with it).

    Args:
        device: The device uuid (the HMAC key).
        lookup: Maps a 20-byte access id to the trusted public key, or None.
        random_bytes: Source of the challenge.
    """

    def __init__(
        self,
        device: uuidlib.UUID,
        lookup: Callable[[bytes], rsa.RSAPublicKey | None],
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._uuid = device
        self._lookup = lookup
        self.challenge = random_bytes(CHALLENGE_SIZE)
        self._buffer = bytearray()
        self._client: rsa.RSAPublicKey | None = None
        self.failed: str | None = None
        self.done = False
        self.signature_ok: bool | None = None
        self.client_access_id = b""
        self.leftover = b""

    def receive(self, data: bytes) -> bytes:
        """Consume client bytes; return the status to send, or b"" while more is needed."""
        if self.failed or self.done:
            return b""
        self._buffer += data
        if self._client is None and len(self._buffer) >= ACCESS_ID_SIZE:
            self.client_access_id = bytes(self._buffer[:ACCESS_ID_SIZE])
            self._client = self._lookup(self.client_access_id)
            if self._client is None:
                self.failed = "AUTH_ERROR"
                return status_bytes("AUTH_ERROR")
        if self._client is None:
            return b""
        expected = ACCESS_ID_SIZE + self._client.key_size // 8
        if len(self._buffer) < expected:
            return b""
        proof = crypto.hmac_sha1(self._uuid.bytes, self.challenge)
        self.signature_ok = crypto.verify(
            self._client, bytes(self._buffer[ACCESS_ID_SIZE:expected]), proof
        )
        self.leftover = bytes(self._buffer[expected:])
        self._buffer.clear()
        self.done = True
        return status_bytes("OK")


async def client_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    client_key: rsa.RSAPrivateKey,
    *,
    expect_uuid: uuidlib.UUID | None = None,
    expect_key: rsa.RSAPublicKey | None = None,
) -> uuidlib.UUID:
    """Steps 2 to 5 on a connection whose banner ``FLUX0003`` was read; returns the device uuid.

    The caller bounds it with a timeout.

    Raises:
        HandshakeError: Bad certificate, a pin mismatch, or a refusal (``AUTH_ERROR``).
        OSError, ssl.SSLError: The TLS handshake or I/O failed.
        asyncio.IncompleteReadError: The device hung up (an ``EOFError``).
    """
    await writer.start_tls(client_context())
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    identify = ClientIdentify(
        client_key, der or b"", expect_uuid=expect_uuid, expect_key=expect_key
    )
    challenge = await reader.readexactly(CHALLENGE_SIZE)
    writer.write(identify.answer(challenge))
    await writer.drain()
    identify.check_status(await reader.readexactly(STATUS_SIZE))
    return identify.uuid


async def server_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    identify: ServerIdentify,
) -> bool:
    """The device side: banner, TLS, challenge, then ``identify``'s verdict; True when accepted.

    After a refusal the status has been flushed; the caller closes the connection.
    """
    writer.write(BANNER_TLS)  # one write, as the device does (fluxclient reads it in one recv)
    await writer.drain()
    await writer.start_tls(context)
    writer.write(identify.challenge)
    await writer.drain()
    while not (identify.done or identify.failed):
        data = await reader.read(65536)
        if not data:
            return False
        status = identify.receive(data)
        if status:
            writer.write(status)
            await writer.drain()
    return identify.done
