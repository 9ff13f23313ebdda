"""Commands from MQTT to the line: which are exposed, and one call made for one request.

A request becomes an ordinary linebus call made by the bridge's own client, so on a secured line
it runs under the bridge's identity and access list (the broker checks it, as for any caller);
``Exposure`` is the config's narrower list of what MQTT may reach at all.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bus.aio import AsyncClient
from bus.errors import BusError, Forbidden

__all__ = ["Exposure", "Outcome", "call", "error_body"]


class Exposure:
    """The commands the config exposes, as ``service.command`` globs (``echo1.*``)."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns

    def allows(self, service: str, command: str) -> bool:
        """True if ``service.command`` matches one of the patterns."""
        name = f"{service}.{command}"
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)

    def commands_of(self, service: str, commands: list[str]) -> list[str]:
        """Those of ``service``'s ``commands`` that are exposed, sorted."""
        return sorted(c for c in commands if self.allows(service, c))

    def check(self, service: str, command: str) -> None:
        """Raise ``Forbidden`` unless ``service.command`` is exposed."""
        if not self.allows(service, command):
            raise Forbidden(
                f"{service}.{command} is not exposed to MQTT by this bridge",
                details={"service": service, "command": command, "rule": "expose"},
            )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended: ``{"type": "reply", "result"}`` or ``{"type": "error", "code",
    "message", "details"}`` (``body``)."""

    ok: bool
    body: dict[str, Any]


def error_body(exc: BusError) -> dict[str, Any]:
    """A typed linebus error as the body of an error response."""
    return {"type": "error", "code": exc.code, "message": exc.message, "details": exc.details}


async def call(
    bus: AsyncClient,
    service: str,
    command: str,
    args: Any,
    *,
    timeout: float,
    progress: Callable[[Any], None],
) -> Outcome:
    """Call ``service.command`` with ``args`` (a map, or None: none), reporting progress; a
    typed bus error becomes the outcome instead of being raised."""
    try:
        result = await bus.call(service, command, args or {}, timeout=timeout, progress=progress)
    except BusError as exc:
        return Outcome(False, error_body(exc))
    return Outcome(True, {"type": "reply", "result": result})
