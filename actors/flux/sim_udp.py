"""The simulator's UDP 1901 side (flux.md §2): announcements, beacon, poke and touch answers.

One socket bound to ``(address, port)`` does everything: it sends the periodic announcement to
each target (the multicast group by default, or unicast/broadcast addresses), the version-0
broadcast beacon to its targets, and answers pokes and touches to the datagram's source.
Announcements also go out at once when the status changes, so tests need not wait a whole period.

The device speaks one discovery version: 1 (default profile), or 2 (``bare=Y``); like the
firmware it drops datagrams of any other version.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog

from actors.flux.sim_device import SimDevice
from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import (
    DatagramError,
    Poke,
    TouchRequest,
    build_announcement,
    build_announcement_v2,
    build_beacon,
    build_touch_response,
    build_touch_response_v2,
    parse_datagram,
)

__all__ = ["UdpAnnouncer"]

log = structlog.get_logger()

IDENTIFY = b"WAWASUREMONO"  # the firmware's dev-build identify blob (flux.md §2.9)
#: Beacon period by the ``broadcast`` config (§2.7): A ~3 s, unset or L ~30 s, N off.
BEACON_PERIOD_S = {"A": 2.5, "L": 27.5, "": 27.5}


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpAnnouncer) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.owner.received(data, (str(addr[0]), addr[1]))


class UdpAnnouncer:
    """Announce one ``SimDevice`` and answer discovery requests.

    Args:
        device: The device.
        address: Local address to bind (the device's own loopback address).
        port: Local port (1901 on a real device).
        targets: Where announcements go: ``(host, port)`` pairs, multicast or not.
        interval_s: Announcement period (3 s on the device).
        version: Discovery version: 1, or 2 for a ``bare`` device.
        beacon_targets: Where the version-0 beacon goes (none: no beacon).
    """

    def __init__(
        self,
        device: SimDevice,
        address: str,
        port: int,
        targets: list[tuple[str, int]],
        interval_s: float,
        *,
        version: int = 1,
        beacon_targets: list[tuple[str, int]] | None = None,
    ) -> None:
        self.version = version
        self.beacon_targets = beacon_targets or []
        self.session = os.urandom(8)  # v2: fixed for this "daemon start"
        self.beacons_sent = 0
        self.device = device
        self.address = address
        self.port = port
        self.targets = targets
        self.interval_s = interval_s
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._beacon_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start announcing."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        with contextlib.suppress(
            OSError
        ):  # not every address can carry multicast; unicast targets still work
            sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.address)
            )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.bind((self.address, self.port))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._announce_forever(), name="flux-sim-announce")
        if self.beacon_targets:
            self._beacon_task = asyncio.create_task(self._beacon_forever(), name="flux-sim-beacon")

    async def stop(self) -> None:
        """Stop announcing and close the socket."""
        for task in (self._task, self._beacon_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._transport is not None:
            self._transport.close()

    def announcement(self) -> bytes:
        """The current full announcement (v1, or v2 for a bare device)."""
        device = self.device
        if self.version == 2:
            return build_announcement_v2(device.uuid, self.session, device.status())
        return build_announcement(
            device.uuid,
            device.serial,
            device.slave_ts,
            crypto.public_der(device.master_key),
            IDENTIFY,
            device.status(),
        )

    def _send(self, data: bytes, target: tuple[str, int]) -> None:
        if self._transport is not None and not self.device.faults.silent:
            try:
                self._transport.sendto(data, target)
            except OSError as exc:  # e.g. no route for multicast on this host: keep serving unicast
                log.warning(
                    "flux_sim_udp_send_failed", target=f"{target[0]}:{target[1]}", error=str(exc)
                )

    async def _announce_forever(self) -> None:
        changed = self.device.status_changed
        while True:
            changed.clear()
            for target in self.targets:
                self._send(self.announcement(), target)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await changed.wait()

    async def _beacon_forever(self) -> None:
        # Once at start, then at the period the ``broadcast`` config asks for (read each time:
        # ``config set broadcast`` changes it at run time, as on the device's 3 s cron).
        while True:
            period = BEACON_PERIOD_S.get(self.device.config.get("broadcast", ""))
            if period is not None:
                for target in self.beacon_targets:
                    self._send(build_beacon(self.device.uuid), target)
                self.beacons_sent += 1
            await asyncio.sleep(period if period is not None else self.interval_s)

    def received(self, data: bytes, source: tuple[str, int]) -> None:
        """Answer a poke with the announcement and a touch with the (v1: signed) info."""
        if self.device.faults.silent:
            return
        try:
            message = parse_datagram(data)
        except DatagramError:
            return
        device = self.device
        if isinstance(message, Poke) and message.version == self.version:
            self._send(self.announcement(), source)
        elif (
            isinstance(message, TouchRequest)
            and message.uuid == device.uuid
            and message.version == self.version
        ):
            self._send(self.touch_response(), source)

    def touch_response(self) -> bytes:
        """The touch answer: v1 signed by both keys, v2 plain with the serial in its info."""
        device = self.device
        if self.version == 2:
            info = {"serial": device.serial, **device.touch_info()}
            info.pop("time", None)  # v2 carries no clock (§2.6)
            return build_touch_response_v2(
                device.uuid, crypto.public_der(device.master_key), IDENTIFY, info
            )
        return build_touch_response(
            device.uuid,
            device.slave_ts,
            device.master_key,
            device.slave_key,
            device.touch_info(),
        )
