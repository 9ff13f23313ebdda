"""The one mapping from a FLUX device's ``error SYMBOL ...`` answer to a ``bus.errors`` exception.

The robot session (``actors.flux.session``) and the management session
(``actors.fluxfamily.manager``) both raise what ``device_error`` returns, so a caller sees the
same error code for the same device word on either channel: ``RESOURCE_BUSY`` and
``ALREADY_RUNNING`` → ``Busy``; ``BAD_PARAMS`` → ``InvalidArguments``; any other symbol →
``DeviceFault``. Every error carries ``details["device_code"]`` (the first word) and
``details["symbols"]`` (all of them).
"""

from __future__ import annotations

from bus.errors import Busy, DeviceError, DeviceFault, InvalidArguments

__all__ = ["device_error"]

_BUSY = frozenset({"RESOURCE_BUSY", "ALREADY_RUNNING"})


def device_error(what: str, symbols: tuple[str, ...]) -> DeviceError | Busy | InvalidArguments:
    """The ``bus.errors`` exception for a device's ``error SYMBOL ...`` answer."""
    details = {"device_code": symbols[0], "symbols": list(symbols)}
    message = f"{what}: {' '.join(symbols)}"
    if symbols[0] in _BUSY:
        return Busy(message, details=details)
    if symbols[0] == "BAD_PARAMS":
        return InvalidArguments(message, details=details)
    return DeviceFault(message, details=details)
