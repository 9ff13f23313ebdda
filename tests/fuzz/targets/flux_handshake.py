"""Target ``flux_handshake``: the FLUX robot protocol-2 handshake, actors/flux/protocol.py.

Input: the device's bytes, fed to a ``ClientHandshake`` in pieces (``_split.pieces``); then the
same bytes as a client's, fed to the simulator's ``ServerHandshake``.

Documented errors: ``HandshakeError`` from ``ClientHandshake.receive`` (bad banner, signature,
refusal, session key); ``ServerHandshake.receive`` raises nothing (a failure is its answer).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux.protocol import ClientHandshake, HandshakeError, ServerHandshake
from actors.fluxfamily import crypto
from tests.fuzz.targets._split import keys, pieces

ERRORS = (HandshakeError,)

_CLIENT, _DEVICE, _ = keys()
_CLIENT_ID = crypto.access_id(_CLIENT)


def _lookup(access_id: bytes) -> rsa.RSAPublicKey | None:
    return _CLIENT.public_key() if access_id == _CLIENT_ID else None


def fuzz_one(data: bytes) -> None:
    """Feed ``data`` to both sides of the handshake."""
    for device_key in (None, _DEVICE.public_key()):
        client = ClientHandshake(_CLIENT, device_key)
        try:
            for piece in pieces(data):
                client.receive(piece)
        except ERRORS:
            pass
    server = ServerHandshake(_DEVICE, _lookup, random_bytes=bytes)
    for piece in pieces(data):
        server.receive(piece)
