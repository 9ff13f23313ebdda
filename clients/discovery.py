"""fluxclient's discovery and management (``fluxclient.upnp``, ``fluxclient.device``) over linebus.

::

    from clients.discovery import UpnpDiscover, UpnpTask, discover_device

    with UpnpDiscover() as discover:                    # or UpnpDiscover(bus, "discovery")
        for device in discover.devices(timeout=5):      # metadata dicts as devices appear
            print(device["uuid"], device["name"], device["ipaddr"], device["st_id"])

    task = UpnpTask(device["uuid"],
                    backend_options={"password": lambda task: getpass("Device password: ")})
    task.rename("printer-7")
    print(task.get_wifi_list())

    robot = discover_device(device["uuid"]).connect_robot(client_key)   # a FluxRobot

The discovery actor listens on the network and owns the client key; these objects ask it over
the bus. Built the vendor's way (no bus given), they use the bus of ``LINEBUS_ENDPOINT`` and the
discovery actor the broker names (``lookup`` by kind; see ``clients._vendor`` for the rule that
tells a bus-style call apart). fluxclient's current names are here too: ``DeviceDiscover``,
``DeviceManager`` (``from_uuid``, ``from_ipaddr``, ``from_device``), ``Device``
(``connect_robot``, ``connect_camera``, ``manage_device``), ``discover_device``. Metadata keeps
fluxclient's keys and types (``uuid`` a ``uuid.UUID``, ``endpoint`` a tuple). Errors:
``ManagerError`` / ``UpnpError`` (the device refused; ``err_symbol`` holds its words) and
``ManagerException`` / ``UpnpException`` (every session failure: timeouts, an unreachable
broker, a bad endpoint, no discovery actor), raised ``from`` the bus error with its ``code``.
"""

from __future__ import annotations

import math
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bus.client import Client
from bus.errors import BusError
from clients._session import BusSession, connect_bus
from clients._vendor import is_bus, open_default_bus, vendor_session
from clients.flux import FluxCamera, FluxRobot
from clients.fluxkey import KeyObject

if TYPE_CHECKING:  # cryptography is needed only by callers that pass a key object
    from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "Device",
    "DeviceDiscover",
    "DeviceManager",
    "ManagerError",
    "ManagerException",
    "UpnpDiscover",
    "UpnpError",
    "UpnpException",
    "UpnpTask",
    "discover_device",
    "metadata",
]

DEFAULT_SERVICE = "discovery"
#: fluxclient's discovery group and port (accepted by ``UpnpDiscover``; the actor's options rule).
MULTICAST_IPADDR = "239.255.255.250"
MULTICAST_PORT = 1901
#: Longest wait between two ``lookup_callback`` calls, in seconds.
_IDLE_S = 0.5


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
#: fluxclient's ``fluxclient.upnp.UpnpException``: the session failures.
UpnpException = ManagerException

#: Bus codes that mean the session, not the device's answer, failed.
_SESSION_CODES = frozenset(
    {
        "device_unavailable",
        "unavailable",
        "unknown_service",
        "internal",
        "cancelled",
        "broker_unreachable",
        "config_error",
        "unauthenticated",
        "forbidden",
    }
)


