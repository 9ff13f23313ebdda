"""An actor's command connection to the broker: registration, heartbeats, and the receive loop.

``BrokerLink`` owns the actor's DEALER socket. It

- registers: sends READY (the actor's description) as soon as the connection exists, and again
  whenever the broker has been silent for ``heartbeat_timeout_s`` or answers DISCONNECT "not
  registered" (a restarted broker does not know us);
- heartbeats: sends HEARTBEAT every ``heartbeat_s``; any message from the broker counts as its
  heartbeat;
- acts on DISCONNECT: "replaced" (another process registered our name) stops the actor, since
  fighting it would flap both forever; "broker stopping" is logged and waited out;
- receives: a reader callback on the socket's FD drains it (at most 256 messages per loop turn)
  and hands each REQUEST and CANCEL to ``Requests``;
- sends without blocking: with no connection to the broker the message is dropped, since the
  broker has already failed the caller it was for.

I/O is plain pyzmq driven from the asyncio loop's reader callback (no zmq.asyncio futures on the
hot path). The DEALER's FD is edge-triggered, so after every send (which can consume the edge)
the link looks for waiting input once more.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack
import structlog
import zmq

from bus import protocol
from bus._requests import Requests
from bus.protocol import Kind

__all__ = ["BrokerLink"]

_REQUEST = int(Kind.REQUEST)
_CANCEL = int(Kind.CANCEL)
_HEARTBEAT = int(Kind.HEARTBEAT)
_DISCONNECT = int(Kind.DISCONNECT)
_NOBLOCK = zmq.NOBLOCK
_unpackb = msgpack.unpackb
_monotonic = time.monotonic


class BrokerLink:
    """The actor's DEALER connection to the broker; see the module docstring.

    Args:
        service: The service name the actor registers.
        kind: The actor's kind.
        requests: Where REQUEST and CANCEL messages go.
        describe: Returns the actor's description, sent in READY.
        on_replaced: Called when another process took over the service name.
        heartbeat_s: Interval between heartbeats.
        heartbeat_timeout_s: Broker silence after which the actor registers again.
        log: The actor's logger.
    """

    def __init__(
        self,
        service: str,
        kind: str,
        requests: Requests,
        *,
        describe: Callable[[], dict[str, Any]],
        on_replaced: Callable[[], None],
        heartbeat_s: float,
        heartbeat_timeout_s: float,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.service = service
        self.kind = kind
        self._requests = requests
        self._describe = describe
        self._on_replaced = on_replaced
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._log = log
        self._socket: zmq.Socket[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._heartbeat: asyncio.Task[None] | None = None
        #: When the broker was last heard from (``time.monotonic``).
        self.last_heard = 0.0

    async def open(
        self, ctx: zmq.Context[Any], endpoint: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Connect, register (waiting at most ``heartbeat_timeout_s`` for the connection; the
        heartbeat loop keeps trying after that), then receive and heartbeat."""
        sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        sock.linger = 1000  # let the DISCONNECT and last replies go out on close
        sock.sndhwm = sock.rcvhwm = 100_000
        # Nothing is queued for an absent broker (replies then have no caller to reach, and
        # heartbeats would pile up); READY is re-sent once the connection is back.
        sock.immediate = 1
        sock.connect(endpoint)
        self._socket, self._loop = sock, loop
        self.last_heard = _monotonic()
        await self._register_when_connected(sock)
        self._fd = sock.FD
        loop.add_reader(self._fd, self.drain)
        self._heartbeat = loop.create_task(self._heartbeat_loop())
        loop.call_soon(self.drain)

    def stop_heartbeats(self) -> None:
        """Stop heartbeating (the first step of a shutdown; receiving goes on)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def close(self) -> None:
        """Stop receiving and close the socket (messages already sent go out within 1 s)."""
        self.stop_heartbeats()
        sock, loop = self._socket, self._loop
        self._socket = None
        if loop is not None and self._fd >= 0:
            loop.remove_reader(self._fd)
        self._fd = -1
        if sock is not None:
            sock.close()

    # --- sending --------------------------------------------------------------------------

    def send(self, frames: list[Any], *, quiet: bool = False) -> bool:
        """Send one message without blocking; False (and a warning unless ``quiet``) if it
        could not go out."""
        sock = self._socket
        if sock is None:
            return False
        sent = True
        try:
            sock.send_multipart(frames, _NOBLOCK, copy=len(frames) == 1)
        except zmq.Again:
            # No broker connection (or a full pipe to it): the broker already failed this
            # request's caller when the connection went, so the answer has nobody to reach.
            sent = False
            if not quiet:
                self._log.warning("send_dropped", reason="no broker connection")
        # A send can consume the edge on ZMQ_FD; look again so no incoming message is stranded.
        events = sock.getsockopt(zmq.EVENTS)
        if isinstance(events, int) and events & zmq.POLLIN and self._loop is not None:
            self._loop.call_soon(self.drain)
        return sent

    def send_ready(self) -> bool:
        """Register: send READY with the actor's description."""
        info = {
            "kind": self.kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "heartbeat_s": self.heartbeat_s,
            **self._describe(),
        }
        return self.send(protocol.encode_ready(self.service, info), quiet=True)

    async def _register_when_connected(self, sock: zmq.Socket[bytes]) -> None:
        """Send READY as soon as the connection to the broker exists (bounded wait; if the
        broker is not there yet, the heartbeat loop keeps trying)."""
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLOUT)
        end = _monotonic() + self.heartbeat_timeout_s
        while _monotonic() < end:
            if poller.poll(0) and self.send_ready():
                return
            await asyncio.sleep(0.01)

    async def _heartbeat_loop(self) -> None:
        frames = protocol.encode_heartbeat()
        lost = False
        while True:
            await asyncio.sleep(self.heartbeat_s)
            silent = _monotonic() - self.last_heard
            if silent > self.heartbeat_timeout_s:
                if not lost:
                    self._log.warning("broker_silent", silent_s=round(silent, 1))
                    lost = True
                # The DEALER reconnects by itself; READY again so a restarted broker knows us.
                self.send_ready()
                continue
            if lost:
                self._log.info("broker_back")
                lost = False
            self.send(frames, quiet=True)

    # --- receiving ------------------------------------------------------------------------

    def drain(self) -> None:
        """Handle the messages waiting in the socket (up to 256, then again next loop turn)."""
        sock = self._socket
        if sock is None:
            return
        for _ in range(256):
            try:
                first = sock.recv(_NOBLOCK)
            except zmq.Again:
                return
            frames: list[Any] = [first]
            if sock.rcvmore:
                # Bulk frames stay zmq.Frame (no copy) until a handler's argument needs bytes.
                frames.extend(sock.recv_multipart(copy=False))
            self.last_heard = _monotonic()
            try:
                self._on_message(frames)
            except Exception:  # a bug in handling one message must not stop the actor
                self._log.exception("message_handling_failed")
        if self._loop is not None:
            self._loop.call_soon(self.drain)  # more may be waiting; yield to other tasks first

    def _on_message(self, frames: list[Any]) -> None:
        try:
            header = _unpackb(frames[0])
            kind = header[1]
        except Exception:  # only the broker talks to us; a bad frame is logged and dropped
            self._log.warning("malformed_from_broker")
            return
        if kind == _REQUEST:
            self._requests.on_request(header, frames)
        elif kind == _HEARTBEAT:
            pass
        elif kind == _CANCEL:
            self._requests.cancel(header[2])
        elif kind == _DISCONNECT:
            self._on_disconnect(header[2] if len(header) > 2 and type(header[2]) is str else "")

    def _on_disconnect(self, reason: str) -> None:
        if self._requests.stopping:
            return
        if reason.startswith(protocol.REASON_REPLACED):
            # Another process serves this name now; fighting it would flap both forever.
            self._log.error(
                "replaced_by_another_instance",
                reason=reason,
                hint="two actors share this service name?",
            )
            self._on_replaced()
        elif reason.startswith(protocol.REASON_BROKER_STOPPING):
            self._log.warning("broker_stopping")
        else:
            # The broker does not know us (it restarted): register again.
            self._log.info("reregistering", reason=reason)
            self.send_ready()
