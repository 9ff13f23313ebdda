"""Device addresses: the one normal form in which actors advertise and callers look them up.

Every device actor names, in its READY info (``"devices": [str]``), the addresses of the
devices it drives: a LAN ``host:port``, a serial port, a printer's uuid, an API's base URI.
The broker's ``lookup`` command (docs/PROTOCOL.md §13) answers "which service drives X" by
comparing normal forms, so that ``192.168.1.100:1234`` finds the FlashRunner configured as
``settings = "192.168.1.100:01234"`` and a uuid is found in any case and spelling.

Normal forms (``normalize``):

- **uuid**: 32 hexadecimal digits, with or without dashes, braces or a ``urn:uuid:`` /
  ``uuid:`` prefix, in any case -> ``uuid:<32 lowercase hex digits>``.
- **host:port** (``[v6]:port`` for IPv6): an IP address in its canonical text form
  (``ipaddress``: ``0:0::1`` -> ``::1``), a host name in lower case without a trailing dot;
  ``localhost`` and the empty host (fluxclient's ``("", 23811)``) are ``127.0.0.1``; the port
  as a decimal number (1-65535).
- **a bare IP address** (no port): its canonical text (``[::1]`` -> ``::1``).
- **anything else** (a serial port ``COM3`` or ``/dev/ttyUSB0``, a URI, a host name without
  port): kept as given, with surrounding blanks removed, and matched exactly (case counts:
  ``/dev/ttyUSB0`` is not ``/dev/ttyusb0``).

Matching (``matches``): equal normal forms; and a query with no port (and no uuid) also
matches every advertised ``host:port`` whose host is its host form (lower case, ``localhost``
= ``127.0.0.1``) (``UpnpDiscover(device_ipaddr="192.168.1.5")`` finds the printer
advertised as ``192.168.1.5:23811``). No name is resolved: ``printer.local`` does not match
the address it resolves to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["MAX_LENGTH", "UUID_PREFIX", "matches", "normalize", "normalize_all"]

#: The prefix of a uuid's normal form.
UUID_PREFIX: Final = "uuid:"
#: Longest address accepted: longer text is no address (and must not grow the broker's table).
MAX_LENGTH: Final = 512
_UUID = re.compile(
    r"^(?:urn:uuid:|uuid:)?\{?([0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12})\}?$"
)
#: ``host:port`` or ``[v6]:port``; a host has no colon, blank, slash or bracket (so a URI such
#: as pyserial's ``socket://host:7000`` is not one).
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\s/\[\]]*)):(?P<port>\d{1,8})$")


def _host(text: str) -> str:
    """The normal form of a host: canonical IP text, or the name in lower case."""
    lowered = text.strip().lower().rstrip(".")
    if lowered in ("", "localhost"):
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(lowered))
    except ValueError:
        return lowered


def _ip(text: str) -> str | None:
    """Canonical text of an IP address (``[v6]`` allowed), or None."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split(normal: str) -> tuple[str, int] | None:
    """``(host, port)`` of a normal ``host:port`` form, or None for any other form."""
    if normal.startswith(UUID_PREFIX):
        return None
    found = _HOST_PORT.match(normal)
    if found is None:
        return None
    return (found["v6"] if found["v6"] is not None else found["host"]), int(found["port"])


def normalize(address: str) -> str:
    """The normal form of ``address`` (see the module docstring).

    Raises:
        ValueError: ``address`` is blank, longer than ``MAX_LENGTH``, or a ``host:port`` whose
            port is not 1-65535.
    """
    text = address.strip()
    if not text:
        raise ValueError("an address cannot be blank")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"an address is at most {MAX_LENGTH} characters, got {len(text)}")
    uuid = _UUID.match(text.lower())
    if uuid is not None:
        return UUID_PREFIX + uuid.group(1).replace("-", "")
    host_port = _HOST_PORT.match(text)
    if host_port is not None:
        port = int(host_port["port"])
        if not 0 < port < 65536:
            raise ValueError(f"{address!r}: the port must be 1-65535, got {port}")
        host = host_port["v6"] if host_port["v6"] is not None else host_port["host"]
        return _join(_host(host), port)
    ip = _ip(text)
    if ip is not None:
        return ip
    return text


def normalize_all(addresses: object) -> tuple[str, ...]:
    """The normal forms of an actor's advertised ``devices`` (a READY info value), without
    duplicates. What is not a list of strings, or not an address, is left out, never an error:
    an actor that advertises garbage is simply not found by it."""
    if not isinstance(addresses, list):
        return ()
    out: dict[str, None] = {}
    for item in addresses:
        if isinstance(item, str):
            try:
                out[normalize(item)] = None
            except ValueError:
                continue
    return tuple(out)


def matches(query: str, advertised: Iterable[str]) -> str | None:
    """The first of ``advertised`` (normal forms) that the normal form ``query`` designates, or
    None: an equal form, or, for a bare host (no port, not a uuid), a ``host:port`` of it."""
    bare = None if query.startswith(UUID_PREFIX) or _split(query) else _host(query)
    for address in advertised:
        if address == query:
            return address
        if bare is not None:
            split = _split(address)
            if split is not None and split[0] == bare:
                return address
    return None
