"""fluxclient's client key on the caller's side: ``get_or_create_default_key`` and ``KeyObject``.

Over linebus the actors sign in to the printers with their own key (the ``key`` option of the
``flux`` and ``discovery`` actors), so the key a script makes here is not what the printer sees:
``FluxRobot((ip, port), key)`` and ``DeviceManager.from_uuid(key, uuid)`` accept it for the
vendor's signature and do not send it. It is still a real key, where a script uses it itself:
``UpnpTask.add_trust(label, key)`` makes the device trust it.

Needs ``cryptography`` (the ``flux`` or ``discovery`` extra).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported when a key is made or loaded
    from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["DEFAULT_KEY_PATH", "KeyObject", "get_or_create_default_key"]

#: Where fluxclient keeps its default key.
DEFAULT_KEY_PATH = "~/.fluxclient_key.pem"
#: fluxclient's default key size (``get_or_create_default_key``; flux.md §0).
DEFAULT_KEY_BITS = 1024


class KeyObject:
    """An RSA key with fluxclient's ``KeyObject`` accessors."""

    def __init__(self, key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> None:
        self.key = key

    @classmethod
    def load_keyobj(cls, pem: bytes | str) -> KeyObject:
        """A key from PEM: a private key, or a public one (SubjectPublicKeyInfo or PKCS#1).

        Raises:
            ValueError: ``pem`` is no RSA key.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        data = pem.encode() if isinstance(pem, str) else bytes(pem)
        loaded: object
        if b"PRIVATE KEY" in data:
            loaded = serialization.load_pem_private_key(data, password=None)
        else:
            loaded = serialization.load_pem_public_key(data)
        if not isinstance(loaded, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
            raise ValueError(f"not an RSA key but {type(loaded).__name__}")
        return cls(loaded)

    @classmethod
    def new_keyobj(cls, size: int = 4096) -> KeyObject:
        """A new RSA private key of ``size`` bits (fluxclient's default here: 4096)."""
        from cryptography.hazmat.primitives.asymmetric import rsa

        return cls(rsa.generate_private_key(public_exponent=65537, key_size=size))

    @property
    def private_key_pem(self) -> bytes:
        """The private key in PEM (PKCS#8, unencrypted).

        Raises:
            ValueError: this is a public key only.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        if not isinstance(self.key, rsa.RSAPrivateKey):
            raise ValueError("a public key has no private half")
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_key_pem(self) -> bytes:
        """The public key in PEM (SubjectPublicKeyInfo)."""
        from cryptography.hazmat.primitives import serialization

        return self._public().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def get_access_id(self, binary: bool = False) -> bytes | str:
        """The device's name for this key: SHA-1 of the DER public key (flux.md §0)."""
        from cryptography.hazmat.primitives import serialization

        der = self._public().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashlib.sha1(der)  # the device's identifier, not a security function
        return digest.digest() if binary else digest.hexdigest()

    def _public(self) -> rsa.RSAPublicKey:
        from cryptography.hazmat.primitives.asymmetric import rsa

        return self.key.public_key() if isinstance(self.key, rsa.RSAPrivateKey) else self.key


def get_or_create_default_key(path: str | os.PathLike[str] | None = None) -> KeyObject:
    """Load the key at ``path`` (default ``~/.fluxclient_key.pem``), or create a 1024-bit one
    there (mode 0600), as ``fluxclient.commands.misc.get_or_create_default_key`` does.

    Raises:
        ValueError: the file exists and holds no RSA key.
        OSError: the file cannot be read or written.
    """
    target = Path(os.path.expanduser(os.fspath(path if path is not None else DEFAULT_KEY_PATH)))
    if target.exists():
        return KeyObject.load_keyobj(target.read_bytes())
    key = KeyObject.new_keyobj(DEFAULT_KEY_BITS)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_key_pem)
    return key
