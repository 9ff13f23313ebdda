"""The broker's ``lookup`` command: which service drives a device address (PROTOCOL.md §13).

Kept apart from ``bus.broker`` (which only dispatches to it) so the broker's routing stays as
it is. Addresses are compared in their normal forms (``bus.addresses``).

On a secured line a caller only learns the services it may call: a service is listed if the
access list lets the caller call at least one of the commands the service declares (its READY
``commands``; privileged ones count only for operators; ``ping`` for a service that declares
none). The others are left out as if they drove nothing. (``services`` and ``describe`` still
show every name and kind to every caller; what ``lookup`` withholds is which devices a service
drives.)
"""

from __future__ import annotations

from typing import Any

from bus.addresses import matches, normalize
from bus.directory import Directory, ServiceEntry
from bus.errors import InvalidArguments
from bus.security.acl import Acl

__all__ = ["lookup"]


def lookup(
    directory: Directory, args: dict[str, Any], acl: Acl | None, caller: str
) -> list[dict[str, Any]]:
    """The ``services`` rows (plus ``address``, the advertised form that matched, and
    ``devices``, everything the service advertises) of the services that drive ``args["address"]``
    and are of kind ``args["kind"]``, either of them optional but not both; sorted by name, up
    and down services alike (the row's ``state`` tells).

    Raises:
        InvalidArguments: neither ``address`` nor ``kind``, one of them not a string, or an
            address that is no address (blank, too long, port out of range).
    """
    address = args.get("address")
    kind = args.get("kind")
    if address is None and kind is None:
        raise InvalidArguments.about(
            "lookup needs 'address' (a device address) or 'kind' (an actor kind), or both",
            argument="address",
            problem="missing",
            expected="str",
        )
    for name, value in (("address", address), ("kind", kind)):
        if value is not None and not isinstance(value, str):
            raise InvalidArguments.about(
                f"argument {name!r} must be str, got {type(value).__name__}",
                argument=name,
                problem="type",
                expected="str",
            )
    query: str | None = None
    if isinstance(address, str):
        try:
            query = normalize(address)
        except ValueError as exc:
            # Details as every broker command gives them (docs/PROTOCOL.md §10, §13).
            raise InvalidArguments.about(
                f"argument 'address': {exc}",
                argument="address",
                problem="value",
                expected="a device address",
            ) from exc
    rows = []
    for entry in sorted(directory.by_name.values(), key=lambda e: e.name):
        if kind is not None and entry.kind != kind:
            continue
        matched = matches(query, entry.devices) if query is not None else None
        if query is not None and matched is None:
            continue
        if acl is not None and not _may_call_some(acl, caller, directory, entry):
            continue
        rows.append({**entry.summary(), "address": matched, "devices": list(entry.devices)})
    return rows


def _may_call_some(acl: Acl, caller: str, directory: Directory, entry: ServiceEntry) -> bool:
    """Whether ``caller`` may call at least one command ``entry`` declares (``ping`` if it
    declares none)."""
    commands = directory.description(entry).get("commands")
    names = list(commands) if isinstance(commands, dict) and commands else ["ping"]
    return any(
        acl.may_call(caller, entry.name, str(name), privileged=name in entry.privileged)
        for name in names
    )
