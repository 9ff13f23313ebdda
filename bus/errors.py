"""The one error hierarchy of linebus, with the stable wire code of each error.

Every error that crosses the bus travels as ``(code, message, details)`` and is rebuilt on the
other side from an allow-list of codes (``error_class``); an unknown code becomes ``RemoteError``
so a newer peer never crashes an older one. Tracebacks never go on the wire.

::

    BusError                                code "internal" (base; also unexpected failures)
    ├── BadRequest                          "bad_request"       malformed, oversized, wrong kind
    │   └── UnsupportedVersion              "unsupported_version"
    ├── UnknownService                      "unknown_service"   no actor of that name was ever seen
    ├── Unavailable                         "unavailable"       actor known but down (retryable)
    │   └── BrokerUnreachable               "broker_unreachable" (client side only)
    ├── DeadlineExceeded (TimeoutError)     "deadline_exceeded"
    ├── UnknownCommand                      "unknown_command"
    ├── InvalidArguments                    "invalid_arguments" details: argument, problem, expected
    ├── Busy                                "busy"              (retryable)
    ├── Cancelled                           "cancelled"
    ├── PermissionDenied                    "permission_denied"
    │   ├── Forbidden                       "forbidden"         the access list refused (broker)
    │   └── Unauthenticated                 "unauthenticated"   the broker refused our key (client)
    ├── DeviceError                         "device_error"      raised by drivers
    │   ├── DeviceUnavailable               "device_unavailable" link down (retryable)
    │   ├── DeviceTimeout                   "device_timeout"
    │   └── DeviceFault                     "device_fault"      details: device_code
    ├── StorageError                        "storage_error"     disk full, corrupt store
    ├── TooOld                              "too_old"           replay: events no longer kept
    ├── ConfigError                         "config_error"      bad config (startup only)
    └── RemoteError                         (any code this version does not know)

This module imports only the standard library: the client core and other-language ports rely on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "BrokerUnreachable",
    "BusError",
    "Busy",
    "Cancelled",
    "ConfigError",
    "DeadlineExceeded",
    "DeviceError",
    "DeviceFault",
    "DeviceTimeout",
    "DeviceUnavailable",
    "Forbidden",
    "InternalError",
    "InvalidArguments",
    "PermissionDenied",
    "RemoteError",
    "StorageError",
    "TooOld",
    "Unauthenticated",
    "Unavailable",
    "UnknownCommand",
    "UnknownService",
    "UnsupportedVersion",
    "error_class",
    "from_wire",
]


class BusError(Exception):
    """Base class of every error linebus raises on purpose.

    Args:
        message: What went wrong, written for the person reading the log or the exception.
        details: Machine-readable facts (msgpack-serialisable) that travel with the error.
    """

    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    @property
    def wire_code(self) -> str:
        """The code this error travels under in an ERROR: its class's ``code``."""
        return self.code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))


def _rebuild(cls: type[BusError], message: str, details: dict[str, Any]) -> BusError:
    return cls(message, details=details)


class InternalError(BusError):
    """An unexpected failure inside linebus (a bug); the traceback is in the peer's log."""

    code = "internal"


class BadRequest(BusError):
    """The message was malformed, oversized, or not valid in this place."""

    code = "bad_request"


class UnsupportedVersion(BadRequest):
    """The peer speaks a protocol version this side does not."""

    code = "unsupported_version"


class UnknownService(BusError):
    """No actor of that service name has ever registered with the broker."""

    code = "unknown_service"


class Unavailable(BusError):
    """The service is known but not up, or died while handling the request."""

    code = "unavailable"
    retryable = True


class BrokerUnreachable(Unavailable):
    """The client could not reach the broker within its timeout."""

    code = "broker_unreachable"


class DeadlineExceeded(BusError, TimeoutError):
    """The request's deadline passed before it was answered."""

    code = "deadline_exceeded"


class UnknownCommand(BusError):
    """The actor has no command of that name."""

    code = "unknown_command"


class InvalidArguments(BusError):
    """The arguments do not match the command's signature; ``details['argument']`` names it.

    Raised by the actor runtime's signature check and by the broker's own commands through
    ``about``, whose details always have ``argument``, ``problem`` and ``expected``
    (docs/PROTOCOL.md §10); a command's own checks may give fewer.
    """

    code = "invalid_arguments"

    @classmethod
    def about(
        cls,
        message: str,
        *,
        argument: str | None,
        problem: str,
        expected: str | None,
        **extra: Any,
    ) -> InvalidArguments:
        """An error with the documented details.

        Args:
            message: What is wrong, for people.
            argument: The argument's name; None when the arguments as a whole are wrong.
            problem: ``unknown``, ``missing``, ``type`` or ``value``.
            expected: What the argument must be (a type name, or a description of the values
                allowed); None for an unknown argument.
            **extra: More details (``known``: the argument names there are).
        """
        return cls(
            message,
            details={"argument": argument, "problem": problem, "expected": expected, **extra},
        )


