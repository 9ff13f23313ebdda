"""Turning one fuzzer input into what a parser is fed (stream pieces, frame lists), and the
fixed RSA keys of the FLUX targets."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: Three 1024-bit test keys (client, device, master), fixed so the seed corpus stays valid:
#: a handshake seed's session key is encrypted to the client key, a touch response is signed.
_KEY_FILE = Path(__file__).with_name("fuzz_keys.pem")


def keys() -> list[rsa.RSAPrivateKey]:
    """The test keys of ``fuzz_keys.pem``, in order: client, device, master."""
    text = _KEY_FILE.read_bytes()
    out = []
    for block in text.split(b"-----END PRIVATE KEY-----")[:-1]:
        key = serialization.load_pem_private_key(block + b"-----END PRIVATE KEY-----\n", None)
        assert isinstance(key, rsa.RSAPrivateKey)
        out.append(key)
    return out


def pieces(data: bytes) -> list[bytes]:
    """``data[1:]`` cut into pieces of ``data[0] % 17 + 1`` bytes (0: one piece).

    Stream parsers are fed any split of their input, so the split is part of the input.
    """
    if not data:
        return []
    step = data[0] % 17
    rest = data[1:]
    if step == 0:
        return [rest]
    return [rest[i : i + step] for i in range(0, len(rest), step)]


def frames(data: bytes) -> list[bytes]:
    """A list of frames, each a 2-byte big-endian length then that many bytes (the last one
    short if the data ends early)."""
    out: list[bytes] = []
    i = 0
    while i + 2 <= len(data):
        size = int.from_bytes(data[i : i + 2], "big")
        out.append(data[i + 2 : i + 2 + size])
        i += 2 + size
    return out


def join_frames(parts: list[bytes]) -> bytes:
    """The inverse of ``frames`` (for seeds)."""
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)
