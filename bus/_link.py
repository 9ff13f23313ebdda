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
  broker has already failed the caller it was for;
- on a secured line, connects as a CURVE client and watches the handshakes: a broker that refuses
  the actor's key (unknown, revoked) is logged as ``broker_refused_key`` and stops the actor
  (``refused`` holds the error), instead of heartbeating into a connection that never comes.

I/O is plain pyzmq driven from the asyncio loop's reader callback (no zmq.asyncio futures on the
hot path). The DEALER's FD is edge-triggered, so after a send (which can consume the edge) the
link looks for waiting input once more, unless a drain is already due on this loop turn.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from bus import _zmqio, protocol
from bus._requests import Requests
from bus.client import HANDSHAKE_EVENTS, ClientKeys, HandshakeWatch
from bus.errors import BusError, Unauthenticated
from bus.protocol import Kind

__all__ = ["BrokerLink"]

_REQUEST = int(Kind.REQUEST)
_CANCEL = int(Kind.CANCEL)
_HEARTBEAT = int(Kind.HEARTBEAT)
_DISCONNECT = int(Kind.DISCONNECT)
_ERROR = int(Kind.ERROR)
# Plain ints: pyzmq's flags are IntFlag enums, and every operation on one builds a new member.
_NOBLOCK = _zmqio.NOBLOCK
_send_frames = _zmqio.send_frames
_readable = _zmqio.readable
_recv_frame = _zmqio.recv_frame
_recv_rest = _zmqio.recv_rest
_split = protocol.split
_request_header = protocol.request_header
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
        keys: The actor's CURVE keys on a secured line; None for plaintext.
        on_refused: Called when the broker refused the actor's handshake (then ``refused``).
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
        keys: ClientKeys | None = None,
        on_refused: Callable[[], None] | None = None,
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
        self._drain_due = False  # a drain is scheduled and has not started yet
        self._draining = False  # drain() is running (sends need not look for input)
        #: When the broker was last heard from (``time.monotonic``).
        self.last_heard = 0.0
        self._keys = keys
        self._on_refused = on_refused
        self._monitor: zmq.Socket[bytes] | None = None
        self._watch: HandshakeWatch | None = None
        #: The broker's refusal of our handshake, once it refused (the actor then stops).
        self.refused: Unauthenticated | None = None

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
        if self._keys is not None:
            self._keys.secure(sock)
        self._watch = HandshakeWatch(endpoint, self._keys, f"commands of {self.service}")
        self._monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
        sock.connect(endpoint)
        self._socket, self._loop = sock, loop
        self.last_heard = _monotonic()
        await self._register_when_connected(sock)
        self._fd = sock.FD
        loop.add_reader(self._fd, self.drain)
        self._heartbeat = loop.create_task(self._heartbeat_loop())
        self._drain_soon()

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
        if self._monitor is not None:
            if sock is not None:
                sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if sock is not None:
            sock.close()

    def check_handshake(self) -> bool:
        """Read the handshake monitor; on a refusal, log it, keep it in ``refused`` and call
        ``on_refused`` (once). True if the broker refused us."""
        if self._monitor is None or self._watch is None:
            return False
        refused = self._watch.drain(self._monitor)
        if refused is None or self.refused is not None:
            return refused is not None
        self.refused = refused
        self._log.error(
            "broker_refused_key",
            reason=refused.details.get("reason"),
            key=refused.details.get("key"),
            error=refused.message,
        )
        if self._on_refused is not None:
            self._on_refused()
        return True

    # --- sending --------------------------------------------------------------------------

    def send(self, frames: list[Any], *, quiet: bool = False) -> bool:
        """Send one message without blocking; False (and a warning unless ``quiet``) if it
        could not go out."""
        sock = self._socket
        if sock is None:
            return False
        sent = True
        try:
            _send_frames(sock, frames, _NOBLOCK, len(frames) == 1)
        except zmq.Again:
            # No broker connection (or a full pipe to it): the broker already failed this
            # request's caller when the connection went, so the answer has nobody to reach.
            sent = False
            if not quiet:
                self._log.warning("send_dropped", reason="no broker connection")
        # A send can consume the edge on ZMQ_FD; look again so no incoming message is stranded
        # (not needed while draining: the drain looks before each receive anyway).
        if not self._drain_due and not self._draining and _readable(sock):
            self._drain_soon()
        return sent

    def send_ready(self) -> bool:
        """Register: send READY with the actor's description and the names of its privileged
        commands (``privileged``), so the broker knows them without asking."""
        described = self._describe()
        commands = described.get("commands")
        privileged = (
            sorted(name for name, spec in commands.items() if spec.get("privileged"))
            if isinstance(commands, dict)
            else []
        )
        info = {
            "kind": self.kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "heartbeat_s": self.heartbeat_s,
            **described,
            "privileged": privileged,
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
            if self.check_handshake():
                return
            await asyncio.sleep(0.01)

    async def _heartbeat_loop(self) -> None:
        frames = protocol.encode_heartbeat()
        lost = False
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self.check_handshake():
                return
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

    def _drain_soon(self) -> None:
        if self._loop is not None:
            self._drain_due = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        """Handle the messages waiting in the socket (up to 256, then again next loop turn)."""
        self._drain_due = False
        sock = self._socket
        if sock is None:
            return
        # Asks ZMQ_EVENTS before each receive (which also re-arms the edge-triggered FD) rather
        # than ending on a zmq.Again built per wake-up; frames through bus._zmqio.
        self._draining = True
        try:
            for _ in range(256):
                if not _readable(sock):
                    return
                first, more = _recv_frame(sock, _NOBLOCK)  # ZMQ_EVENTS said a message waits
                frames: list[Any] = [first]
                if more:
                    # Bulk frames stay zmq.Frame (no copy) until a handler's argument needs bytes.
                    frames += _recv_rest(sock)
                self.last_heard = _monotonic()
                try:
                    self._on_message(frames)
                except Exception:  # a bug in handling one message must not stop the actor
                    self._log.exception("message_handling_failed")
        finally:
            self._draining = False
        if not self._drain_due:
            self._drain_soon()  # more may be waiting; yield to other tasks first

    def _on_message(self, frames: list[Any]) -> None:
        frame = frames[0]
        try:
            kind, header = _split(frame)
        except BusError:  # only the broker talks to us; a bad frame is logged and dropped
            self._log.warning("malformed_from_broker")
            return
        if kind == _REQUEST:
            try:
                request = _request_header(header, frame)
            except BusError as exc:
                self._on_malformed_request(header, exc)
                return
            self._requests.on_request(request, frames)
        elif kind == _HEARTBEAT:
            pass
        elif kind == _CANCEL:
            try:
                msg_id = protocol.cancel_header(header)
            except BusError:
                self._log.warning("malformed_from_broker")
                return
            self._requests.cancel(msg_id)
        elif kind == _DISCONNECT:
            try:
                reason = protocol.disconnect_header(header)
            except BusError:
                reason = ""
            self._on_disconnect(reason)
        elif kind == _ERROR:
            # The broker answers an actor only to refuse what it sent: a malformed READY or
            # heartbeat (msg_id "", PROTOCOL.md §6), a registration the access list refuses.
            try:
                error = protocol.error_header(header)
            except BusError:
                self._log.warning("malformed_from_broker")
                return
            self._log.error(
                "refused_by_broker",
                code=error.code,
                message=error.message,
                details=error.details,
                msg_id=error.msg_id,
            )

    def _on_malformed_request(self, header: list[Any], exc: BusError) -> None:
        """Answer a REQUEST the broker should not have passed on, if it has an id to answer."""
        msg_id = protocol.peek_msg_id(header)
        if msg_id is None:
            self._log.warning("malformed_request")
        else:
            self._requests.reply_error(msg_id, exc)

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
