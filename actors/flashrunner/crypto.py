"""Encrypt data for FlashRunner dynamic memory, and (for the simulator) decrypt it again. No I/O.

The real header layout is unknown (reference/flashrunner.md §8, §12 item 6). linebus assumes
**header layout v1**, provisional until SMH's wheel is read:

``b"FRK1" | mode (1 byte: 1 single-shot, 2 session) | n (2 bytes, big-endian) | RSA(key || iv)``

- ``RSA(...)`` is RSA-OAEP (MGF1 and hash SHA-256) of the 32-byte AES-256 key followed by the
  16-byte IV, wrapped with the device's public key; ``n`` is its length in bytes.
- Data blocks are AES-256-CBC with PKCS#7 padding. In session mode the IV of each block is the last
  ciphertext block of the previous one (CBC chaining across blocks); a reset starts a new key.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bus.errors import InvalidArguments

__all__ = [
    "HEADER_MAGIC",
    "DynMemDecryptor",
    "DynMemEncryptor",
    "EncryptedData",
    "HeaderMode",
    "decrypt_single",
    "encrypt_data",
    "load_public_key",
    "public_key_der",
]

HEADER_MAGIC = b"FRK1"
KEY_BYTES = 32
IV_BYTES = 16
_PREFIX = struct.Struct(">4sBH")
_OAEP = OAEP(mgf=MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class HeaderMode(IntEnum):
    """Whether a header opens one block (single-shot) or a chained session."""

    SINGLE = 1
    SESSION = 2


@dataclass(frozen=True, slots=True)
class EncryptedData:
    """The result of a single-shot encryption: send ``header`` to the device, then ``payload``."""

    header: bytes
    payload: bytes


def load_public_key(der_or_pem: bytes) -> rsa.RSAPublicKey:
    """Load the device's RSA public key from DER or PEM bytes.

    Raises:
        InvalidArguments: The bytes are not an RSA public key.
    """
    try:
        if der_or_pem.lstrip().startswith(b"-----"):
            key = serialization.load_pem_public_key(der_or_pem)
        else:
            key = serialization.load_der_public_key(der_or_pem)
    except ValueError as exc:
        raise InvalidArguments(
            f"not a public key: {exc}", details={"argument": "public_key"}
        ) from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidArguments("the device key is not RSA", details={"argument": "public_key"})
    return key


def public_key_der(key: rsa.RSAPublicKey) -> bytes:
    """Serialise a public key as DER SubjectPublicKeyInfo (what the simulator hands out)."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _header(public_key: rsa.RSAPublicKey, mode: HeaderMode, key: bytes, iv: bytes) -> bytes:
    wrapped = public_key.encrypt(key + iv, _OAEP)
    return _PREFIX.pack(HEADER_MAGIC, int(mode), len(wrapped)) + wrapped


def _cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def _cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    if not data or len(data) % IV_BYTES:
        raise ValueError("ciphertext is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def encrypt_data(public_key: rsa.RSAPublicKey, data: bytes) -> EncryptedData:
    """Encrypt one block with a fresh AES key and IV (``FR_EncryptData``)."""
    key, iv = os.urandom(KEY_BYTES), os.urandom(IV_BYTES)
    return EncryptedData(
        _header(public_key, HeaderMode.SINGLE, key, iv), _cbc_encrypt(key, iv, data)
    )


class DynMemEncryptor:
    """Session encryption (``FR_DynMem*``): one header, then consecutive CBC-chained blocks."""

    def __init__(self, public_key: rsa.RSAPublicKey) -> None:
        self._public_key = public_key
        self._key: bytes | None = None
        self._iv = b""

    @property
    def active(self) -> bool:
        """True between ``begin`` and ``reset``."""
        return self._key is not None

    def begin(self) -> bytes:
        """Start a session with a fresh key and IV; return the header to send to the device."""
        self._key, self._iv = os.urandom(KEY_BYTES), os.urandom(IV_BYTES)
        return _header(self._public_key, HeaderMode.SESSION, self._key, self._iv)

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt the next block; its last ciphertext block becomes the next IV.

        Raises:
            InvalidArguments: No session was begun.
        """
        if self._key is None:
            raise InvalidArguments(
                "begin an encryption session first", details={"argument": "session"}
            )
        out = _cbc_encrypt(self._key, self._iv, data)
        self._iv = out[-IV_BYTES:]
        return out

    def reset(self) -> None:
        """End the session and forget its key."""
        self._key, self._iv = None, b""


def _unwrap(private_key: rsa.RSAPrivateKey, header: bytes) -> tuple[HeaderMode, bytes, bytes]:
    if len(header) < _PREFIX.size:
        raise ValueError("header too short")
    magic, mode, size = _PREFIX.unpack_from(header)
    if magic != HEADER_MAGIC or len(header) != _PREFIX.size + size:
        raise ValueError("bad header magic or length")
    secret = private_key.decrypt(header[_PREFIX.size :], _OAEP)
    if len(secret) != KEY_BYTES + IV_BYTES:
        raise ValueError("bad wrapped key length")
    return HeaderMode(mode), secret[:KEY_BYTES], secret[KEY_BYTES:]


def decrypt_single(private_key: rsa.RSAPrivateKey, header: bytes, payload: bytes) -> bytes:
    """Decrypt what ``encrypt_data`` produced (device side).

    Raises:
        ValueError: The header or the payload does not decrypt.
    """
    _, key, iv = _unwrap(private_key, header)
    return _cbc_decrypt(key, iv, payload)


class DynMemDecryptor:
    """The device side of both modes: accept a header, then decrypt the blocks that follow it."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private_key = private_key
        self._state: tuple[HeaderMode, bytes, bytes] | None = None

    def accept_header(self, header: bytes) -> HeaderMode:
        """Unwrap a header (raises ValueError when it does not decrypt) and return its mode."""
        self._state = _unwrap(self._private_key, header)
        return self._state[0]

    def decrypt(self, block: bytes) -> bytes:
        """Decrypt the next block; a single-shot header is used up by one block.

        Raises:
            ValueError: No header was accepted, or the block does not decrypt.
        """
        if self._state is None:
            raise ValueError("no key header")
        mode, key, iv = self._state
        plain = _cbc_decrypt(key, iv, block)
        self._state = None if mode is HeaderMode.SINGLE else (mode, key, block[-IV_BYTES:])
        return plain
