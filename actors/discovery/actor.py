"""``DiscoveryActor``: which FLUX devices are on the network, their state, and their management.

Options (the ``[actor.options]`` table, read into ``DiscoveryOptions``)::

    [actor.options]
    group = "239.255.255.250"   # multicast group to join ("" = none)
    port = 1901                 # discovery port
    interface = "0.0.0.0"       # local address whose interface joins the group
    listen = "192.168.1.2"      # also listen for unicast/broadcast announcements here
    poke = ["192.168.1.30"]     # devices to poke (``host`` or ``host:port``) where multicast fails
    timeout_s = 10.0            # silence after which a device is gone
    poke_interval_s = 3.0
    key = "~/.linebus/flux-client-key.pem"   # our RSA key for management (as the flux actor's)
    password = "..."            # default device password for management commands
    manage_port = 1901          # management TCP port (default: the port the device announces from)
    presence = true             # republish broker presence as <service>.actor.<name>
    subscribe = "tcp://127.0.0.1:7752"  # broker subscribe endpoint (default: the line's [broker] subscribe)

``listen`` may also be ``host:port`` (then it sets ``port`` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from typing import Any

from actors.discovery.driver import DiscoveryDriver
from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import DEFAULT_GROUP, DISCOVERY_PORT
from actors.fluxfamily.keys import DEFAULT_KEY, load_key
from actors.fluxfamily.manager import FluxManager
from bus.actor import Actor, CommandContext, command
from bus.backoff import Backoff
from bus.errors import (
    BusError,
    ConfigError,
    DeviceFault,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidArguments,
)
from bus.options import Port, Seconds, Secret, from_table, options

__all__ = ["ACTOR", "DiscoveryActor", "DiscoveryOptions"]

#: What the table-shaped commands return. An alias because the actor has a ``list`` command,
#: which shadows the builtin inside the class body.
_Rows = list[dict[str, Any]]


@options
class DiscoveryOptions:
    """The ``[actor.options]`` of a discovery actor (see the module docstring for an example).

    Args:
        group: Multicast group to join; "" for none.
        port: The discovery port.
        interface: Local address whose interface joins the group.
        listen: Also listen for unicast/broadcast announcements here (``host`` or ``host:port``,
            which sets ``port`` too).
        poke: Devices to poke (``host`` or ``host:port``) where multicast fails; one or a list.
        timeout_s: Silence after which a device is gone.
        poke_interval_s: Interval between pokes.
        key: Our RSA key for management (as the flux actor's).
        password: Default device password for management commands.
        manage_port: Management TCP port; default: the port the device announces from.
        presence: Republish broker presence as ``<service>.actor.<name>``.
        subscribe: Broker subscribe endpoint; default: the line's ``[broker] subscribe``.
    """

    group: str = DEFAULT_GROUP
    port: Port = DISCOVERY_PORT
    interface: str = "0.0.0.0"
    listen: str = ""
    poke: str | tuple[str, ...] = ()
    timeout_s: Seconds = 10.0
    poke_interval_s: Seconds = 3.0
    key: str = DEFAULT_KEY
    password: Secret | None = None
    manage_port: Port | None = None
    presence: bool = True
    subscribe: str = ""


def _uuid(text: str) -> uuidlib.UUID:
    try:
        return uuidlib.UUID(hex=text)
    except ValueError:
        raise InvalidArguments(
            f"not a device uuid: {text!r}", details={"argument": "uuid"}
        ) from None


class DiscoveryActor(Actor):
    """FLUX discovery (fluxclient ``UpnpDiscover``) and device management (``UpnpTask``) on the bus.

    Events: ``<service>.device.<uuid>`` ``{"event": "appeared" | "status" | "changed" | "gone",
    "uuid", "name", "serial", "model_id", "version", "ipaddr", "endpoint", "has_password",
    "st_id", "st_label", "st_ts", "st_prog"}`` (plus ``head_module`` while a task runs and
    ``error_label`` when the device reports one; ``st_ts`` whole seconds) as devices come, change
    state, change identity and go silent; ``<service>.actor.<name>`` republishes the broker's
    ``presence.<name>`` events (which actors are up or down).

    Management commands take the device ``uuid`` and an optional ``password``; without one the
    ``password`` option is used. They authorise with our key if the device trusts it, else with
    the password (then they trust our key, as fluxclient's UpnpTask does). Errors: ``device_fault``
    with the device's symbol (``AUTH_ERROR``, ``NOT_FOUND`` ...), ``device_unavailable``,
    ``device_timeout``; an unknown uuid is ``device_fault`` ``NOT_FOUND``.
    """

    kind = "discovery"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        where = f"discovery {name}"
        self.config = opts = from_table(DiscoveryOptions, self.options, where, noun="option")
        port, listen = opts.port, opts.listen or None
        if listen and ":" in listen:
            listen, _, text = listen.rpartition(":")
            if not text.isdigit():
                raise ConfigError(f"{where}: listen must be host or host:port, got {opts.listen!r}")
            port = int(text)
        self.driver = DiscoveryDriver(
            group=opts.group or None,
            port=port,
            interface=opts.interface,
            listen=listen,
            poke=[opts.poke] if isinstance(opts.poke, str) else list(opts.poke),
            timeout_s=opts.timeout_s,
            poke_interval_s=opts.poke_interval_s,
        )
        self.key_path = opts.key or DEFAULT_KEY
        self.password = opts.password
        self.manage_port = opts.manage_port
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self.key: Any = None

    # ------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        """Open the discovery sockets and follow presence (retrying in the background if the port is busy)."""
        try:
            await self.driver.start()
            self._started = True
        except DeviceUnavailable as exc:
            self.log.warning(
                "discovery_unavailable", error=str(exc), hint="retrying in the background"
            )
            self._spawn(self._start_later(), "start")
        self._spawn(self._forward_devices(), "devices")
        if self.config.presence:
            self._spawn(self._forward_presence(), "presence")

    async def on_stop(self) -> None:
        """Stop forwarding and close the sockets."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.driver.stop()

    def describe_extra(self) -> dict[str, Any]:
        """Where discovery listens and how many devices it sees."""
        d = self.driver
        return {
            "discovery": {
                "group": d.group,
                "port": d.port,
                "listen": d.listen,
                "listening": self._started,
                "devices": len(d.table),
            }
        }

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"discovery {self.name} {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_later(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while not self._started:
            await asyncio.sleep(backoff.next_delay())
            with contextlib.suppress(DeviceUnavailable):  # still taken: try again later
                await self.driver.start()
                self._started = True

    async def _forward_devices(self) -> None:
        with self.driver.events() as events:
            async for event in events:
                self.publish(
                    f"device.{event.device['uuid']}", {"event": event.kind, **event.device}
                )

    async def _forward_presence(self) -> None:
        from bus.aio import AsyncClient
        from bus.client import KeysArg

        endpoint = self.settings.endpoint
        # The line's own subscribe endpoint, unless the config names another.
        subscribe = self.config.subscribe or self.settings.subscribe_endpoint
        # The actor's own identity on a secured line; plaintext otherwise (whatever the env says).
        keys: KeysArg = self.settings.keys if self.settings.keys is not None else False
        while True:
            try:
                async with AsyncClient(
                    endpoint, subscribe_endpoint=subscribe, timeout=5.0, keys=keys
                ) as bus:
                    sub = bus.subscribe("presence.")
                    await sub.wait_ready(10.0)
                    for row in await bus.services():  # the state before the first event
                        if "name" in row:
                            self.publish(
                                f"actor.{row['name']}",
                                {
                                    "service": row["name"],
                                    "kind": row.get("kind", ""),
                                    "state": row.get("state", ""),
                                },
                            )
                    async for event in sub:
                        service = event.topic.removeprefix("presence.")
                        self.publish(f"actor.{service}", event.data)
            except (BusError, OSError) as exc:
                self.log.info("discovery_presence_retry", error=str(exc))
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------ queries

    @command
    async def list(self) -> _Rows:
        """Metadata of every device seen now (``uuid``, ``name``, ``ipaddr``, ``st_id`` ...)."""
        return [
            device
            for device in self.driver.devices()
            if self.driver.device(device["uuid"]) is not None
        ]

    @command(concurrent=True)
    async def get(self, uuid: str, timeout_s: float = 0.0) -> dict[str, Any]:
        """Metadata of one device; with ``timeout_s``, wait that long for it to appear.

        Fails with ``device_fault`` ``NOT_FOUND`` when it is not seen (``device_timeout`` after waiting).
        """
        wanted = _uuid(uuid)
        if timeout_s > 0:
            return await self.driver.discover_device(wanted, timeout_s)
        device = self.driver.device(wanted)
        if device is None:
            raise DeviceFault(f"device {wanted.hex} is not seen", device_code="NOT_FOUND")
        return device

    @command
    async def discover_device(
        self, uuid: str, ctx: CommandContext, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Wait until the device ``uuid`` is seen and return its metadata (fluxclient's ``discover_device``).

        Progress ``{"uuid", "waited_s"}`` at once and every second while searching; fails with
        ``device_timeout`` after ``timeout_s``. Cancellable.
        """
        wanted = _uuid(uuid)
        search = asyncio.ensure_future(self.driver.discover_device(wanted, timeout_s))
        started = time.monotonic()
        try:
            while True:
                ctx.progress({"uuid": wanted.hex, "waited_s": round(time.monotonic() - started, 1)})
                done, _ = await asyncio.wait({search}, timeout=1.0)
                if done:
                    return search.result()
        finally:
            search.cancel()

    @command
    async def touch(self, uuid: str, timeout_s: float = 3.0) -> dict[str, Any]:
        """Ask the device for fresh metadata (a touch) and return it once it answers."""
        wanted = _uuid(uuid)
        record = self.driver.table.get(wanted)
        if record is None or not record.touched:
            raise DeviceFault(f"device {wanted.hex} is not seen", device_code="NOT_FOUND")
        before = record.last_update
        self.driver.touch(wanted)
        end = time.monotonic() + timeout_s
        while record.last_update == before:
            if time.monotonic() > end:
                raise DeviceTimeout(
                    f"device {wanted.hex} did not answer the touch within {timeout_s} s"
                )
            await asyncio.sleep(0.02)
        return record.as_dict()

    @command
    async def poke(self, address: str) -> None:
        """Ask the device at ``address`` (``host`` or ``host:port``) to announce itself to us."""
        self.driver.poke(address)

    # ------------------------------------------------------------ management

    async def _manager(self, uuid: str, password: str | None) -> FluxManager:
        wanted = _uuid(uuid)
        device = self.driver.device(wanted)
        if device is None:
            raise DeviceFault(f"device {wanted.hex} is not seen", device_code="NOT_FOUND")
        if self.key is None:
            self.key = await asyncio.to_thread(load_key, self.key_path)
        host, port = device["endpoint"]
        manager = FluxManager(
            device["ipaddr"] or host, self.key, port=self.manage_port or int(port)
        )
        try:
            await manager.authorize(
                password if password is not None else self.password, label=f"linebus {self.name}"
            )
        except BaseException:
            await manager.close()
            raise
        return manager

    @contextlib.asynccontextmanager
    async def _managed(self, uuid: str, password: str | None) -> AsyncIterator[FluxManager]:
        """An authorised management session with the device, closed on the way out."""
        manager = await self._manager(uuid, password)
        try:
            yield manager
        finally:
            await manager.close()

    @command(privileged=True)
    async def authorize(self, uuid: str, password: str | None = None) -> dict[str, Any]:
        """Authorise with the device (trusted key, else password) and trust our key; ``{"access_id"}``."""
        async with self._managed(uuid, password) as manager:
            await manager.list_trust()
        return {"access_id": crypto.access_id(self.key).hex()}

    @command(privileged=True)
    async def add_trust(self, uuid: str, label: str, pem: str, password: str | None = None) -> None:
        """Trust another client's public key (PEM) on the device."""
        async with self._managed(uuid, password) as manager:
            await manager.add_trust(label, pem)

    @command
    async def list_trust(self, uuid: str, password: str | None = None) -> _Rows:
        """The device's trust list: ``[{"access_id", "label", "type"}, ...]``."""
        async with self._managed(uuid, password) as manager:
            return await manager.list_trust()

    @command(privileged=True)
    async def remove_trust(self, uuid: str, access_id: str, password: str | None = None) -> None:
        """Stop trusting a key (``NOT_FOUND`` if unknown)."""
        async with self._managed(uuid, password) as manager:
            await manager.remove_trust(access_id)

    @command(privileged=True)
    async def rename(self, uuid: str, name: str, password: str | None = None) -> None:
        """Set the device nickname."""
        async with self._managed(uuid, password) as manager:
            await manager.rename(name)

    @command(privileged=True)
    async def modify_password(
        self,
        uuid: str,
        old_password: str,
        new_password: str,
        reset_acl: bool = True,
        password: str | None = None,
    ) -> None:
        """Change the device password; ``reset_acl`` also clears its trust list."""
        async with self._managed(
            uuid, password if password is not None else old_password
        ) as manager:
            await manager.modify_password(old_password, new_password, reset_acl)

    @command(privileged=True)
    async def modify_network(
        self, uuid: str, options: dict[str, str], password: str | None = None
    ) -> None:
        """Change the device's network (``method=dhcp|static``, ``ssid``, ``psk``, ``ipaddr`` ...)."""
        async with self._managed(uuid, password) as manager:
            await manager.modify_network(**{str(k): str(v) for k, v in options.items()})

    @command
    async def get_wifi_list(self, uuid: str, password: str | None = None) -> _Rows:
        """Access points the device sees: ``ssid``, ``bssid``, ``rssi``, ``encrypt``, ``security``."""
        async with self._managed(uuid, password) as manager:
            return await manager.get_wifi_list()


ACTOR = DiscoveryActor
