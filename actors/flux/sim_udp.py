"""The simulator's UDP 1901 side (flux.md §2): announcements, poke and touch answers.

One socket bound to ``(address, port)`` does everything: it sends the periodic announcement to
each target (the multicast group by default, or unicast/broadcast addresses), and answers pokes
and touches to the datagram's source. Announcements also go out at once when the status changes,
so tests need not wait a whole period.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import structlog

from actors.flux.sim_device import SimDevice
from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import (
    DatagramError,
    Poke,
    TouchRequest,
    build_announcement,
    build_touch_response,
    parse_datagram,
)

__all__ = ["UdpAnnouncer"]

log = structlog.get_logger()

IDENTIFY = b"WAWASUREMONO"  # the firmware's dev-build identify blob (flux.md §2.9)


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
    """

    def __init__(
        self,
        device: SimDevice,
        address: str,
        port: int,
        targets: list[tuple[str, int]],
        interval_s: float,
    ) -> None:
        self.device = device
        self.address = address
        self.port = port
        self.targets = targets
        self.interval_s = interval_s
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

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

    async def stop(self) -> None:
        """Stop announcing and close the socket."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()

    def announcement(self) -> bytes:
        """The current full announcement."""
        device = self.device
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

    def received(self, data: bytes, source: tuple[str, int]) -> None:
        """Answer a poke with the announcement and a touch with the signed info."""
        if self.device.faults.silent:
            return
        try:
            message = parse_datagram(data)
        except DatagramError:
            return
        device = self.device
        if isinstance(message, Poke):
            self._send(self.announcement(), source)
        elif isinstance(message, TouchRequest) and message.uuid == device.uuid:
            self._send(
                build_touch_response(
                    device.uuid,
                    device.slave_ts,
                    device.master_key,
                    device.slave_key,
                    device.touch_info(),
                ),
                source,
            )
