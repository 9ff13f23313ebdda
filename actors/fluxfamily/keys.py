"""The client key of the FLUX family's actors: where it is kept and how it is loaded.

A FLUX device trusts a client by the access id of its public key (flux.md §0), so every actor
that talks to the printers of a line (``flux`` for the robot channel, ``discovery`` for touch
requests and management) uses the same key file: the ``key`` option, ``DEFAULT_KEY`` without
it. The first actor to start creates the file; ``load_key`` waits out another process that is
writing it at that moment.
"""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.fluxfamily import crypto

__all__ = ["DEFAULT_KEY", "load_key"]

DEFAULT_KEY = "~/.linebus/flux-client-key.pem"


def load_key(path: str) -> rsa.RSAPrivateKey:
    """Load (or create) the client key; tolerate another actor creating the same file meanwhile."""
    for _ in range(50):
        try:
            return crypto.get_or_create_default_key(path)
        except (FileExistsError, ValueError):
            time.sleep(0.05)  # another process is writing it right now
    return crypto.get_or_create_default_key(path)
