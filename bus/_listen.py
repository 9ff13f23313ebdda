"""Binding a broker socket: a refusal from the system becomes a ConfigError naming the endpoint.

pyzmq raises ``ZMQError("Address already in use")`` from deep in the broker's start-up; the
person starting it needs to know which of its endpoints failed and what to do about it.
"""

from __future__ import annotations

import errno
from typing import Any

import zmq

from bus.errors import ConfigError

__all__ = ["listen"]

_HINTS = {
    errno.EADDRINUSE: "another process listens there (another broker?)",
    errno.EACCES: "this user may not listen there",
    errno.EADDRNOTAVAIL: "no interface of this host has that address",
    errno.ENOENT: "its directory does not exist",
}


def listen(sock: zmq.Socket[Any], endpoint: str, role: str) -> None:
    """``sock.bind(endpoint)``, the broker's ``role`` socket (command, publish, subscribe).

    Raises:
        ConfigError: the bind failed; the message names the role, the endpoint and the cause.
    """
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        code = exc.errno or 0
        hint = _HINTS.get(code)
        raise ConfigError(
            f"the broker cannot listen on {endpoint} ({role}): {zmq.strerror(code)}"
            + (f"; {hint}" if hint else "")
        ) from None
