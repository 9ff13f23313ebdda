"""``DiscoveryDriver``: find FLUX devices on UDP 1901 and report how they change (flux.md §2).

| fluxclient                          | DiscoveryDriver                                   |
|-------------------------------------|---------------------------------------------------|
| ``UpnpDiscover().discover(cb)``     | ``start()`` then ``async for ev in events()``     |
| ``discover_device(uuid)``           | ``discover_device(uuid, timeout_s)``              |
| ``UpnpDiscover(device_ipaddr=ip)``  | ``DiscoveryDriver(poke=[ip])`` or ``poke(ip)``    |
| the devices seen                    | ``devices()`` / ``device(uuid)``                  |

Sockets: a listener on ``(group, port)`` that joins the multicast group on ``interface``; an
optional unicast/broadcast listener on ``(listen, port)`` for hosts where multicast does not
work (the simulator can announce there instead); a helper socket on an ephemeral port that
sends pokes and touches and receives their answers. Device management (TLS) is
``actors.fluxfamily.manager.FluxManager``.

Versions (flux.md §2): v1 devices (default profile) announce their serial, master key and
status; a touch returns name, model, version and the slave key, signed by the master key and
checked here. v2 devices (``bare=Y``) announce a session id and their status; the touch answer
carries serial, name, model, version and the master key, **unsigned** (v2 has no signatures,
so nothing is verified; the master key it gives can pin the robot's TLS certificate, see
``master_key_der``). The version-0 broadcast beacon carries only a uuid: as in fluxclient, a
device not seen yet (or not heard for 3.15 s) is then poked at ``<its ip>:port``. Pokes go out
in both versions, since a device answers only its own: fluxclient pokes only in v1, so it never
finds a bare device by poking.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid as uuidlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import structlog

from actors.discovery.table import DeviceEvent, DeviceTable
from actors.fluxfamily.datagram import (
    DEFAULT_GROUP,
    DISCOVERY_PORT,
    Announcement,
    AnnouncementV2,
    Beacon,
    DatagramError,
    TouchResponse,
    TouchResponseV2,
    build_poke,
    build_touch_request,
    parse_datagram,
    parse_touch_response,
)
from bus.errors import DeviceTimeout, DeviceUnavailable

__all__ = ["DiscoveryDriver", "Subscription"]

log = structlog.get_logger()


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, owner: DiscoveryDriver) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.owner._received(data, (str(addr[0]), int(addr[1])))


class Subscription:
    """A stream of ``DeviceEvent``s; iterate it, close it (or leave its ``with``) when done.

    A subscriber that falls ``size`` events behind loses the oldest ones (counted by the driver).
    """

    def __init__(self, driver: DiscoveryDriver, size: int) -> None:
        self._driver = driver
        self._queue: asyncio.Queue[DeviceEvent] = asyncio.Queue(size)

    def put(self, event: DeviceEvent) -> int:
        """Queue one event; return how many old ones were dropped to make room."""
        dropped = 0
        if self._queue.full():
            self._queue.get_nowait()
            dropped = 1
        self._queue.put_nowait(event)
        return dropped

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> DeviceEvent:
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._driver._subscribers.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _udp_socket(bind: tuple[str, int], *, reuse: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setblocking(False)
    try:
        sock.bind(bind)
    except OSError:
        sock.close()
        raise
    return sock


class DiscoveryDriver:
    """Watch the network for FLUX devices.

    Args:
        group: Multicast group to join (None: no multicast listener).
        port: Discovery port (1901).
        interface: Local address whose interface joins the group (``0.0.0.0``: the default one).
        listen: Also listen on ``(listen, port)`` for unicast or broadcast announcements.
        poke: Device addresses (``host`` or ``host:port``) to poke every ``poke_interval_s``,
            for devices the multicast does not reach.
        timeout_s: A device silent this long is reported gone (announcements come every 3 s).
        poke_interval_s: Period of pokes.
        expire_interval_s: How often silence is checked.
        queue_size: Events buffered per subscriber before the oldest are dropped (and counted).
    """

    def __init__(
        self,
        *,
        group: str | None = DEFAULT_GROUP,
        port: int = DISCOVERY_PORT,
        interface: str = "0.0.0.0",
        listen: str | None = None,
        poke: Sequence[str] = (),
        timeout_s: float = 10.0,
        poke_interval_s: float = 3.0,
        expire_interval_s: float = 0.5,
        queue_size: int = 1000,
    ) -> None:
        self.group, self.port, self.interface, self.listen = group, port, interface, listen
        self.poke_targets = [self._endpoint(target) for target in poke]
        self.timeout_s = timeout_s
        self.poke_interval_s = poke_interval_s
        self.expire_interval_s = expire_interval_s
        self.queue_size = queue_size
        self.table = DeviceTable()
        self.dropped_events = 0
        self._subscribers: set[Subscription] = set()
        self._transports: list[asyncio.DatagramTransport] = []
        self._helper: asyncio.DatagramTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _endpoint(self, text: str) -> tuple[str, int]:
        host, _, port = text.rpartition(":")
        return (host, int(port)) if host else (text, self.port)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the sockets and start listening.

        Raises:
            DeviceUnavailable: A socket could not be bound or the group not joined.
        """
        loop = asyncio.get_running_loop()
        sockets: list[socket.socket] = []
        try:
            sockets.append(
                _udp_socket((self.interface if self.interface != "0.0.0.0" else "", 0), reuse=False)
            )
            if self.group:
                listener = _udp_socket((self.group, self.port), reuse=True)
                sockets.append(listener)
                membership = socket.inet_aton(self.group) + socket.inet_aton(self.interface)
                listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            if self.listen:
                sockets.append(_udp_socket((self.listen, self.port), reuse=True))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            raise DeviceUnavailable(f"discovery on port {self.port}: {exc}") from exc
        for sock in sockets:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(self), sock=sock)
            self._transports.append(transport)
        self._helper = self._transports[0]
        self._tasks.append(asyncio.create_task(self._expire_forever(), name="discovery-expire"))
        if self.poke_targets:
            self._tasks.append(asyncio.create_task(self._poke_forever(), name="discovery-poke"))
        log.info(
            "discovery_started",
            group=self.group,
            port=self.port,
            interface=self.interface,
            listen=self.listen,
        )

    async def stop(self) -> None:
        """Close the sockets; subscribers' iterators end."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        self._helper = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ queries

    def devices(self) -> list[dict[str, Any]]:
        """Metadata of every device currently seen."""
        return self.table.devices()

    def device(self, device: uuidlib.UUID | str) -> dict[str, Any] | None:
        """Metadata of one device, or None if it is not (or no longer) seen."""
        record = self.table.get(
            device if isinstance(device, uuidlib.UUID) else uuidlib.UUID(hex=device)
        )
        return record.as_dict() if record is not None and record.touched else None

    def slave_key_der(self, device: uuidlib.UUID | str) -> bytes | None:
        """The device's current slave public key (v1 only: to verify it on the robot port)."""
        record = self.table.get(
            device if isinstance(device, uuidlib.UUID) else uuidlib.UUID(hex=device)
        )
        return (record.slave_der or None) if record is not None and record.touched else None

    def master_key_der(self, device: uuidlib.UUID | str) -> bytes | None:
        """The device's master public key (DER), if touched: the key its TLS certificate carries
        (the robot driver's ``master_key`` pin)."""
        record = self.table.get(
            device if isinstance(device, uuidlib.UUID) else uuidlib.UUID(hex=device)
        )
        return (record.master_der or None) if record is not None and record.touched else None

    def events(self) -> Subscription:
        """Subscribe to every change from now on: ``appeared``, ``status``, ``changed``, ``gone``.

        Use as ``with driver.events() as events: async for event in events: ...``; the
        subscription starts at this call, so nothing between it and the first read is lost.
        """
        subscription = Subscription(self, self.queue_size)
        self._subscribers.add(subscription)
        return subscription

    async def discover_device(
        self, device: uuidlib.UUID | str, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Wait until ``device`` has appeared and return its metadata.

        Raises:
            DeviceTimeout: It did not appear within ``timeout_s``.
        """
        wanted = device if isinstance(device, uuidlib.UUID) else uuidlib.UUID(hex=device)
        with self.events() as events:
            found = self.device(wanted)
            try:
                async with asyncio.timeout(timeout_s):
                    while found is None:
                        event = await anext(events)
                        if event.kind != "gone" and event.device["uuid"] == wanted.hex:
                            found = event.device
            except TimeoutError as exc:
                raise DeviceTimeout(f"device {wanted.hex} not found within {timeout_s} s") from exc
        return found

    def touch(self, device: uuidlib.UUID | str) -> bool:
        """Ask an announced device for its identity again, in its discovery version (1 or 2).

        The answer arrives as a ``changed`` event if anything changed. Returns False when the
        device has not been announced (there is no address to ask).
        """
        record = self.table.get(
            device if isinstance(device, uuidlib.UUID) else uuidlib.UUID(hex=device)
        )
        if record is None:
            return False
        self._send(build_touch_request(record.uuid, record.discovery_version), record.endpoint)
        return True

    def poke(self, address: str) -> None:
        """Ask the device at ``address`` (``host`` or ``host:port``) to announce itself to us.

        Sent in v1 and v2: a device answers only its own version.
        """
        target = self._endpoint(address)
        for version in (1, 2):
            self._send(build_poke(version), target)

    # ------------------------------------------------------------ internals

    def _send(self, data: bytes, target: tuple[str, int]) -> None:
        if self._helper is None:
            raise DeviceUnavailable("discovery is not started")
        try:
            self._helper.sendto(data, target)
        except OSError as exc:
            log.warning("discovery_send_failed", target=f"{target[0]}:{target[1]}", error=str(exc))

    def _publish(self, events: list[DeviceEvent]) -> None:
        for event in events:
            log.info(
                "discovery_" + event.kind,
                uuid=event.device["uuid"],
                name=event.device["name"],
                st_id=event.device["st_id"],
            )
            for subscription in self._subscribers:
                self.dropped_events += subscription.put(event)

    def _received(self, data: bytes, source: tuple[str, int]) -> None:
        now = time.monotonic()
        try:
            message = parse_datagram(data)
            if isinstance(message, Announcement | AnnouncementV2):
                events, needs_touch = self.table.announced(message, source, now)
                self._publish(events)
                if needs_touch:
                    version = 1 if isinstance(message, Announcement) else 2
                    self._send(build_touch_request(message.uuid, version), source)
            elif isinstance(message, TouchResponseV2):
                if self.table.get(message.uuid) is not None:  # only answers to our touches
                    self._publish(self.table.touched(message, now))
            elif isinstance(message, Beacon):
                if message.uuid.int and self.table.needs_poke(message.uuid, now):
                    self.poke(source[0])
            elif isinstance(message, TouchResponse):
                record = self.table.get(message.uuid)
                if record is not None:
                    self._publish(
                        self.table.touched(parse_touch_response(data, record.master_der), now)
                    )
        except DatagramError as exc:
            log.warning("discovery_bad_datagram", source=f"{source[0]}:{source[1]}", error=str(exc))

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(self.expire_interval_s)
            self._publish(self.table.expire(time.monotonic(), self.timeout_s))

    async def _poke_forever(self) -> None:
        while True:
            for target in self.poke_targets:
                for version in (1, 2):
                    self._send(build_poke(version), target)
            await asyncio.sleep(self.poke_interval_s)
