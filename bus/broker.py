"""The broker: routes requests to actors by service name and fans events out by topic.

Commands: one ROUTER socket that clients and actors both connect to (DEALER). The broker decodes
only the small header frame of each message; arguments, results and bulk frames are forwarded as
the very frames it received. It keeps every forwarded request until its reply, its deadline, or
the death of its actor, so no caller waits on a request that can no longer be answered.

Events: an XSUB socket (publishers connect) and an XPUB socket (subscribers connect) joined by
libzmq's C proxy in a thread of its own; the broker never touches an event, which keeps event
fan-out at the speed of ZeroMQ itself. Presence events are published there by the broker.

Death of an actor is noticed two ways: its TCP connection closing (the socket monitor reports a
disconnect, and a probe with ROUTER_MANDATORY finds which peer is gone, within milliseconds), and
heartbeat silence past ``heartbeat_timeout_s`` (a hung but connected process).

Headers are read with the decoders of ``bus.protocol`` (``split``, then the decoder of the kind
or, for messages only routed, ``peek_msg_id``); the broker never indexes a header itself.

``run()`` is ``run_once()`` in a loop until ``stop()``. Tests drive a broker turn by turn with
``run_once()`` over ``inproc://`` endpoints and a clock of their own (the ``clock`` argument).
"""

from __future__ import annotations

import heapq
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
import zmq
from zmq.utils.monitor import parse_monitor_message

from bus import protocol
from bus.config import BrokerConfig
from bus.directory import UP, Directory, Pending, ServiceEntry
from bus.errors import (
    BadRequest,
    BusError,
    InvalidArguments,
    UnknownCommand,
    UnknownService,
    UnsupportedVersion,
)
from bus.protocol import Kind

__all__ = ["Broker"]

log = structlog.get_logger()

_REQUEST = int(Kind.REQUEST)
_PROGRESS = int(Kind.PROGRESS)
_REPLY = int(Kind.REPLY)
_ERROR = int(Kind.ERROR)
_CANCEL = int(Kind.CANCEL)
_READY = int(Kind.READY)
_HEARTBEAT = int(Kind.HEARTBEAT)
_DISCONNECT = int(Kind.DISCONNECT)
_HEARTBEAT_FRAME = protocol.encode_heartbeat()[0]
_split = protocol.split
_peek_msg_id = protocol.peek_msg_id
_request_route = protocol.request_route
_request_ttl = protocol.request_ttl
_NOBLOCK = zmq.NOBLOCK
_DRAIN_BATCH = 512
_STABLE_REASONS = frozenset({"too_large", "header_too_large", "duplicate_id", "unhandled"})
_ANSWERS = frozenset({_PROGRESS, _REPLY, _ERROR})
#: The ``routed`` counter of each forwarded answer.
_ROUTED_AS = {_PROGRESS: "progress", _REPLY: "reply", _ERROR: "error"}
#: How long ``run()`` waits at most between two looks at ``stop()``.
_STOP_POLL_S = 0.2

#: A message as the ROUTER delivers it: the sender's identity, the header, then bulk frames
#: (received without copying, as zmq.Frame) which the broker forwards untouched.
_Frames = list[bytes | zmq.Frame]


