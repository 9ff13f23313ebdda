"""The error hierarchy (bus.errors): wire codes, the allow-list, from_wire, pickling, retryable."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import pytest

from bus import errors
from bus.errors import BusError, DeviceFault, RemoteError, error_class, from_wire

PUBLIC_CLASSES = [
    obj
    for name in errors.__all__
    if inspect.isclass(obj := getattr(errors, name)) and issubclass(obj, BusError)
]
SUBCLASSES = [cls for cls in PUBLIC_CLASSES if cls is not BusError]
WIRE_CLASSES = [cls for cls in SUBCLASSES if cls is not RemoteError]

#: The table of docs/PROTOCOL.md: code -> (class name, retryable).
DOCUMENTED = {
    "internal": ("InternalError", False),
    "bad_request": ("BadRequest", False),
    "unsupported_version": ("UnsupportedVersion", False),
    "unknown_service": ("UnknownService", False),
    "unavailable": ("Unavailable", True),
    "broker_unreachable": ("BrokerUnreachable", True),
    "deadline_exceeded": ("DeadlineExceeded", False),
    "unknown_command": ("UnknownCommand", False),
    "invalid_arguments": ("InvalidArguments", False),
    "busy": ("Busy", True),
    "cancelled": ("Cancelled", False),
    "permission_denied": ("PermissionDenied", False),
    "forbidden": ("Forbidden", False),
    "unauthenticated": ("Unauthenticated", False),
    "device_error": ("DeviceError", False),
    "device_unavailable": ("DeviceUnavailable", True),
    "device_timeout": ("DeviceTimeout", False),
    "device_fault": ("DeviceFault", False),
    "storage_error": ("StorageError", False),
    "too_old": ("TooOld", False),
    "config_error": ("ConfigError", False),
}


def _names(classes: list[type]) -> list[str]:
    return [c.__name__ for c in classes]


def make(
    cls: type[BusError],
    message: str = "it broke",
    details: dict[str, Any] | None = None,
) -> BusError:
    if cls is RemoteError:
        return RemoteError(message, remote_code="future_code", details=details)
    return cls(message, details=details)


class TestCodes:
    def test_codes_are_unique(self) -> None:
        """No two public BusError subclasses share a wire code."""
        codes = [cls.code for cls in SUBCLASSES]
        assert len(codes) == len(set(codes)), codes

    def test_base_shares_code_with_internal_error(self) -> None:
        """The base class answers as ``internal``, the code of an unexpected failure."""
        assert BusError.code == errors.InternalError.code == "internal"

    def test_codes_are_snake_case_ascii(self) -> None:
        """Wire codes are lower-case snake_case."""
        for cls in SUBCLASSES:
            assert cls.code.replace("_", "").isalpha() and cls.code == cls.code.lower(), cls

    def test_codes_match_the_documented_table(self) -> None:
        """The allow-list is exactly the table in docs/PROTOCOL.md, class for class."""
        assert {
            code: (cls.__name__, cls.retryable) for code, cls in errors._BY_CODE.items()
        } == DOCUMENTED
        assert set(errors.WIRE_CODES) == set(DOCUMENTED)


class TestAllowList:
    @pytest.mark.parametrize("cls", WIRE_CLASSES, ids=_names(WIRE_CLASSES))
    def test_every_public_subclass_is_listed(self, cls: type[BusError]) -> None:
        """Every public subclass except RemoteError can be rebuilt from its code."""
        assert error_class(cls.code) is cls

    def test_remote_error_is_not_listed(self) -> None:
        """RemoteError is the fallback, never built by code."""
        assert error_class(RemoteError.code) is None
        assert RemoteError not in errors._BY_CODE.values()

    def test_every_subclass_is_public(self) -> None:
        """Every BusError subclass defined in bus.errors is exported (so the allow-list test sees it)."""
        defined = [
            obj
            for obj in vars(errors).values()
            if inspect.isclass(obj)
            and issubclass(obj, BusError)
            and obj.__module__ == errors.__name__
        ]
        assert set(defined) == set(PUBLIC_CLASSES)

    @pytest.mark.parametrize("cls", WIRE_CLASSES, ids=_names(WIRE_CLASSES))
    def test_from_wire_builds_the_class(self, cls: type[BusError]) -> None:
        """from_wire(code, message, details) gives an instance of the code's class."""
        err = from_wire(cls.code, "it broke", {"k": [1, 2]})
        assert type(err) is cls
        assert err.message == "it broke"
        assert err.details == {"k": [1, 2]}
        assert str(err) == f"[{cls.code}] it broke"

    def test_from_wire_copies_details(self) -> None:
        """The error owns its details; the caller's map is not aliased."""
        details = {"k": 1}
        err = from_wire("busy", "x", details)
        details["k"] = 2
        assert err.details == {"k": 1}

    def test_device_fault_from_wire_keeps_device_code(self) -> None:
        """details.device_code comes back as DeviceFault.device_code."""
        err = from_wire("device_fault", "no such file", {"device_code": "NOT_EXIST"})
        assert isinstance(err, DeviceFault) and err.device_code == "NOT_EXIST"


