"""fluxclient's ``upnp`` (``UpnpDiscover``, ``UpnpTask``) over linebus.

::

    from clients.discovery import UpnpDiscover, UpnpTask

    with UpnpDiscover("tcp://127.0.0.1:7750") as discover:       # the discovery actor's service: "discovery"
        for device in discover.devices(timeout=5):                # metadata dicts as devices appear
            print(device["uuid"], device["name"], device["ipaddr"], device["st_id"])

    task = UpnpTask(device["uuid"], bus="tcp://127.0.0.1:7750",
                    backend_options={"password": lambda task: getpass("Device password: ")})
    task.rename("printer-7")
    print(task.get_wifi_list())

The discovery actor listens on the network and owns the client key; these objects ask it over
the bus. Metadata keeps fluxclient's keys and types (``uuid`` a ``uuid.UUID``, ``endpoint`` a
tuple). Errors: ``ManagerError`` (the device refused; ``err_symbol`` holds its words) and
``ManagerException`` (session failures), raised ``from`` the bus error.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bus.client import Client
from bus.errors import BusError
from clients._session import BusSession, connect_bus

if TYPE_CHECKING:  # cryptography is needed only by callers that pass a key object
    from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["ManagerError", "ManagerException", "UpnpDiscover", "UpnpError", "UpnpTask", "metadata"]

DEFAULT_SERVICE = "discovery"


class ManagerError(RuntimeError):
    """The device refused a management request. ``err_symbol``: its words (``("AUTH_ERROR",)``)."""

    def __init__(
        self,
        message: str,
        *symbols: str,
        code: str = "device_fault",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.err_symbol = symbols or ("UNKNOWN_ERROR",)
        self.code = code
        self.details = dict(details or {})


class ManagerException(Exception):
    """The management session failed (timeout, device or actor unreachable)."""

    def __init__(
        self,
        message: str,
        *symbols: str,
        code: str = "device_unavailable",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.err_symbol = symbols or ("CONNECTION_BROKEN",)
        self.code = code
        self.details = dict(details or {})


UpnpError = ManagerError


def _translate(exc: BusError) -> ManagerError | ManagerException:
    code = getattr(exc, "remote_code", None) or exc.code
    raw = exc.details.get("symbols")
    symbols = tuple(str(s) for s in raw) if isinstance(raw, list) and raw else ()
    if not symbols and isinstance(exc.details.get("device_code"), str):
        symbols = (exc.details["device_code"],)
    if code in ("device_timeout", "deadline_exceeded"):
        return ManagerException(exc.message, "TIMEOUT", code=code, details=exc.details)
    if code in ("device_unavailable", "unavailable", "unknown_service", "internal", "cancelled"):
        return ManagerException(exc.message, *symbols, code=code, details=exc.details)
    if code == "invalid_arguments" and not symbols:
        symbols = ("BAD_PARAMS",)
    return ManagerError(exc.message, *symbols, code=code, details=exc.details)


def metadata(data: dict[str, Any]) -> dict[str, Any]:
    """fluxclient's metadata types from the actor's: ``uuid`` as ``uuid.UUID``, ``endpoint`` a tuple."""
    out = {k: v for k, v in data.items() if k != "event"}
    out["uuid"] = uuidlib.UUID(hex=str(data["uuid"]))
    if isinstance(data.get("endpoint"), list):
        out["endpoint"] = (str(data["endpoint"][0]), int(data["endpoint"][1]))
    return out


class UpnpDiscover(BusSession):
    """Devices seen by the discovery actor ``service``, as they appear.

    Args:
        bus: A ``bus.client.Client`` or the broker's command endpoint.
        service: The discovery actor's service name.
        uuid: Only this device (fluxclient's ``UpnpDiscover(uuid=...)``).
        device_ipaddr: Only the device at this address (also poked, so it announces itself).
    """

    def __init__(
        self,
        bus: Client | str,
        service: str = DEFAULT_SERVICE,
        *,
        uuid: uuidlib.UUID | str | None = None,
        device_ipaddr: str | None = None,
    ) -> None:
        self._bus, self._owned = connect_bus(bus)
        self.service = service
        self.uuid = uuidlib.UUID(hex=str(uuid)) if isinstance(uuid, str) else uuid
        self.device_ipaddr = device_ipaddr
        self.found: dict[uuidlib.UUID, dict[str, Any]] = {}
        self._running = False

    def _wanted(self, device: dict[str, Any]) -> bool:
        return (self.uuid is None or device["uuid"] == self.uuid) and (
            self.device_ipaddr is None or device["ipaddr"] == self.device_ipaddr
        )

    def list(self) -> list[dict[str, Any]]:
        """The devices seen right now."""
        try:
            rows = self._bus.call(self.service, "list")
        except BusError as exc:
            raise _translate(exc) from exc
        return [d for d in (metadata(row) for row in rows) if self._wanted(d)]

    def devices(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield each device's metadata once as it is (or already was) seen.

        Runs for ``timeout`` seconds (None: forever).
        """
        try:
            sub = self._bus.subscribe(f"{self.service}.device.")
            sub.wait_ready(5.0)
            if self.device_ipaddr:
                self._bus.call(self.service, "poke", {"address": self.device_ipaddr})
        except BusError as exc:
            raise _translate(exc) from exc
        end = None if timeout is None else time.monotonic() + timeout
        seen: set[uuidlib.UUID] = set()
        try:
            for device in self.list():
                seen.add(device["uuid"])
                self.found[device["uuid"]] = device
                yield device
            while end is None or time.monotonic() < end:
                event = sub.next(None if end is None else max(0.0, end - time.monotonic()))
                if event is None:
                    return
                if not isinstance(event.data, dict):
                    continue
                device = metadata(event.data)
                if event.data.get("event") == "gone":
                    seen.discard(device["uuid"])
                    self.found.pop(device["uuid"], None)
                    continue
                self.found[device["uuid"]] = device
                if device["uuid"] not in seen and self._wanted(device):
                    seen.add(device["uuid"])
                    yield device
        finally:
            sub.close()

    def discover(self, callback: Callable[..., Any], timeout: float = 10.0) -> None:
        """fluxclient's loop: ``callback(self, **metadata)`` per device until ``stop()`` or ``timeout``."""
        self._running = True
        for device in self.devices(timeout):
            callback(self, **device)
            if not self._running:
                return

    def stop(self) -> None:
        """End ``discover`` after the current callback."""
        self._running = False


class UpnpTask(BusSession):
    """Manage one device, like fluxclient's ``UpnpTask``; requests go through the discovery actor.

    Args:
        uuid: The device uuid (``uuid.UUID`` or hex).
        client_key, ipaddr: Accepted for fluxclient compatibility and ignored: the actor owns
            the key and knows the address.
        device_metadata: Skip the lookup.
        backend_options: ``{"password": str}`` or ``{"password": callable(task) -> str}``, used
            when the device does not trust the actor's key yet.
        lookup_timeout: Seconds to wait for the device to be seen.
        bus: A ``bus.client.Client`` or the broker's command endpoint.
        service: The discovery actor's service name.
    """

    def __init__(
        self,
        uuid: uuidlib.UUID | str,
        client_key: Any = None,
        ipaddr: str | None = None,
        device_metadata: dict[str, Any] | None = None,
        backend_options: dict[str, Any] | None = None,
        lookup_timeout: float = 10.0,
        *,
        bus: Client | str,
        service: str = DEFAULT_SERVICE,
        timeout: float = 30.0,
    ) -> None:
        self._bus, self._owned = connect_bus(bus)
        self.service = service
        self.timeout = timeout
        self.uuid = uuid if isinstance(uuid, uuidlib.UUID) else uuidlib.UUID(hex=str(uuid))
        self.backend_options = dict(backend_options or {})
        self._password: str | None = None
        try:
            if device_metadata is None:
                device_metadata = metadata(
                    self._call(
                        "get",
                        {"uuid": self.uuid.hex, "timeout_s": float(lookup_timeout)},
                        lookup_timeout + 5,
                    )
                )
            self.device_meta = device_metadata
            self.authorized = False
            self._authorize()
        except BaseException:
            self.close()
            raise

    # metadata, as fluxclient's properties
    @property
    def name(self) -> str:
        """Device nickname."""
        return str(self.device_meta.get("name", ""))

    @property
    def serial(self) -> str:
        """Device serial."""
        return str(self.device_meta.get("serial", ""))

    @property
    def model_id(self) -> str:
        """Model id."""
        return str(self.device_meta.get("model_id", ""))

    @property
    def version(self) -> str:
        """Firmware version."""
        return str(self.device_meta.get("version", ""))

    @property
    def ipaddr(self) -> str:
        """Device address."""
        return str(self.device_meta.get("ipaddr", ""))

    def _call(self, command: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        try:
            return self._bus.call(self.service, command, args, timeout=timeout or self.timeout)
        except BusError as exc:
            raise _translate(exc) from exc

    def _manage(self, command: str, **args: Any) -> Any:
        payload = {"uuid": self.uuid.hex, **args}
        if self._password is not None and "password" not in args:
            payload["password"] = self._password
        return self._call(command, payload)

    def _authorize(self) -> None:
        """Authorise: the actor's key if trusted, else the password option (then the key is trusted)."""
        try:
            self._call("authorize", {"uuid": self.uuid.hex})
        except ManagerError as exc:
            if exc.err_symbol[0] != "AUTH_ERROR" or "password" not in self.backend_options:
                raise
            password = self.backend_options["password"]
            self.authorize_with_password(password(self) if callable(password) else str(password))
        self.authorized = True

    def authorize_with_password(self, password: str) -> None:
        """Authorise with the device password (and trust the actor's key)."""
        self._call("authorize", {"uuid": self.uuid.hex, "password": password})
        self._password = password
        self.authorized = True

    def rename(self, new_name: str) -> None:
        """Set the device nickname."""
        self._manage("rename", name=new_name)

    def modify_password(self, old_password: str, new_password: str, reset_acl: bool = True) -> None:
        """Change the device password (``reset_acl`` clears the trust list)."""
        self._manage(
            "modify_password",
            old_password=old_password,
            new_password=new_password,
            reset_acl=reset_acl,
        )
        self._password = new_password

    def modify_network(self, **settings: Any) -> None:
        """Change the device network: ``method="dhcp"|"static"``, ``ssid``, ``psk``, ``ipaddr`` ..."""
        self._manage("modify_network", options={k: str(v) for k, v in settings.items()})

    def get_wifi_list(self) -> list[dict[str, Any]]:
        """Access points the device sees."""
        return list(self._manage("get_wifi_list"))

    def add_trust(
        self, label: str, key: str | bytes | rsa.RSAPrivateKey | rsa.RSAPublicKey
    ) -> None:
        """Trust a client public key (PEM ``str``/``bytes`` or a ``cryptography`` RSA key)."""
        pem = key if isinstance(key, (str, bytes)) else _public_pem(key)
        self._manage("add_trust", label=label, pem=pem.decode() if isinstance(pem, bytes) else pem)

    def list_trust(self) -> list[dict[str, Any]]:
        """The trust list: ``[{"access_id", "label", "type"}, ...]``."""
        return list(self._manage("list_trust"))

    def remove_trust(self, access_id: str) -> None:
        """Stop trusting a key."""
        self._manage("remove_trust", access_id=access_id)


def _public_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    """The PEM SubjectPublicKeyInfo of a key (what the device's trust list stores)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