class Broker:
    """A linebus broker; ``start()`` binds, ``run()`` serves until ``stop()``.

    Args:
        config: Endpoints and timing. ``tcp://host:*`` binds a free port; ``endpoints`` tells which.
        ctx: ZeroMQ context to use; a new one by default.
        clock: Monotonic seconds for deadlines and liveness (tests pass one they can advance).
    """

    _router: zmq.Socket[bytes]
    _monitor: zmq.Socket[bytes]
    _pub: zmq.Socket[bytes]
    _proxy_control: zmq.Socket[bytes]
    _poller: zmq.Poller

    def __init__(
        self,
        config: BrokerConfig | None = None,
        ctx: zmq.Context[Any] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or BrokerConfig()
        self._ctx: zmq.Context[Any] = ctx or zmq.Context()
        self._own_ctx = ctx is None
        self._clock = clock
        self.directory = Directory()
        self._pending: dict[str, Pending] = {}
        self._deadlines: list[tuple[float, str]] = []
        self.routed: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.endpoints: dict[str, str] = {}
        self._started_at = time.time()
        self._stopping = threading.Event()
        self._proxy_thread: threading.Thread | None = None
        self._presence_seq: dict[str, int] = {}
        self._epoch = protocol.new_epoch()
        self._started = False
        self._next_tick = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Bind every socket and start the event proxy; return the bound endpoints."""
        cfg = self.config
        router = self._ctx.socket(zmq.ROUTER)
        router.router_mandatory = 1  # a send to a gone peer raises instead of vanishing
        router.linger = 0
        router.maxmsgsize = cfg.max_message_bytes + protocol.MAX_HEADER_BYTES
        router.sndhwm = router.rcvhwm = 100_000
        router.bind(cfg.command)
        self._router = router
        self._monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._poller = zmq.Poller()
        self._poller.register(router, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

        xsub = self._ctx.socket(zmq.XSUB)
        xsub.linger = 0
        xsub.rcvhwm = 100_000
        inproc = f"inproc://linebus-presence-{id(self)}"
        xsub.bind(inproc)
        xsub.bind(cfg.publish)  # bound last, so last_endpoint names it
        xpub = self._ctx.socket(zmq.XPUB)
        xpub.linger = 0
        xpub.sndhwm = 100_000
        xpub.bind(cfg.subscribe)
        self._proxy_control = self._ctx.socket(zmq.PAIR)
        control_addr = f"inproc://linebus-proxy-control-{id(self)}"
        self._proxy_control.bind(control_addr)
        self.endpoints = {
            "command": router.getsockopt_string(zmq.LAST_ENDPOINT),
            "publish": xsub.getsockopt_string(zmq.LAST_ENDPOINT),
            "subscribe": xpub.getsockopt_string(zmq.LAST_ENDPOINT),
        }
        proxy_peer = self._ctx.socket(zmq.PAIR)
        proxy_peer.connect(control_addr)

        def run_proxy() -> None:
            try:
                zmq.proxy_steerable(xsub, xpub, None, proxy_peer)
            except zmq.ContextTerminated:
                pass
            finally:
                for s in (xsub, xpub, proxy_peer):
                    s.close(linger=0)

        self._proxy_thread = threading.Thread(
            target=run_proxy, name="linebus-event-proxy", daemon=True
        )
        self._proxy_thread.start()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.linger = 0
        self._pub.connect(inproc)
        self._next_tick = self._clock() + cfg.heartbeat_s
        self._started = True
        log.info("broker_listening", **self.endpoints, pid=os.getpid())
        return self.endpoints

    def stop(self) -> None:
        """Ask ``run()`` to return; safe from any thread or a signal handler."""
        self._stopping.set()

    def close(self) -> None:
        """Tell every actor the broker is going, fail in-flight requests, close the sockets."""
        if not self._started:
            return
        self._started = False
        for entry in self.directory.up():
            identity = entry.identity
            self._fail_all(
                self.directory.mark_down(entry, protocol.REASON_BROKER_STOPPING),
                protocol.REASON_BROKER_STOPPING,
            )
            if identity is not None:
                self._send_quiet(
                    [identity, *protocol.encode_disconnect(protocol.REASON_BROKER_STOPPING)]
                )
            self._publish_presence(entry)
        if self._proxy_thread is not None:
            self._proxy_control.send(b"TERMINATE")
            self._proxy_thread.join(timeout=2)
        for s in (self._pub, self._proxy_control, self._monitor, self._router):
            s.close(linger=0)
        if self._own_ctx:
            self._ctx.term()
        log.info("broker_stopped")

    def run(self) -> None:
        """Serve until ``stop()``, then ``close()``; binds first if ``start()`` was not called."""
        if not self._started:
            self.start()
        run_once = self.run_once
        stopping = self._stopping
        try:
            while not stopping.is_set():
                # The wait is capped so that stop() is noticed promptly even with no traffic.
                run_once(_STOP_POLL_S)
        finally:
            self.close()

    def run_once(self, max_wait_s: float = 0.0) -> None:
        """One turn of the loop: wait up to ``max_wait_s`` for messages (less when a deadline or
        a heartbeat is due), handle them, then expire the due deadlines and heartbeat the actors
        if it is time. ``start()`` must have been called."""
        router = self._router
        deadlines = self._deadlines
        now = self._clock()
        wake = self._next_tick if not deadlines else min(self._next_tick, deadlines[0][0])
        ready = self._poller.poll(int(max(0.0, min(wake - now, max_wait_s)) * 1000))
        for sock, _ in ready:
            if sock is router:
                self._drain(router)
            else:
                self._on_monitor_event()
        now = self._clock()
        if deadlines and deadlines[0][0] <= now:
            self._expire(now)
        if now >= self._next_tick:
            self._tick(now)
            self._next_tick = now + self.config.heartbeat_s

    # --- message handling -------------------------------------------------------------------

    def _drain(self, router: zmq.Socket[bytes]) -> None:
        handle = self._handle
        recv = router.recv
        recv_rest = router.recv_multipart
        for _ in range(_DRAIN_BATCH):
            try:
                ident = recv(_NOBLOCK)
            except zmq.Again:
                return
            frame = recv()
            frames: _Frames = [ident, frame]
            if router.rcvmore:
                # Bulk frames are forwarded as zmq.Frame objects: never copied by the broker.
                frames.extend(recv_rest(copy=False))
            try:
                handle(ident, frame, frames)
            except BusError as exc:
                self._reject(ident, frame, exc)
            except Exception as exc:  # never let one message stop the broker
                log.exception("message_handling_failed")
                self._reject(
                    ident,
                    frame,
                    BadRequest(
                        f"message could not be handled: {exc}", details={"reason": "unhandled"}
                    ),
                )

    def _handle(self, ident: bytes, frame: bytes, frames: _Frames) -> None:
        """Act on one message; ``frame`` is its header, ``frames`` the whole of it (``[ident,
        frame, *bulk]``), forwarded as it is with the identity replaced."""
        kind, header = _split(frame)
        if kind == _REQUEST:
            self._route_request(ident, frame, header, frames)
        elif kind in _ANSWERS:
            self._route_answer(ident, kind, header, frames)
        elif kind == _HEARTBEAT:
            entry = self.directory.by_identity.get(ident)
            if entry is None:
                # An actor we do not know (the broker restarted): ask it to register again.
                self._send_quiet(
                    [
                        ident,
                        *protocol.encode_disconnect(
                            f"{protocol.REASON_NOT_REGISTERED}; send READY"
                        ),
                    ]
                )
            else:
                entry.last_seen = self._clock()
        elif kind == _CANCEL:
            self._route_cancel(ident, header, frames)
        elif kind == _READY:
            self._on_ready(ident, protocol.ready_header(header, frame), frame)
        elif kind == _DISCONNECT:
            entry = self.directory.by_identity.get(ident)
            if entry is not None:
                self._actor_down(entry, "actor disconnected")
        else:  # HELLO: split() lets through the command-channel kinds only
            self._on_hello(ident, protocol.hello_header(header, frame))

    def _route_request(
        self, ident: bytes, frame: bytes, header: list[Any], frames: _Frames
    ) -> None:
        msg_id, service = _request_route(header, frame)
        size = sum(map(len, frames[1:])) if len(frames) > 2 else len(frame)
        if size > self.config.max_message_bytes:
            raise BadRequest(
                f"message of {size} bytes exceeds the broker limit of {self.config.max_message_bytes}",
                details={"reason": "too_large", "size": size},
            )
        if service == protocol.BROKER_SERVICE:
            self._serve_internal(ident, protocol.request_header(header, frame), frames[2:])
            return
        entry = self.directory.by_name.get(service)
        if entry is None:
            self._error(
                ident,
                msg_id,
                "unknown_service",
                f"no service named {service!r} has registered",
                "unknown_service",
            )
            return
        if entry.state != UP or entry.identity is None:
            self._error(
                ident,
                msg_id,
                "unavailable",
                f"service {service!r} is down ({entry.down_reason})",
                "unavailable",
            )
            return
        # ttl_s is checked only now: unknown_service and unavailable come first (PROTOCOL.md §6).
        ttl = _request_ttl(header, frame)
        if ttl is None:
            ttl = self.config.default_timeout_s
        if ttl <= 0:
            self._error(
                ident,
                msg_id,
                "deadline_exceeded",
                "request arrived with its deadline already passed",
                "deadline",
            )
            return
        if msg_id in self._pending:
            self._error(
                ident,
                msg_id,
                "bad_request",
                f"message id {msg_id!r} is already in flight",
                "duplicate_id",
            )
            return
        deadline = self._clock() + min(ttl, self.config.max_timeout_s)
        pending = Pending(msg_id, ident, entry, deadline)
        frames[0] = entry.identity
        try:
            self._router.send_multipart(frames, _NOBLOCK, copy=len(frames) < 3)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EAGAIN:
                self._error(
                    ident,
                    msg_id,
                    "busy",
                    f"service {service!r} has too many requests queued",
                    "backpressure",
                )
                return
            self._on_send_failure(entry, exc)
            self._error(
                ident, msg_id, "unavailable", f"service {service!r} cannot be reached", "unroutable"
            )
            return
        self._pending[msg_id] = pending
        entry.inflight[msg_id] = pending
        heapq.heappush(self._deadlines, (deadline, msg_id))
        self.routed["request"] += 1

    def _route_answer(self, ident: bytes, kind: int, header: list[Any], frames: _Frames) -> None:
        """PROGRESS, REPLY or ERROR: forwarded to the caller if ``ident`` holds the request."""
        msg_id = _peek_msg_id(header)
        pending = self._pending.get(msg_id) if msg_id is not None else None
        if pending is None or pending.service.identity != ident:
            # Late (after deadline or cancel) or from a peer that does not hold this request.
            if kind == _PROGRESS:
                self.dropped["late_progress"] += 1
            else:
                self.dropped["late_reply" if pending is None else "wrong_peer"] += 1
            return
        service = pending.service
        service.last_seen = self._clock()  # any message is a sign of life
        if kind != _PROGRESS:
            del self._pending[pending.msg_id]
            del service.inflight[pending.msg_id]
        self._forward(pending.client, frames, _ROUTED_AS[kind])

    def _route_cancel(self, ident: bytes, header: list[Any], frames: _Frames) -> None:
        msg_id = _peek_msg_id(header)
        pending = self._pending.get(msg_id) if msg_id is not None else None
        if pending is None or pending.client != ident:
            self.dropped["cancel_unknown"] += 1
            return
        if pending.service.identity is not None:
            self._forward(pending.service.identity, frames, "cancel")

    def _forward(self, to: bytes, frames: _Frames, what: str) -> None:
        """Send a received message on to ``to`` (its identity frame replaced), counted as ``what``."""
        frames[0] = to
        try:
            self._router.send_multipart(frames, _NOBLOCK, copy=len(frames) < 3)
        except zmq.ZMQError as exc:
            self.dropped["unroutable" if exc.errno == zmq.EHOSTUNREACH else "backpressure"] += 1
            entry = self.directory.by_identity.get(to)
            if entry is not None:
                self._on_send_failure(entry, exc)
            return
        self.routed[what] += 1

    # --- registration and liveness ----------------------------------------------------------

    def _on_ready(self, ident: bytes, ready: protocol.ReadyHeader, ready_frame: bytes) -> None:
        name = protocol.validate_service_name(ready.service)
        if name == protocol.BROKER_SERVICE:
            raise BadRequest(f"service name {name!r} is reserved for the broker")
        info = ready.info
        moved = self.directory.by_identity.get(ident)
        if moved is not None and moved.name != name:
            # One connection serves one service: registering another name abandons the first.
            self._actor_down(moved, "re-registered as another service")
        existing = self.directory.by_name.get(name)
        if existing is not None and existing.state == UP and existing.identity != ident:
            # A restarted process registers before its predecessor's connection is noticed gone.
            self._fail_all(list(existing.inflight.values()), "replaced by a new registration")
            existing.inflight.clear()
        entry, replaced = self.directory.register(name, ident, info, self._clock(), ready_frame)
        if replaced is not None:
            self._send_quiet(
                [
                    replaced,
                    *protocol.encode_disconnect(
                        f"{protocol.REASON_REPLACED} by a new registration"
                    ),
                ]
            )
        self._send_quiet(
            [ident, *protocol.encode_heartbeat()]
        )  # doubles as the READY acknowledgement
        log.info(
            "actor_up", service=name, kind=entry.kind, pid=info.get("pid"), host=info.get("host")
        )
        self._publish_presence(entry)

    def _actor_down(self, entry: ServiceEntry, reason: str) -> None:
        if entry.state != UP:
            return
        failed = self.directory.mark_down(entry, reason)
        self._fail_all(failed, reason)
        log.warning("actor_down", service=entry.name, reason=reason, failed_requests=len(failed))
        self._publish_presence(entry)

    def _fail_all(self, failed: list[Pending], reason: str) -> None:
        for pending in failed:
            self._pending.pop(pending.msg_id, None)
            self._error(
                pending.client,
                pending.msg_id,
                "unavailable",
                f"service {pending.service.name!r} went down while handling the request: {reason}",
                "actor_down",
            )

    def _on_send_failure(self, entry: ServiceEntry, exc: zmq.ZMQError) -> None:
        if exc.errno == zmq.EHOSTUNREACH and entry.state == UP:
            self._actor_down(entry, "connection lost")

    def _on_monitor_event(self) -> None:
        try:
            event = parse_monitor_message(self._monitor.recv_multipart(_NOBLOCK))
        except zmq.Again:
            return
        if event["event"] == zmq.EVENT_DISCONNECTED:
            # Some peer's connection closed; probe the actors to find out whether it was one.
            for entry in self.directory.up():
                self._probe(entry)

    def _probe(self, entry: ServiceEntry) -> None:
        if entry.identity is None:
            return
        try:
            self._router.send_multipart([entry.identity, _HEARTBEAT_FRAME], _NOBLOCK)
        except zmq.ZMQError as exc:
            self._on_send_failure(entry, exc)

    def _tick(self, now: float) -> None:
        timeout = self.config.heartbeat_timeout_s
        for entry in self.directory.up():
            if now - entry.last_seen > timeout:
                self._actor_down(entry, f"no heartbeat for {now - entry.last_seen:.1f} s")
            else:
                self._probe(entry)

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, msg_id = heapq.heappop(deadlines)
            pending = self._pending.get(msg_id)
            if pending is None or pending.deadline != deadline:
                continue  # answered already
            del self._pending[msg_id]
            pending.service.inflight.pop(msg_id, None)
            self._error(
                pending.client,
                msg_id,
                "deadline_exceeded",
                f"no answer from {pending.service.name!r} before the deadline",
                "deadline",
            )
            if pending.service.identity is not None:
                # The caller has given up; let the actor stop working on it.
                self._send_quiet([pending.service.identity, *protocol.encode_cancel(msg_id)])

    # --- answers from the broker itself -------------------------------------------------------

    def _error(self, ident: bytes, msg_id: str, code: str, text: str, drop_reason: str) -> None:
        self.dropped[drop_reason] += 1
        self._send_quiet([ident, *protocol.encode_error(msg_id, code, text)])

    def _reject(self, ident: bytes, frame: bytes, exc: BusError) -> None:
        # Counter keys are a small fixed set: free-text reasons from a hostile peer must not
        # grow the table without bound.
        reason = exc.details.get("reason")
        self.dropped[
            reason
            if reason in _STABLE_REASONS
            else ("malformed" if exc.code == "bad_request" else exc.code)
        ] += 1
        msg_id = protocol.error_msg_id(frame)
        log.warning("message_rejected", code=exc.code, reason=exc.message, msg_id=msg_id)
        self._send_quiet(
            [ident, *protocol.encode_error(msg_id, exc.code, exc.message, exc.details)]
        )

    def _send_quiet(self, frames: list[Any]) -> None:
        try:
            self._router.send_multipart(frames, _NOBLOCK)
        except zmq.ZMQError:
            self.dropped["unroutable"] += 1

    def _on_hello(self, ident: bytes, hello: protocol.HelloHeader) -> None:
        supported = list(protocol.SUPPORTED_VERSIONS)
        common = sorted(set(hello.versions) & set(supported))
        if not common:
            raise UnsupportedVersion(
                f"no common protocol version: peer speaks {hello.versions}, broker {supported}",
                details={"supported": supported},
            )
        info = {
            "broker": "linebus",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **self.endpoints,
        }
        self._send_quiet([ident, *protocol.encode_hello([common[-1]], info)])

    def _serve_internal(self, ident: bytes, request: protocol.RequestHeader, bulk: _Frames) -> None:
        try:
            args = protocol.unpack_value(request.payload, bulk) or {}
            if not isinstance(args, dict):
                raise BadRequest("arguments must be a map")
            result = self._internal_command(request.command, args)
        except BusError as exc:
            self._send_quiet(
                [ident, *protocol.encode_error(request.msg_id, exc.code, exc.message, exc.details)]
            )
            return
        self.routed["internal"] += 1
        self._send_quiet([ident, *protocol.encode_reply(request.msg_id, result)])

    def _internal_command(self, command: str, args: dict[str, Any]) -> Any:
        if command == "ping":
            return {"pong": True, "time": time.time(), "version": protocol.VERSION}
        if command == "services":
            return [
                e.summary() for e in sorted(self.directory.by_name.values(), key=lambda e: e.name)
            ]
        if command == "describe":
            name = args.get("service")
            if not isinstance(name, str):
                raise invalid_argument("service", "str", name)
            entry = self.directory.by_name.get(name)
            if entry is None:
                raise UnknownService(f"no service named {name!r} has registered")
            description = self.directory.description(entry)
            return {
                **entry.summary(),
                "doc": description.get("doc", ""),
                "commands": description.get("commands", {}),
            }
        if command == "stats":
            return self.stats()
        if command == "probe":
            # Lets a subscriber learn that its subscription has reached the broker.
            topic = args.get("topic")
            if not isinstance(topic, str) or not topic.startswith("_probe."):
                raise invalid_argument("topic", "str starting with '_probe.'", topic)
            self._pub.send(
                protocol.encode_event(
                    topic, protocol.BROKER_SERVICE, self._epoch, 0, time.time(), None
                )
            )
            return None
        raise UnknownCommand(
            f"the broker has no command {command!r} (has: ping, services, describe, stats, probe)",
            details={"command": command},
        )

    def stats(self) -> dict[str, Any]:
        """Counters of what was routed and every drop by reason, plus the current load."""
        return {
            "uptime_s": time.time() - self._started_at,
            "routed": dict(self.routed),
            "dropped": dict(self.dropped),
            "inflight": len(self._pending),
            "services_up": len(self.directory.up()),
            "services_known": len(self.directory.by_name),
            "events": "forwarded by the C proxy; count gaps with each event's per-topic sequence number",
        }

    def _publish_presence(self, entry: ServiceEntry) -> None:
        topic = f"presence.{entry.name}"
        seq = self._presence_seq.get(topic, 0) + 1
        self._presence_seq[topic] = seq
        data = {
            "service": entry.name,
            "kind": entry.kind,
            "state": entry.state,
            "reason": entry.down_reason,
            "since": entry.since,
        }
        self._pub.send(
            protocol.encode_event(
                topic, protocol.BROKER_SERVICE, self._epoch, seq, time.time(), data
            )
        )


def invalid_argument(argument: str, expected: str, got: Any) -> BusError:
    """An ``invalid_arguments`` error naming the argument, the expected type and what came."""
    return InvalidArguments(
        f"argument {argument!r} must be {expected}, got {type(got).__name__}",
        details={"argument": argument, "expected": expected},
    )