class TestUnknownCode:
    @pytest.mark.parametrize(
        "code", ["future_code", "device.timeout", "", "remote_error", "INTERNAL"]
    )
    def test_unknown_code_becomes_remote_error(self, code: str) -> None:
        """A code this version does not know becomes RemoteError, keeping the code, message and details."""
        err = from_wire(code, "from a newer peer", {"hint": "upgrade"})
        assert type(err) is RemoteError
        assert err.remote_code == code
        assert err.message == "from a newer peer"
        assert err.details == {"hint": "upgrade"}
        assert str(err) == f"[{code}] from a newer peer"
        assert err.retryable is False

    def test_remote_error_is_a_bus_error(self) -> None:
        """Callers that catch BusError catch it too."""
        assert isinstance(from_wire("x", "y"), BusError)

    @pytest.mark.parametrize("code", ["future_code", "remote_error"])
    def test_sent_on_under_the_code_it_came_with(self, code: str) -> None:
        """An unknown code relayed (an actor letting it through) goes out as it came, so no
        peer ever originates remote_error; every other error goes out under its class's code."""
        assert from_wire(code, "x").wire_code == code
        assert pickle.loads(pickle.dumps(from_wire(code, "x"))).wire_code == code

    @pytest.mark.parametrize("cls", WIRE_CLASSES, ids=_names(WIRE_CLASSES))
    def test_known_errors_travel_under_their_code(self, cls: type[BusError]) -> None:
        assert make(cls).wire_code == cls.code


class TestPickling:
    @pytest.mark.parametrize("cls", SUBCLASSES, ids=_names(SUBCLASSES))
    def test_round_trip_keeps_type_message_and_details(self, cls: type[BusError]) -> None:
        """Errors survive pickling (multiprocessing, concurrent.futures) with type, message and details."""
        err = make(cls, "it broke", {"k": [1, {"n": None}]})
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls
        assert back.message == "it broke"
        assert back.details == {"k": [1, {"n": None}]}
        assert back.code == cls.code

    def test_device_fault_keeps_device_code(self) -> None:
        """DeviceFault's device_code survives pickling."""
        back = pickle.loads(pickle.dumps(DeviceFault("nope", device_code="E42")))
        assert back.device_code == "E42"
        assert back.details == {"device_code": "E42"}

    def test_remote_error_keeps_remote_code(self) -> None:
        """RemoteError's remote_code survives pickling."""
        back = pickle.loads(pickle.dumps(RemoteError("x", remote_code="future_code")))
        assert back.remote_code == "future_code"

    def test_default_message_is_the_code(self) -> None:
        """An error made without a message reads as its code, before and after pickling."""
        err = pickle.loads(pickle.dumps(errors.Busy()))
        assert err.message == "busy"
        assert str(err) == "[busy] busy"


class TestRetryable:
    @pytest.mark.parametrize(("code", "row"), list(DOCUMENTED.items()), ids=list(DOCUMENTED))
    def test_retryable_flags(self, code: str, row: tuple[str, bool]) -> None:
        """Only unavailable, broker_unreachable, busy and device_unavailable are retryable."""
        assert error_class(code).retryable is row[1]  # type: ignore[union-attr]

    def test_retryable_is_a_class_attribute(self) -> None:
        """retryable belongs to the class, so a rebuilt error has its class's flag."""
        assert from_wire("unavailable", "down").retryable is True
        assert from_wire("deadline_exceeded", "late").retryable is False


class TestHierarchy:
    @pytest.mark.parametrize(
        ("cls", "bases"),
        [
            (errors.UnsupportedVersion, (errors.BadRequest,)),
            (errors.BrokerUnreachable, (errors.Unavailable,)),
            (errors.DeadlineExceeded, (TimeoutError,)),
            (errors.DeviceTimeout, (errors.DeviceError, TimeoutError)),
            (errors.DeviceUnavailable, (errors.DeviceError,)),
            (errors.DeviceFault, (errors.DeviceError,)),
        ],
    )
    def test_categories(self, cls: type[BusError], bases: tuple[type, ...]) -> None:
        """Catching a category catches its members (e.g. every timeout is a TimeoutError)."""
        for base in bases:
            assert issubclass(cls, base)
        assert issubclass(cls, BusError)
