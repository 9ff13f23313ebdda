"""Safe by default: a broker reachable from the network must run CURVE, or say it will not.

``check_exposure`` is what the broker calls before binding: endpoints on loopback, ``ipc://`` and
``inproc://`` are reachable only from this host, anything else (an address, a host or interface
name, ``*``) is exposed, and an exposed broker without CURVE refuses to start unless its config
says ``insecure = true`` in so many words.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from bus.errors import ConfigError

__all__ = ["check_exposure", "is_local_endpoint"]

_LOCAL_TRANSPORTS = ("ipc://", "inproc://")


def is_local_endpoint(endpoint: str) -> bool:
    """True if a bind on ``endpoint`` is reachable from this host only.

    >>> is_local_endpoint("tcp://127.0.0.1:7750"), is_local_endpoint("tcp://*:7750")
    (True, False)
    """
    if endpoint.startswith(_LOCAL_TRANSPORTS):
        return True
    if not endpoint.startswith("tcp://"):
        return False  # pgm, udp, ws...: treat as exposed
    host = endpoint[len("tcp://") :].rpartition(":")[0]
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface or a host name: may be reachable from the network


def check_exposure(endpoints: Mapping[str, str], *, curve: bool, insecure: bool) -> None:
    """Refuse to run an exposed broker without CURVE unless ``insecure`` is set.

    Args:
        endpoints: Socket role -> endpoint to bind (``command``, ``publish``, ``subscribe``).
        curve: Whether the config names a broker key (CURVE on every socket).
        insecure: The config's explicit ``insecure = true``.

    Raises:
        ConfigError: an endpoint is exposed, CURVE is off and ``insecure`` is not set; the
            message names the endpoints and both ways out.
    """
    if curve or insecure:
        return
    exposed = {role: ep for role, ep in endpoints.items() if not is_local_endpoint(ep)}
    if exposed:
        listed = ", ".join(f"{role} = {ep!r}" for role, ep in sorted(exposed.items()))
        raise ConfigError(
            f"the broker would accept unauthenticated, unencrypted connections from the network "
            f"({listed}). Secure it: run `linebus keys generate broker` and set [security] "
            f'key = "<dir>/broker.key_secret" and keys = "<dir>" (the public keys of the '
            f"actors and clients allowed in); or bind to 127.0.0.1 or ipc://; or, on a network "
            f"you trust, set insecure = true in [security]."
        )
