"""What the facades share to accept a vendor's own constructor.

A vendor library is built with the device's address (``FlashRunner("LAN", "ip:port")``,
``FluxRobot((ip, 23811), key)``); over linebus an actor owns that device. A facade built the
vendor's way therefore:

1. connects to the bus of ``LINEBUS_ENDPOINT`` (or ``tcp://127.0.0.1:7750``), with the CURVE keys
   of the usual client environment (``LINEBUS_KEY_FILE`` ...; ``bus.client.ClientKeys``);
2. asks the broker which service of the right kind drives that address (``lookup``,
   docs/PROTOCOL.md §13; how addresses compare: ``bus.addresses``);
3. uses that service as if it had been named.

**Bus-style or vendor-style.** A call is bus-style when its first argument is a
``bus.client.Client`` or a string with a ZeroMQ transport scheme (``tcp://``, ``ipc://``,
``inproc://``, ``pgm://``, ``epgm://``, ``vmci://``, ``ws://``, ``wss://``, ``udp://``, ``norm://``);
anything else is vendor-style. No vendor argument looks like that: ``"LAN"``, ``"COM3"``,
``"/dev/ttyUSB0"``, pyserial URLs (``socket://``, ``rfc2217://``, ``loop://``), ``(ip, port)``
tuples and uuids all differ.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from bus import protocol
from bus.client import Client
from bus.errors import Unavailable, UnknownService

__all__ = [
    "LOOKUP_TIMEOUT_S",
    "ZMQ_SCHEMES",
    "find_service",
    "is_bus",
    "open_default_bus",
    "vendor_session",
]

#: The transports of ZeroMQ endpoints: a first argument with one of these schemes is a bus.
ZMQ_SCHEMES = frozenset({"tcp", "ipc", "inproc", "pgm", "epgm", "vmci", "ws", "wss", "udp", "norm"})
#: Bus deadline of the broker's ``lookup``, in seconds (the broker answers at once).
LOOKUP_TIMEOUT_S = 5.0


def is_bus(value: object) -> TypeGuard[Client | str]:
    """True if ``value`` names a bus (see the module docstring): a ``Client`` or an endpoint."""
    if isinstance(value, Client):
        return True
    if isinstance(value, str):
        scheme, sep, _ = value.partition("://")
        return bool(sep) and scheme.lower() in ZMQ_SCHEMES
    return False


def open_default_bus(timeout: float | None = None) -> Client:
    """A new ``Client`` on ``LINEBUS_ENDPOINT`` (or the default), keys from the environment.

    Raises:
        BusError: ``ConfigError`` for an endpoint that is no endpoint or keys that cannot be
            used (``KeyFileError``).
    """
    if timeout is None:
        return Client()
    return Client(timeout=timeout)


def find_service(
    bus: Client,
    kind: str,
    address: str | None,
    what: str,
    timeout: float = LOOKUP_TIMEOUT_S,
) -> dict[str, Any]:
    """The ``lookup`` row of the service of ``kind`` that drives ``address`` (None: any service
    of that kind): the first up one by name.

    ``what`` names the device for messages (``"the FlashRunner at LAN 192.168.1.100:1234"``);
    ``timeout`` is the bus deadline of the question (an unreachable broker fails after it).

    Raises:
        UnknownService: no service of ``kind`` drives it (or none the caller may call), with
            ``details`` ``{"address", "kind", "endpoint"}``.
        Unavailable: only down services drive it (``details["services"]``: their names).
        BusError: the broker's own failures (``broker_unreachable``, ``deadline_exceeded`` ...).
    """
    args: dict[str, Any] = {"kind": kind}
    if address is not None:
        args["address"] = address
    rows: list[dict[str, Any]] = bus.call(protocol.BROKER_SERVICE, "lookup", args, timeout=timeout)
    details = {"address": address, "kind": kind, "endpoint": bus.endpoint}
    for row in rows:
        if row.get("state") == "up":
            return row
    if rows:
        names = [str(row.get("name")) for row in rows]
        reason = rows[0].get("reason") or "no reason given"
        raise Unavailable(
            f"{what} is driven by {', '.join(names)} on the bus at {bus.endpoint}, but "
            f"{'it is' if len(names) == 1 else 'they are'} down ({reason})",
            details={**details, "services": names},
        )
    raise UnknownService(
        f"no {kind} actor on the bus at {bus.endpoint} drives {what}: configure one whose "
        f"options name this device (`linebus lookup --kind {kind}` lists what each one "
        "drives), or pass the bus and the service name instead",
        details=details,
    )


def vendor_session(
    kind: str,
    address: str | None,
    what: str,
    *,
    bus: Client | str | None = None,
    timeout: float | None = None,
) -> tuple[Client, bool, str]:
    """Connect (to ``bus``, or the default bus) and find the service of ``kind`` driving
    ``address``: ``(client, owned, service)``. An owned client is closed here if the lookup
    fails; otherwise the caller closes it. ``timeout``: the new client's default deadline, and
    the lookup's if shorter than ``LOOKUP_TIMEOUT_S``.

    Raises:
        BusError: as ``open_default_bus`` and ``find_service``.
    """
    if bus is None:
        client, owned = open_default_bus(timeout), True
    elif isinstance(bus, Client):
        client, owned = bus, False
    else:
        client, owned = (Client(bus) if timeout is None else Client(bus, timeout=timeout)), True
    try:
        lookup_s = LOOKUP_TIMEOUT_S if timeout is None else min(timeout, LOOKUP_TIMEOUT_S)
        row = find_service(client, kind, address, what, lookup_s)
    except BaseException:
        if owned:
            client.close()
        raise
    return client, owned, str(row["name"])