def _translate(exc: BusError) -> ManagerError | ManagerException:
    code = getattr(exc, "remote_code", None) or exc.code
    raw = exc.details.get("symbols")
    symbols = tuple(str(s) for s in raw) if isinstance(raw, list) and raw else ()
    if not symbols and isinstance(exc.details.get("device_code"), str):
        symbols = (exc.details["device_code"],)
    if code in ("device_timeout", "deadline_exceeded"):
        return ManagerException(exc.message, "TIMEOUT", code=code, details=exc.details)
    if code in _SESSION_CODES:
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
    """Devices seen by a discovery actor, as they appear; built the vendor's way or the bus's.

    Vendor-style, as fluxclient (the bus is ``LINEBUS_ENDPOINT``'s, or ``tcp://127.0.0.1:7750``,
    with the client environment's keys; the broker names the ``discovery`` actor, the first up
    one by name if there are several)::

        UpnpDiscover()                                   # every device
        UpnpDiscover(uuid=UUID(...))                     # or device_ipaddr="192.168.1.30"

    Bus-style, naming the bus and (optionally) the actor::

        UpnpDiscover("tcp://127.0.0.1:7750", "discovery")      # or UpnpDiscover(client)
        UpnpDiscover(uuid=..., bus=client, service="discovery")  # bus-style with a filter

    The rule: bus-style when the first argument is a ``bus.client.Client`` or a string with a
    ZeroMQ transport scheme (``tcp://``, ``ipc://`` ...); then the second positional argument is
    the service name, not an address. Otherwise vendor-style: ``uuid`` a ``uuid.UUID`` or hex
    string, ``device_ipaddr`` an IP address.

    Args:
        uuid: Only this device (vendor-style); the bus (bus-style).
        device_ipaddr: Only the device at this address, also poked so it announces itself
            (vendor-style); the service name (bus-style).
        mcst_ipaddr, mcst_port: Accepted for fluxclient's signature; the actor's ``group`` and
            ``port`` options decide where it listens.
        bus: The bus, when not given first: a ``Client`` (borrowed) or an endpoint.
        service: The discovery actor; None: ask the broker (``lookup`` of kind ``discovery``).
        timeout: Default bus deadline of the calls, in seconds (the client's default: None).

    Every failure, a bad endpoint, an unreachable broker and no discovery actor included, is a
    ``ManagerException`` (``ManagerError`` for a bad ``uuid``) with the linebus ``code``.
    """

    def __init__(
        self,
        uuid: Client | str | uuidlib.UUID | None = None,
        device_ipaddr: str | None = None,
        mcst_ipaddr: str = MULTICAST_IPADDR,
        mcst_port: int = MULTICAST_PORT,
        *,
        bus: Client | str | None = None,
        service: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._closed = True  # until there is a connection to close
        if is_bus(uuid):  # UpnpDiscover(bus, service)
            bus, service, uuid, device_ipaddr = uuid, service or device_ipaddr, None, None
        self.uuid = _uuid_arg(uuid)
        self.device_ipaddr = device_ipaddr
        self.found: dict[uuidlib.UUID, dict[str, Any]] = {}
        self._running = False
        #: What ``Device.connect_robot`` of the devices found here connects through.
        self._device_bus: Client | str | None = bus
        try:
            self._bus, self._owned, self.service = _discovery_session(bus, service, timeout)
        except BusError as exc:
            raise _translate(exc) from exc
        self._closed = False

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

    def devices(
        self, timeout: float | None = None, *, idle: Callable[[], Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield each device's metadata once as it is (or already was) seen.

        Runs for ``timeout`` seconds (None: forever). ``idle`` is called at least every
        0.5 s while nothing arrives (fluxclient's ``lookup_callback``).
        """
        try:
            yield from self._devices(timeout, idle)
        except BusError as exc:
            raise _translate(exc) from exc

    def _devices(
        self, timeout: float | None, idle: Callable[[], Any] | None
    ) -> Iterator[dict[str, Any]]:
        sub = self._bus.subscribe(f"{self.service}.device.")
        end = None if timeout is None else time.monotonic() + timeout
        seen: set[uuidlib.UUID] = set()
        try:
            sub.wait_ready(5.0)
            if self.device_ipaddr:
                self._bus.call(self.service, "poke", {"address": self.device_ipaddr})
            for device in self.list():
                seen.add(device["uuid"])
                self.found[device["uuid"]] = device
                yield device
            while end is None or time.monotonic() < end:
                wait = None if end is None else max(0.0, end - time.monotonic())
                if idle is not None:
                    wait = _IDLE_S if wait is None else min(wait, _IDLE_S)
                event = sub.next(wait)
                if event is None:
                    if idle is None:
                        return
                    idle()  # after each wait, the last one too (as fluxclient's loop)
                    continue
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

    def discover(
        self,
        callback: Callable[..., Any],
        lookup_callback: Callable[[UpnpDiscover], Any] | None = None,
        timeout: float = math.inf,
    ) -> None:
        """fluxclient's loop, until ``stop()`` or ``timeout`` seconds (default: forever).

        ``callback(self, device=Device, **metadata)`` per device found (so both fluxclient's
        ``callback(discover, device, **kw)`` and the older ``callback(discover, **metadata)``
        read it); ``lookup_callback(self)`` about every 0.5 s while nothing arrives.
        """
        self._running = True

        def idle() -> None:
            if lookup_callback is not None:
                lookup_callback(self)
            if not self._running:
                raise _Stopped

        try:
            for meta in self.devices(None if math.isinf(timeout) else timeout, idle=idle):
                callback(self, **meta, device=Device(meta, bus=self._device_bus))
                if not self._running:
                    return
        except _Stopped:
            return

    def stop(self) -> None:
        """End ``discover`` (after the current callback)."""
        self._running = False

    def poke(self, ipaddr: str, version: int | None = None) -> None:
        """Ask the device at ``ipaddr`` to announce itself now (through the discovery actor).

        ``version`` is accepted for fluxclient's signature: the actor pokes in the discovery
        version it speaks with that device.
        """
        try:
            self._bus.call(self.service, "poke", {"address": ipaddr})
        except BusError as exc:
            raise _translate(exc) from exc


#: fluxclient's current name (``fluxclient.device.DeviceDiscover``) of ``UpnpDiscover``.
DeviceDiscover = UpnpDiscover


class _Stopped(Exception):
    """``stop()`` was called from a ``lookup_callback``."""


def _uuid_arg(value: object) -> uuidlib.UUID | None:
    """fluxclient's ``uuid`` argument: a ``uuid.UUID``, a hex string, or None."""
    if value is None or isinstance(value, uuidlib.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuidlib.UUID(hex=value)
        except ValueError:
            pass
    raise ManagerError(
        f"uuid must be a uuid.UUID or its hex string, not {value!r}",
        "BAD_PARAMS",
        code="invalid_arguments",
        details={"argument": "uuid"},
    )


def _discovery_session(
    bus: Client | str | None, service: str | None, timeout: float | None = None
) -> tuple[Client, bool, str]:
    """``(client, owned, service)``: ``bus`` (None: the default bus), and ``service`` or the
    discovery actor the broker names."""
    if service is not None:
        if bus is None:
            return open_default_bus(timeout), True, service
        client, owned = connect_bus(bus, timeout=timeout)
        return client, owned, service
    return vendor_session("discovery", None, "device discovery", bus=bus, timeout=timeout)


class UpnpTask(BusSession):
    """Manage one device, like fluxclient's ``UpnpTask``; requests go through the discovery actor.

    Vendor-style (no ``bus``): the bus is ``LINEBUS_ENDPOINT``'s (or ``tcp://127.0.0.1:7750``),
    with the client environment's keys, and the broker names the ``discovery`` actor::

        task = UpnpTask(uuid, backend_options={"password": "..."})

    Bus-style: ``UpnpTask(uuid, bus=client_or_endpoint, service="discovery")``.

    Args:
        uuid: The device uuid (``uuid.UUID`` or hex).
        client_key: Accepted for fluxclient's signature and not used: the actor owns the key.
        ipaddr: With ``uuid`` ``UUID(int=0)``, look the device up by this address instead.
        device_metadata, remote_profile: The device's metadata: skip the lookup.
        backend_options: ``{"password": str}`` or ``{"password": callable(task) -> str}``, used
            when the device does not trust the actor's key yet.
        lookup_callback: Called with the ``UpnpDiscover`` that looks for the device, about every
            0.5 s while it is not seen (as in fluxclient).
        lookup_timeout: Seconds to wait for the device to be seen (``math.inf``: until it is).
        bus: A ``bus.client.Client`` (borrowed) or the broker's command endpoint; None: the
            default bus.
        service: The discovery actor's service name; None: ask the broker.
        timeout: Bus deadline, in seconds, of each management call.

    Errors: ``ManagerError`` (``UpnpError``) when the device refuses, ``ManagerException``
    (``UpnpException``) for every session failure, a bad endpoint, an unreachable broker, no
    discovery actor and a device not seen in time included, with the linebus ``code``.
    """

    def __init__(
        self,
        uuid: uuidlib.UUID | str,
        client_key: Any = None,
        ipaddr: str | None = None,
        device_metadata: dict[str, Any] | None = None,
        remote_profile: dict[str, Any] | None = None,
        backend_options: dict[str, Any] | None = None,
        lookup_callback: Callable[[UpnpDiscover], Any] | None = None,
        lookup_timeout: float = 10.0,
        *,
        bus: Client | str | None = None,
        service: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._closed = True  # until there is a connection to close
        self.timeout = timeout
        self.uuid = _uuid_arg(uuid) or uuidlib.UUID(int=0)
        self.client_key = client_key
        self.backend_options = dict(backend_options or {})
        self._password: str | None = None
        try:
            self._bus, self._owned, self.service = _discovery_session(bus, service, timeout)
        except BusError as exc:
            raise _translate(exc) from exc
        self._closed = False
        try:
            meta = device_metadata or remote_profile
            if not meta:  # fluxclient's lookup: a discovery of the uuid (of ipaddr for uuid 0)
                by_ip = self.uuid.int == 0 and ipaddr is not None
                device = _first_device(
                    self._bus,
                    self.service,
                    uuid=None if by_ip else self.uuid,
                    ipaddr=ipaddr if by_ip else None,
                    lookup_callback=lookup_callback,
                    timeout=float(lookup_timeout),
                )
                meta, self.uuid = device.to_dict(), device.uuid
            self.device_meta = dict(meta)
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
        self, label: str, key: str | bytes | KeyObject | rsa.RSAPrivateKey | rsa.RSAPublicKey
    ) -> None:
        """Trust a client public key (PEM ``str``/``bytes``, a ``KeyObject`` such as
        ``get_or_create_default_key`` gives, or a ``cryptography`` RSA key)."""
        if isinstance(key, KeyObject):
            pem: str | bytes = key.public_key_pem
        else:
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


class DeviceManager(UpnpTask):
    """fluxclient's current name of ``UpnpTask`` (``fluxclient.device.DeviceManager``), with
    its constructors ``from_uuid``, ``from_ipaddr``, ``from_device`` and method names."""

    @classmethod
    def from_uuid(
        cls,
        client_key: Any,
        uuid: uuidlib.UUID | str,
        lookup_callback: Callable[[UpnpDiscover], Any] | None = None,
        lookup_timeout: float = 10.0,
        *,
        bus: Client | str | None = None,
        service: str | None = None,
    ) -> DeviceManager:
        """Manage the device ``uuid`` (looked up for at most ``lookup_timeout`` seconds)."""
        return cls(
            uuid,
            client_key,
            lookup_callback=lookup_callback,
            lookup_timeout=lookup_timeout,
            bus=bus,
            service=service,
        )

    @classmethod
    def from_ipaddr(
        cls,
        client_key: Any,
        ipaddr: str,
        lookup_callback: Callable[[UpnpDiscover], Any] | None = None,
        lookup_timeout: float = 10.0,
        *,
        bus: Client | str | None = None,
        service: str | None = None,
    ) -> DeviceManager:
        """Manage the device at ``ipaddr`` (poked, and waited for ``lookup_timeout`` seconds).

        Raises:
            ManagerException: code ``device_timeout`` when no device answers from ``ipaddr``.
        """
        with UpnpDiscover(bus=bus, service=service) as discover:  # the bus and actor to use
            device = _first_device(
                discover.bus,
                discover.service,
                ipaddr=ipaddr,
                lookup_callback=lookup_callback,
                timeout=lookup_timeout,
            )
            return cls(
                device.uuid,
                client_key,
                device_metadata=device.to_dict(),
                bus=bus,
                service=discover.service,
            )

    @classmethod
    def from_device(cls, client_key: Any, device: Device) -> DeviceManager:
        """Manage a device ``discover_device`` or ``DeviceDiscover`` found."""
        return cls(device.uuid, client_key, device_metadata=device.to_dict(), bus=device.bus)

    @property
    def nickname(self) -> str:
        """The device nickname (fluxclient's name for ``name``)."""
        return self.name

    def set_nickname(self, nickname: str) -> None:
        """Set the device nickname (``rename``)."""
        self.rename(nickname)

    def set_password(self, old_password: str, new_password: str, reset_acl: bool = True) -> None:
        """Change the device password (``modify_password``)."""
        self.modify_password(old_password, new_password, reset_acl)

    def set_network(self, **network_options: Any) -> None:
        """Change the device network (``modify_network``)."""
        self.modify_network(**network_options)

    def scan_wifi_access_points(self) -> list[dict[str, Any]]:
        """Access points the device sees (``get_wifi_list``)."""
        return self.get_wifi_list()


#: fluxclient's status labels of ``st_id`` (``fluxclient.device.device.DEVICE_STATUS_CODE``).
DEVICE_STATUS_CODE = {
    -3: "ST_OCCUPIED_SDK",
    -2: "ST_OCCUPIED_SCAN",
    -1: "ST_OCCUPIED_MAINTAIN",
    0: "ST_IDLE",
    1: "ST_INIT",
    4: "ST_STARTING",
    6: "ST_RESUMING",
    16: "ST_RUNNING",
    18: "ST_RESUMING",
    36: "ST_PAUSED",
    38: "ST_PAUSING",
    48: "ST_PAUSED",
    50: "ST_PAUSING",
    64: "ST_COMPLETED",
    66: "ST_COMPLETING",
    128: "ST_ABORTED",
    130: "ST_ABORTING",
}


class Device:
    """One device as discovery saw it (fluxclient's ``fluxclient.device.Device``).

    Attributes are the metadata's (``uuid``, ``serial``, ``model_id``, ``version``, ``name``,
    ``ipaddr``, ``discover_endpoint``, ``has_password``); ``connect_robot``,
    ``connect_camera`` and ``manage_device`` open sessions with it through the bus it was
    found on.
    """

    def __init__(self, meta: dict[str, Any], *, bus: Client | str | None = None) -> None:
        self.meta = dict(meta)
        #: The bus it was found on (None: the default bus), for the sessions opened from it.
        self.bus = bus
        self.uuid: uuidlib.UUID = meta["uuid"]
        self.serial = str(meta.get("serial", ""))
        self.model_id = str(meta.get("model_id", ""))
        self.version = str(meta.get("version", ""))
        self.name = str(meta.get("name", ""))
        self.ipaddr = str(meta.get("ipaddr", ""))
        self.discover_endpoint = meta.get("endpoint")
        self.has_password = meta.get("has_password")
        self.last_update = meta.get("st_ts")

    def __str__(self) -> str:
        return f"Device: {self.uuid}"

    @property
    def status(self) -> dict[str, Any]:
        """``{"st_id", "st_label", "st_prog", "head_module", "error_label", "last_update"}``."""
        st_id = self.meta.get("st_id")
        return {
            "st_id": st_id,
            "st_label": DEVICE_STATUS_CODE.get(st_id, "ST_UNKNOWN")
            if isinstance(st_id, int)
            else "ST_UNKNOWN",
            "st_prog": self.meta.get("st_prog"),
            "head_module": self.meta.get("head_module"),
            "error_label": self.meta.get("error_label"),
            "last_update": self.last_update,
        }

    def connect_robot(self, client_key: Any, port: int = 23811, **kw: Any) -> FluxRobot:
        """A ``FluxRobot`` session with this device: the flux actor that drives
        ``ipaddr:port`` (``RobotSessionError`` if none does)."""
        kw.pop("conn_callback", None)
        return FluxRobot((self.ipaddr, port), client_key, device=self, bus=self.bus, **kw)

    def connect_camera(self, client_key: Any, port: int = 23812, **kw: Any) -> FluxCamera:
        """A ``FluxCamera`` of this device: the flux actor that drives ``ipaddr:port`` (it
        advertises its camera address beside its robot's; ``RobotSessionError`` if none does)."""
        kw.pop("conn_callback", None)
        return FluxCamera((self.ipaddr, port), client_key, device=self, bus=self.bus, **kw)

    def manage_device(self, client_key: Any, **kw: Any) -> DeviceManager:
        """A ``DeviceManager`` session with this device, through the discovery actor."""
        return DeviceManager.from_device(client_key, self)

    def to_dict(self, serialized: bool = False) -> dict[str, Any]:
        """The metadata this device was made from; with ``serialized``, as JSON can carry it
        (uuids as strings, the endpoint pair as a list), as fluxclient's ``serialized=True``."""
        if not serialized:
            return dict(self.meta)
        return {
            key: str(value)
            if isinstance(value, uuidlib.UUID)
            else list(value)
            if isinstance(value, tuple)
            else value
            for key, value in self.meta.items()
        }

    def to_old_dict(self) -> dict[str, Any]:
        """The metadata, as fluxclient's older callbacks received it."""
        return dict(self.meta)


def _first_device(
    bus: Client,
    service: str,
    *,
    uuid: uuidlib.UUID | None = None,
    ipaddr: str | None = None,
    lookup_callback: Callable[[UpnpDiscover], Any] | None = None,
    timeout: float = math.inf,
) -> Device:
    """The first device seen with ``uuid`` (or at ``ipaddr``), found as fluxclient's lookups
    find it: a ``DeviceDiscover`` on ``bus`` that calls ``lookup_callback(discover)`` while
    waiting.

    Raises:
        ManagerException: code ``device_timeout`` when none is seen within ``timeout`` s.
    """
    found: list[Device] = []

    def on_found(discover: UpnpDiscover, device: Device, **_: Any) -> None:
        found.append(device)
        discover.stop()

    with UpnpDiscover(uuid=uuid, device_ipaddr=ipaddr, bus=bus, service=service) as discover:
        discover.discover(on_found, lookup_callback, timeout)
    if not found:
        what = f"device {uuid}" if uuid is not None else f"a device at {ipaddr}"
        raise ManagerException(
            f"{what} not seen within {timeout} s",
            "TIMEOUT",
            code="device_timeout",
            details={"uuid": uuid.hex if uuid else None, "ipaddr": ipaddr},
        )
    return found[0]


def discover_device(
    uuid: uuidlib.UUID | str,
    lookup_callback: Callable[[UpnpDiscover], Any] | None = None,
    timeout: float = math.inf,
    *,
    bus: Client | str | None = None,
) -> Device | None:
    """Wait for the device ``uuid`` and return it (None if ``timeout`` passes first), as
    ``fluxclient.device.discover_device``; then ``device.connect_robot(client_key)``.

    Raises:
        ManagerException: no discovery actor, a bad endpoint, an unreachable broker ...
    """
    with DeviceDiscover(uuid, bus=bus) as discover:
        try:
            device = _first_device(
                discover.bus,
                discover.service,
                uuid=discover.uuid,
                lookup_callback=lookup_callback,
                timeout=timeout,
            )
        except ManagerException as exc:
            if exc.code != "device_timeout":
                raise
            return None
    device.bus = bus  # sessions opened from it use the caller's bus (None: the default one)
    return device