class Busy(BusError):
    """The actor or device cannot take this command now (queue full, conflicting job)."""

    code = "busy"
    retryable = True


class Cancelled(BusError):
    """The request was cancelled by its caller or by an orderly shutdown."""

    code = "cancelled"


class PermissionDenied(BusError):
    """The caller may not use this service or command."""

    code = "permission_denied"


class Forbidden(PermissionDenied):
    """The broker's access list refused the call; nothing reached the actor.

    ``details``: ``identity`` (the caller's key name), ``service``, ``command`` and ``rule``
    (which check refused: ``call``, ``privileged``, ``unknown_identity``, ...).
    """

    code = "forbidden"


class Unauthenticated(PermissionDenied):
    """The broker refused our key during the CURVE handshake (unknown, revoked or wrong key).

    Raised on the client side when the connection's monitor reports the refusal, instead of
    waiting for a timeout; ``details`` may carry ``endpoint`` and ``key`` (our public key, Z85).
    """

    code = "unauthenticated"


class DeviceError(BusError):
    """Base of the errors raised by device drivers."""

    code = "device_error"


class DeviceUnavailable(DeviceError):
    """The device cannot be reached (connection refused, link down, port gone)."""

    code = "device_unavailable"
    retryable = True


class DeviceTimeout(DeviceError, TimeoutError):
    """The device did not answer in time."""

    code = "device_timeout"


class DeviceFault(DeviceError):
    """The device answered with an error; ``details['device_code']`` carries its own symbol."""

    code = "device_fault"

    def __init__(
        self,
        message: str = "",
        *,
        device_code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        merged = dict(details or {})
        if device_code is not None:
            merged["device_code"] = device_code
        super().__init__(message, details=merged)

    @property
    def device_code(self) -> str | None:
        """The device's own error symbol (for example ``NOT_EXIST``), if it gave one."""
        value = self.details.get("device_code")
        return value if isinstance(value, str) else None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))


class StorageError(BusError):
    """Local storage failed: disk full, quota reached, corrupt or wrong-version database."""

    code = "storage_error"


class TooOld(BusError):
    """The events asked for (``replay``, PROTOCOL.md §9) fell out of the publisher's ring of
    recent events, by count or age, or belong to an incarnation of it that is gone.

    ``details``: ``topic``, and ``oldest``, the oldest sequence number still kept (None when
    none is), from which the rest can be asked for.
    """

    code = "too_old"


class ConfigError(BusError):
    """A configuration file or value is invalid; raised at start-up, never sent on the wire."""

    code = "config_error"


class RemoteError(BusError):
    """An error whose code this version of linebus does not know; ``remote_code`` keeps it.

    ``remote_error`` is this class's code in Python only: sent on (an actor letting through an
    error of a service it called), it travels under ``remote_code``, the code it came with.
    """

    code = "remote_error"

    def __init__(
        self,
        message: str = "",
        *,
        remote_code: str = "remote_error",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.remote_code = remote_code

    def __str__(self) -> str:
        return f"[{self.remote_code}] {self.message}"

    @property
    def wire_code(self) -> str:
        """The code it arrived with: linebus never sends ``remote_error`` itself."""
        return self.remote_code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_remote, (self.message, self.remote_code, self.details))


def _rebuild_remote(message: str, remote_code: str, details: dict[str, Any]) -> RemoteError:
    return RemoteError(message, remote_code=remote_code, details=details)


# The allow-list of classes rebuilt from the wire: one place, checked by a unit test.
_BY_CODE: dict[str, type[BusError]] = {
    cls.code: cls
    for cls in (
        InternalError,
        BadRequest,
        UnsupportedVersion,
        UnknownService,
        Unavailable,
        BrokerUnreachable,
        DeadlineExceeded,
        UnknownCommand,
        InvalidArguments,
        Busy,
        Cancelled,
        PermissionDenied,
        Forbidden,
        Unauthenticated,
        DeviceError,
        DeviceUnavailable,
        DeviceTimeout,
        DeviceFault,
        StorageError,
        TooOld,
        ConfigError,
    )
}

WIRE_CODES: tuple[str, ...] = tuple(_BY_CODE)


def error_class(code: str) -> type[BusError] | None:
    """Return the class for a wire code, or None when this version does not know the code."""
    return _BY_CODE.get(code)


def from_wire(code: str, message: str, details: Mapping[str, Any] | None = None) -> BusError:
    """Rebuild an error received from a peer; unknown codes become ``RemoteError``."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return RemoteError(message, remote_code=code, details=details)
    return cls(message, details=details)
