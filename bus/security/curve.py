"""Socket options that put a socket under CURVE, as a broker socket or as a connecting peer.

Every broker socket gets its own ZAP domain, so one ZAP handler can tell which socket a
handshake is for, and ``ZAP_ENFORCE_DOMAIN`` so that a handshake arriving while no ZAP handler is
bound is refused instead of let in unauthenticated (libzmq's default; reference/zmq-security.md
§6). Options must be set before ``bind``/``connect``.

This module imports only pyzmq and the key types, so the client core may use it.
"""

from __future__ import annotations

from typing import Any, Final

import zmq

from bus.security.keys import KeyPair

__all__ = [
    "DOMAINS",
    "DOMAIN_COMMAND",
    "DOMAIN_PUBLISH",
    "DOMAIN_SUBSCRIBE",
    "secure_client",
    "secure_server",
]

#: ZAP domain of the command ROUTER (clients and actors, DEALER).
DOMAIN_COMMAND: Final = "linebus.command"
#: ZAP domain of the publish XSUB (actors' PUB sockets).
DOMAIN_PUBLISH: Final = "linebus.publish"
#: ZAP domain of the subscribe XPUB (SUB sockets).
DOMAIN_SUBSCRIBE: Final = "linebus.subscribe"
DOMAINS: Final = frozenset({DOMAIN_COMMAND, DOMAIN_PUBLISH, DOMAIN_SUBSCRIBE})


def secure_server(sock: zmq.Socket[Any], keys: KeyPair, domain: str) -> None:
    """Make ``sock`` (not yet bound) a CURVE server that authenticates peers through ZAP.

    Raises:
        ValueError: ``keys`` has no secret key, or ``domain`` is empty.
    """
    if keys.secret is None:
        raise ValueError("a CURVE server needs its secret key")
    if not domain:
        raise ValueError("a ZAP domain is needed: an empty one lets libzmq skip ZAP")
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def secure_client(sock: zmq.Socket[Any], keys: KeyPair, server_public: bytes) -> None:
    """Make ``sock`` (not yet connected) a CURVE client of the server whose public key is given.

    A client refused by the server's ZAP handler is not retried by libzmq (the failure ends that
    connect for good): watch the socket monitor for ``EVENT_HANDSHAKE_FAILED_AUTH`` and
    disconnect/connect after fixing the key.

    Raises:
        ValueError: ``keys`` has no secret key.
    """
    if keys.secret is None:
        raise ValueError("a CURVE client needs its own secret key")
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = server_public
