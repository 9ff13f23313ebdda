"""The FLUX crypto primitives (flux.md §0): keys, access ids, signatures, OAEP and AES-CFB8.

Both sides of every FLUX protocol use these, so the driver, the discovery layer and the
simulator share this one module. It does no I/O except ``get_or_create_default_key``, which
keeps the client key in a file as fluxclient does.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 43 keeps CFB8 among the "decrepit" modes; the device still needs it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB8
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB8

__all__ = [
    "DEFAULT_KEY_PATH",
    "AesStream",
    "access_id",
    "get_or_create_default_key",
    "hmac_sha1",
    "load_public_key",
    "new_key",
    "oaep_decrypt",
    "oaep_encrypt",
    "private_pem",
    "public_der",
    "public_pem",
    "sign",
    "verify",
]

DEFAULT_KEY_PATH = Path("~/.fluxclient_key.pem")
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
_OAEP_OVERHEAD = 42  # 2 * SHA-1 size + 2: the plaintext room per OAEP block is k - 42


def new_key(bits: int = 1024) -> rsa.RSAPrivateKey:
    """Generate an RSA key (1024 bits, like fluxclient's default client key)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def get_or_create_default_key(
    path: str | os.PathLike[str] = DEFAULT_KEY_PATH, bits: int = 1024
) -> rsa.RSAPrivateKey:
    """Load the client key kept at ``path``, creating it (mode 0600) on first use.

    Mirrors fluxclient's ``get_or_create_default_key``: the device trusts a key by its access id,
    so the same key must be reused across sessions.
    """
    file = Path(path).expanduser()
    if file.exists():
        key = serialization.load_pem_private_key(file.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{file}: not an RSA private key")
        return key
    key = new_key(bits)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem(key))
    return key


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_der(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    """The public key as DER SubjectPublicKeyInfo (what announcements and access ids use)."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    """The public key as PEM SubjectPublicKeyInfo (what management ``add_trust`` sends)."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    """Parse a PEM or DER RSA public key.

    Raises:
        ValueError: Not an RSA public key.
    """
    try:
        key = (
            serialization.load_pem_public_key(data)
            if data.lstrip().startswith(b"-----")
            else serialization.load_der_public_key(data)
        )
    except UnsupportedAlgorithm as exc:  # a well-formed key of a type cryptography lacks
        raise ValueError(f"not an RSA public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def access_id(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    """The 20-byte client identity: SHA-1 of the public key DER (hex it for lists)."""
    return hashlib.sha1(public_der(key)).digest()


def sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """PKCS#1 v1.5 signature over SHA-1, as both firmware and fluxclient make them."""
    return key.sign(message, padding.PKCS1v15(), hashes.SHA1())


def verify(key: rsa.RSAPublicKey, signature: bytes, message: bytes) -> bool:
    """Check a PKCS#1 v1.5 / SHA-1 signature."""
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        return False
    return True


def hmac_sha1(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA1, signed by clients of the TLS channels (key = 16-byte device uuid)."""
    return hmac.new(key, message, hashlib.sha1).digest()


def oaep_encrypt(key: rsa.RSAPublicKey, plaintext: bytes) -> bytes:
    """RSA-OAEP (SHA-1) in blocks of k - 42 plaintext bytes, each giving k ciphertext bytes."""
    size = key.key_size // 8
    room = size - _OAEP_OVERHEAD
    blocks = [plaintext[i : i + room] for i in range(0, len(plaintext), room)] or [b""]
    return b"".join(key.encrypt(block, _OAEP) for block in blocks)


def oaep_decrypt(key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    """Undo ``oaep_encrypt``.

    Raises:
        ValueError: The ciphertext is not a whole number of blocks or does not decrypt.
    """
    size = key.key_size // 8
    if not ciphertext or len(ciphertext) % size:
        raise ValueError(f"ciphertext of {len(ciphertext)} bytes is not a multiple of {size}")
    return b"".join(
        key.decrypt(ciphertext[i : i + size], _OAEP) for i in range(0, len(ciphertext), size)
    )


class AesStream:
    """The two AES-256-CFB8 stream states of a protocol-2 session (one per direction).

    Both directions start from the same key and IV; CFB8 needs no padding, so any number of
    bytes can be pushed through at a time.
    """

    def __init__(self, key: bytes, iv: bytes) -> None:
        cipher = Cipher(algorithms.AES(key), CFB8(iv))
        self._encryptor = cipher.encryptor()
        self._decryptor = cipher.decryptor()

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt outgoing bytes."""
        return self._encryptor.update(data)

    def decrypt(self, data: bytes) -> bytes:
        """Decrypt incoming bytes."""
        return self._decryptor.update(data)
