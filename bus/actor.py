"""The actor runtime: serve an actor's commands on the bus, publish its events, stay registered.

Subclass ``Actor``, declare commands with ``@command``, and open/close the device in
``on_start``/``on_stop``::

    class Thermometer(Actor):
        kind = "thermometer"

        async def on_start(self) -> None:
            self.driver = await ThermometerDriver.open(self.options["address"])

        @command
        async def read(self, channel: int = 0) -> float:
            \"\"\"Read one channel, in degrees Celsius.\"\"\"
            value = await self.driver.read(channel)
            self.publish("reading", {"channel": channel, "value": value})
            return value

The runtime validates arguments against the signature, runs one command at a time unless a
command is ``concurrent``, passes a ``CommandContext`` for progress, cancels a command when its
caller cancels or its deadline passes, heartbeats, re-registers after a broker restart, and shuts
down in order: stop taking work, finish (or after a grace period cancel) the current command,
fail the queue, close the device.

I/O is plain pyzmq sockets driven from the asyncio loop's reader callback (no zmq.asyncio
futures on the hot path): each request costs one receive, one handler call, one send.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import msgpack
import structlog
import zmq

from bus import protocol
from bus.commands import CommandContext, CommandSpec, command
from bus.errors import (
    BadRequest,
    BusError,
    Busy,
    Cancelled,
    DeadlineExceeded,
    InternalError,
    Unavailable,
    UnknownCommand,
)
from bus.protocol import Kind

__all__ = ["Actor", "ActorSettings", "CommandContext", "command"]

log = structlog.get_logger()

_REQUEST = int(Kind.REQUEST)
_CANCEL = int(Kind.CANCEL)
_HEARTBEAT = int(Kind.HEARTBEAT)
_DISCONNECT = int(Kind.DISCONNECT)
_unpackb = msgpack.unpackb
_packb = msgpack.packb
_NOBLOCK = zmq.NOBLOCK
_NO_LOCAL_DEADLINE_S = 24 * 3600.0


class ActorSettings:
    """How an actor reaches the broker and how it times itself.

    Args:
        endpoint: Broker command endpoint (DEALER connects here).
        publish_endpoint: Broker publish endpoint (PUB connects here).
        subscribe_endpoint: Broker subscribe endpoint, for actors that also listen to events.
        heartbeat_s: Interval between heartbeats.
        heartbeat_timeout_s: Broker silence after which the actor re-registers.
        max_queue: Requests that may wait for the device before new ones get ``busy``.
        shutdown_grace_s: How long shutdown lets the current command finish before cancelling it.
    """

    def __init__(
        self,
        endpoint: str = protocol.DEFAULT_COMMAND_ENDPOINT,
        publish_endpoint: str = protocol.DEFAULT_PUBLISH_ENDPOINT,
        *,
        subscribe_endpoint: str = protocol.DEFAULT_SUBSCRIBE_ENDPOINT,
        heartbeat_s: float = 1.0,
        heartbeat_timeout_s: float = 2.5,
        max_queue: int = 1000,
        shutdown_grace_s: float = 2.0,
    ) -> None:
        self.endpoint = endpoint
        self.publish_endpoint = publish_endpoint
        self.subscribe_endpoint = subscribe_endpoint
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_queue = max_queue
        self.shutdown_grace_s = shutdown_grace_s


class _Request:
    __slots__ = ("args", "deadline", "frames", "msg_id", "spec", "task")

    def __init__(
        self, msg_id: str, spec: CommandSpec, args: dict[str, Any], deadline: float
    ) -> None:
        self.msg_id = msg_id
        self.spec = spec
        self.args = args
        self.deadline = deadline
        self.task: asyncio.Task[None] | None = None


class Actor:
    """Base class of every actor; see the module docstring.

    Args:
        name: The service name callers use (``fr1``, ``flux.p1``).
        options: The kind's options from the ``[actor.options]`` table of the config.
    """

    kind: ClassVar[str] = "actor"
    commands: ClassVar[dict[str, CommandSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[str, CommandSpec] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if callable(value) and hasattr(value, "__linebus_command__"):
                    spec = CommandSpec.build(value)
                    table = {k: v for k, v in table.items() if v.method_name != attr}
                    table[spec.name] = spec
        cls.commands = table

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        self.name = protocol.validate_service_name(name)
        self.options: dict[str, Any] = dict(options or {})
        self.settings = ActorSettings()
        self.log = log.bind(actor=self.kind, service=name)
        self._epoch = protocol.new_epoch()
        self._topics: dict[
            str, list[Any]
        ] = {}  # event name -> [frame prefix, last seq, listened (None: unknown)]
        self._subscriptions: set[bytes] = set()  # prefixes subscribed through the broker
        self._subscriptions_check_due = False
        self._queue: collections.deque[_Request] = collections.deque()
        self._current: _Request | None = None
        self._inflight: dict[str, _Request] = {}
        self._stopping = False
        self.events_dropped = 0
        self._cmd: zmq.Socket[Any] | None = None
        self._pub: zmq.Socket[Any] | None = None

    # --- hooks for subclasses ---------------------------------------------------------------

    async def on_start(self) -> None:
        """Open the device; called before the actor registers. Raise to refuse to start."""

    async def on_stop(self) -> None:
        """Close the device; called last in an orderly shutdown."""

    def describe_extra(self) -> dict[str, Any]:
        """Extra facts for ``describe`` (device model, firmware); override freely."""
        return {}

    # --- built-in commands ------------------------------------------------------------------

    @command(concurrent=True)
    def ping(self) -> dict[str, Any]:
        """Answer at once: the actor is alive. Returns service, kind, pid and queue length."""
        return {
            "service": self.name,
            "kind": self.kind,
            "pid": os.getpid(),
            "queued": len(self._queue),
        }

    @command(concurrent=True)
    def describe(self) -> dict[str, Any]:
        """Describe this actor: its kind, documentation and every command with its arguments."""
        return self._description()

    def _description(self) -> dict[str, Any]:
        return {
            "service": self.name,
            "kind": self.kind,
            "doc": (type(self).__doc__ or "").strip(),
            "commands": {name: spec.describe() for name, spec in sorted(self.commands.items())},
            **self.describe_extra(),
        }

    # --- events -----------------------------------------------------------------------------

    def publish(self, event: str, data: Any = None) -> None:
        """Publish ``data`` on topic ``<service>.<event>`` with the next sequence number.

        Never blocks: if subscribers cannot keep up the event is dropped, and counted in
        ``events_dropped`` (subscribers see the gap through the sequence number). With no
        subscriber to the topic the event is not even encoded; its number is used up all the same.
        """
        entry = self._topics.get(event) or self._new_topic(event)
        entry[1] += 1
        pub = self._pub
        if pub is None:
            self.events_dropped += 1
            return
        if not self._heard(entry):
            return
        try:
            pub.send(
                entry[0]
                + protocol.encode_event_body(self.name, self._epoch, entry[1], time.time(), data),
                _NOBLOCK,
            )
        except zmq.Again:
            self.events_dropped += 1
        self._after_send()

    def publish_many(
        self,
        event: str,
        items: Iterable[Any],
        *,
        count: int | None = None,
        common: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish each of ``items`` on ``<service>.<event>``, in order, as ``publish`` does.

        One topic lookup and one timestamp for all of them: for actors that emit a burst of
        events at once (one per stored record of a batch, say). With ``common``, every item is
        a map and each event's data is ``{**common, **item}``, with ``common`` encoded once.
        ``items`` is only iterated when someone subscribes to the topic: give ``count`` to pass
        a lazy iterable (the sequence numbers still advance by ``count`` when nobody listens).
        """
        if count is None:
            items = items if isinstance(items, Sequence) else list(items)
            count = len(items)
        entry = self._topics.get(event) or self._new_topic(event)
        first, entry[1] = entry[1] + 1, entry[1] + count
        pub = self._pub
        if pub is None:
            self.events_dropped += count
            return
        if not self._heard(entry):
            return
        now, prefix = time.time(), entry[0]
        if common is None:
            bodies: Iterable[bytes] = (
                protocol.encode_event_body(self.name, self._epoch, first + i, now, data)
                for i, data in enumerate(items)
            )
        else:
            bodies = protocol.encode_event_bodies(self.name, self._epoch, first, now, items, common)
        for body in bodies:
            try:
                pub.send(prefix + body, _NOBLOCK)
            except zmq.Again:
                self.events_dropped += 1
        self._after_send()

    def _new_topic(self, event: str) -> list[Any]:
        entry = self._topics[event] = [protocol.event_prefix(f"{self.name}.{event}"), 0, None]
        return entry

    def _heard(self, entry: list[Any]) -> bool:
        """Whether a subscription can match the topic of ``entry`` (cached until they change).

        An unknown or unheard topic first takes the subscriptions waiting in the socket, as a
        PUB socket applies them at send time: a subscriber that just got ready must not miss it.
        """
        if not entry[2]:
            self._read_subscriptions()
            if entry[2] is None:
                entry[2] = self._listened(entry[0])
        return bool(entry[2])

    def _after_send(self) -> None:
        """A send can consume the publish socket's FD edge, and with it the wake-up for a
        subscription that arrived meanwhile: look at the socket once more on the next loop turn
        (once per turn, however many events were sent in it)."""
        if not self._subscriptions_check_due:
            self._subscriptions_check_due = True
            self._loop.call_soon(self._read_subscriptions)

    def _listened(self, prefix: bytes) -> bool:
        """Whether a subscription can match frames that start with ``prefix`` (``topic NUL``)."""
        # A subscription longer than the prefix reaches into the msgpack body: only encoding
        # could tell, so count it as listening.
        return any(prefix.startswith(sub) or sub.startswith(prefix) for sub in self._subscriptions)

    def _read_subscriptions(self) -> None:
        """Take the (un)subscriptions the broker forwarded to the XPUB socket; non-blocking.

        The broker's XSUB passes each distinct prefix once (and its withdrawal when the last
        subscriber of it leaves), so a set is the exact state. Called when the socket's FD is
        readable, after a loop turn that sent events (``_after_send``), and before publishing to
        a topic not known to be heard (``_heard``).
        """
        self._subscriptions_check_due = False
        pub = self._pub
        changed = False
        while pub is not None and pub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                message = pub.recv(_NOBLOCK)
            except zmq.Again:
                break
            if message[:1] == b"\x01":
                self._subscriptions.add(message[1:])
            elif message[:1] == b"\x00":
                self._subscriptions.discard(message[1:])
            changed = True
        if changed:
            for entry in self._topics.values():
                entry[2] = None

    # --- serving ----------------------------------------------------------------------------

    async def serve(
        self, settings: ActorSettings | None = None, *, stop: asyncio.Event | None = None
    ) -> None:
        """Open the device, register with the broker and serve until ``stop`` is set."""
        if settings is not None:
            self.settings = settings
        loop = asyncio.get_running_loop()
        self._loop = loop
        stop = stop or asyncio.Event()
        self._stop_request = stop
        ctx = zmq.Context.instance()
        await self.on_start()
        cmd = ctx.socket(zmq.DEALER)
        cmd.linger = 1000  # let the DISCONNECT and last replies go out on close
        cmd.sndhwm = cmd.rcvhwm = 100_000
        # Nothing is queued for an absent broker (replies then have no caller to reach, and
        # heartbeats would pile up); READY is re-sent once the connection is back.
        cmd.immediate = 1
        cmd.connect(self.settings.endpoint)
        # XPUB, not PUB: it also hands us the subscriptions that reach us through the broker,
        # so an event nobody subscribed to is not encoded at all (PUB would encode it and then
        # drop it, as ZeroMQ filters at the publisher).
        pub = ctx.socket(zmq.XPUB)
        pub.linger = 0
        pub.sndhwm = 100_000
        pub.connect(self.settings.publish_endpoint)
        self._cmd, self._pub = cmd, pub
        self._subscriptions.clear()
        self._last_broker = time.monotonic()
        await self._connect_and_register(cmd)
        fd = cmd.getsockopt(zmq.FD)
        loop.add_reader(fd, self._drain)
        pub_fd = pub.getsockopt(zmq.FD)
        loop.add_reader(pub_fd, self._read_subscriptions)
        heartbeat = loop.create_task(self._heartbeat_loop())
        self.log.info("actor_started", endpoint=self.settings.endpoint, pid=os.getpid())
        loop.call_soon(self._drain)
        try:
            await stop.wait()
        finally:
            heartbeat.cancel()
            await self._shutdown()
            loop.remove_reader(fd)
            loop.remove_reader(pub_fd)
            cmd.close()
            pub.close()
            self._cmd = self._pub = None
            self.log.info("actor_stopped")

    async def _connect_and_register(self, cmd: zmq.Socket[Any]) -> None:
        """Send READY as soon as the connection to the broker exists (bounded wait; if the
        broker is not there yet, the heartbeat loop keeps trying)."""
        poller = zmq.Poller()
        poller.register(cmd, zmq.POLLOUT)
        end = time.monotonic() + self.settings.heartbeat_timeout_s
        while time.monotonic() < end:
            if poller.poll(0) and self._send_ready():
                return
            await asyncio.sleep(0.01)

    def request_stop(self) -> None:
        """Begin an orderly shutdown (safe to call from a signal handler in the loop)."""
        if hasattr(self, "_stop_request"):
            self._stop_request.set()

    def _send_ready(self) -> bool:
        info = {
            "kind": self.kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "heartbeat_s": self.settings.heartbeat_s,
            **self._description(),
        }
        return self._send(protocol.encode_ready(self.name, info), quiet=True)

    def _send(self, frames: list[Any], *, quiet: bool = False) -> bool:
        cmd = self._cmd
        if cmd is None:
            return False
        sent = True
        try:
            cmd.send_multipart(frames, _NOBLOCK, copy=len(frames) == 1)
        except zmq.Again:
            # No broker connection (or a full pipe to it): the broker already failed this
            # request's caller when the connection went, so the answer has nobody to reach.
            sent = False
            if not quiet:
                self.log.warning("send_dropped", reason="no broker connection")
        # A send can consume the edge on ZMQ_FD; look again so no incoming message is stranded.
        if cmd.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._loop.call_soon(self._drain)
        return sent

    def _drain(self) -> None:
        cmd = self._cmd
        if cmd is None:
            return
        for _ in range(256):
            try:
                frames = [cmd.recv(_NOBLOCK)]
            except zmq.Again:
                return
            if cmd.rcvmore:
                # Bulk frames stay zmq.Frame (no copy) until a handler's argument needs bytes.
                frames.extend(cmd.recv_multipart(copy=False))
            self._last_broker = time.monotonic()
            try:
                self._on_message(frames)
            except Exception:  # a bug in handling one message must not stop the actor
                self.log.exception("message_handling_failed")
        self._loop.call_soon(self._drain)  # more may be waiting; yield to other tasks first

    def _on_message(self, frames: list[Any]) -> None:
        try:
            header = _unpackb(frames[0])
            kind = header[1]
        except Exception:  # only the broker talks to us; a bad frame is logged and dropped
            self.log.warning("malformed_from_broker")
            return
        if kind == _REQUEST:
            self._on_request(header, frames)
        elif kind == _HEARTBEAT:
            pass
        elif kind == _CANCEL:
            self._on_cancel(header[2])
        elif kind == _DISCONNECT:
            reason = header[2] if len(header) > 2 and type(header[2]) is str else ""
            if self._stopping:
                return
            if reason.startswith(protocol.REASON_REPLACED):
                # Another process serves this name now; fighting it would flap both forever.
                self.log.error(
                    "replaced_by_another_instance",
                    reason=reason,
                    hint="two actors share this service name?",
                )
                self.request_stop()
            elif reason.startswith(protocol.REASON_BROKER_STOPPING):
                self.log.warning("broker_stopping")
            else:
                # The broker does not know us (it restarted): register again.
                self.log.info("reregistering", reason=reason)
                self._send_ready()

    def _on_request(self, header: list[Any], frames: list[Any]) -> None:
        try:
            msg_id = header[2]
            name = header[4]
            ttl = header[5]
            payload = header[6]
        except IndexError:
            self.log.warning("malformed_request")
            return
        if type(msg_id) is not str:
            self.log.warning("malformed_request")
            return
        if type(name) is not str or type(payload) is not bytes:
            self._reply_error(msg_id, BadRequest("command must be a string and args a msgpack bin"))
            return
        # A nil ttl_s leaves the deadline to the broker, which cancels the command when it passes.
        deadline = time.monotonic() + (ttl if type(ttl) in (int, float) else _NO_LOCAL_DEADLINE_S)
        if self._stopping:
            self._reply_error(msg_id, Unavailable(f"{self.name} is shutting down"))
            return
        spec = self.commands.get(name)
        if spec is None:
            self._reply_error(
                msg_id,
                UnknownCommand(
                    f"{self.name} ({self.kind}) has no command {name!r}",
                    details={"command": name, "known": sorted(self.commands)},
                ),
            )
            return
        try:
            raw_args = (
                protocol.unpack_value(payload, frames[1:])
                if len(frames) > 1
                else protocol.unpack_small(payload)
            )
            args = spec.bind(raw_args if raw_args is not None else {})
        except BusError as exc:
            self._reply_error(msg_id, exc)
            return
        except Exception as exc:  # msgpack of several types for a corrupt payload
            self._reply_error(msg_id, BadRequest(f"arguments are not valid msgpack ({exc})"))
            return
        request = _Request(msg_id, spec, args, deadline)
        if spec.concurrent or (self._current is None and not self._queue):
            self._start(request)
        elif len(self._queue) >= self.settings.max_queue:
            self._reply_error(
                msg_id, Busy(f"{self.name}: {len(self._queue)} requests already queued")
            )
        else:
            self._queue.append(request)
            self._inflight[msg_id] = request

    def _start(self, request: _Request) -> None:
        spec = request.spec
        if not spec.concurrent:
            self._current = request
        if spec.is_async or spec.context_param is not None:
            self._launch(request)
            return
        self._run_inline(request)
        if not spec.concurrent:
            self._finish_current()

    def _launch(self, request: _Request) -> None:
        self._inflight[request.msg_id] = request
        request.task = self._loop.create_task(self._run_async(request))
        request.task.add_done_callback(lambda _task: self._after_task(request))

    def _after_task(self, request: _Request) -> None:
        """A task cancelled before its first step never runs ``_run_async`` (and so never its
        ``finally``): answer for it and free the device here, or the actor would wait forever."""
        if self._inflight.get(request.msg_id) is not request:
            return  # _run_async ran and cleaned up
        self._inflight.pop(request.msg_id, None)
        self._reply_error(request.msg_id, Cancelled("cancelled before it started"))
        if not request.spec.concurrent and self._current is request:
            self._finish_current()

    def _run_inline(self, request: _Request) -> None:
        """Run a plain-function command at once: no task, no extra loop turn."""
        try:
            result = getattr(self, request.spec.method_name)(**request.args)
        except BusError as exc:
            self._reply_error(request.msg_id, exc)
        except Exception as exc:
            self._reply_error(request.msg_id, self._internal(request, exc))
        else:
            self._reply(request.msg_id, result)

    async def _run_async(self, request: _Request) -> None:
        spec = request.spec
        msg_id = request.msg_id
        try:
            with structlog.contextvars.bound_contextvars(msg_id=msg_id, command=spec.name):
                if time.monotonic() >= request.deadline:
                    raise DeadlineExceeded("deadline passed while queued")
                kwargs = request.args
                if spec.context_param is not None:
                    ctx = CommandContext(
                        msg_id,
                        request.deadline,
                        lambda data: self._send(protocol.encode_progress(msg_id, data)),
                    )
                    kwargs = {**kwargs, spec.context_param: ctx}
                try:
                    async with asyncio.timeout_at(
                        self._loop.time() + (request.deadline - time.monotonic())
                    ):
                        result = getattr(self, spec.method_name)(**kwargs)
                        if asyncio.iscoroutine(result):
                            result = await result
                except TimeoutError as exc:
                    if isinstance(exc, BusError):
                        raise
                    raise DeadlineExceeded("did not finish before the deadline") from None
            self._reply(msg_id, result)
        except asyncio.CancelledError:
            self._reply_error(msg_id, Cancelled("cancelled by the caller"))
        except BusError as exc:
            self._reply_error(msg_id, exc)
        except Exception as exc:
            self._reply_error(msg_id, self._internal(request, exc))
        finally:
            self._inflight.pop(msg_id, None)
            if not spec.concurrent and self._current is request:
                self._finish_current()

    def _finish_current(self) -> None:
        """Start what waits in the queue: plain commands run here in turn (a loop, not
        recursion, however long the queue), the first coroutine command becomes current."""
        self._current = None
        while self._queue and not self._stopping:
            nxt = self._queue.popleft()
            self._inflight.pop(nxt.msg_id, None)
            if time.monotonic() >= nxt.deadline:
                # Its caller has already been told deadline_exceeded; do not touch the device.
                self._reply_error(nxt.msg_id, DeadlineExceeded("deadline passed while queued"))
                continue
            if nxt.spec.is_async or nxt.spec.context_param is not None:
                self._current = nxt
                self._launch(nxt)
                return
            self._run_inline(nxt)

    def _on_cancel(self, msg_id: Any) -> None:
        request = self._inflight.get(msg_id)
        if request is None:
            return
        if request.task is not None:
            request.task.cancel()
        else:
            self._queue.remove(request)
            self._inflight.pop(msg_id, None)
            self._reply_error(msg_id, Cancelled("cancelled before it started"))

    def _internal(self, request: _Request, exc: Exception) -> BusError:
        self.log.error(
            "command_crashed", msg_id=request.msg_id, command=request.spec.name, exc_info=exc
        )
        return InternalError(
            f"internal error in {self.name} (see its log, msg_id {request.msg_id})"
        )

    def _reply(self, msg_id: str, result: Any) -> None:
        try:
            frames = protocol.encode_reply(msg_id, result)
        except TypeError as exc:
            self._reply_error(msg_id, InternalError(f"result cannot be encoded: {exc}"))
            return
        self._send(frames)

    def _reply_error(self, msg_id: str, exc: BusError) -> None:
        self._send(protocol.encode_error(msg_id, exc.code, exc.message, exc.details))

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_s
        frames = protocol.encode_heartbeat()
        lost = False
        while True:
            await asyncio.sleep(interval)
            silent = time.monotonic() - self._last_broker
            if silent > self.settings.heartbeat_timeout_s:
                if not lost:
                    self.log.warning("broker_silent", silent_s=round(silent, 1))
                    lost = True
                # The DEALER reconnects by itself; READY again so a restarted broker knows us.
                self._send_ready()
                continue
            if lost:
                self.log.info("broker_back")
                lost = False
            self._send(frames, quiet=True)

    async def _shutdown(self) -> None:
        """Stop taking work, finish or cancel the current command, fail the queue, close."""
        self._stopping = True
        self.log.info("actor_stopping", queued=len(self._queue), running=self._current is not None)
        while self._queue:
            request = self._queue.popleft()
            self._inflight.pop(request.msg_id, None)
            self._reply_error(request.msg_id, Unavailable(f"{self.name} is shutting down"))
        running = [r.task for r in self._inflight.values() if r.task is not None]
        if running:
            _, pending = await asyncio.wait(running, timeout=self.settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self.settings.shutdown_grace_s)
        self._send(protocol.encode_disconnect("actor stopping"))
        try:
            await self.on_stop()
        except Exception:  # closing a broken device must not hide the orderly exit
            self.log.exception("on_stop_failed")

    # --- process entry ----------------------------------------------------------------------

    def run(self, settings: ActorSettings | None = None) -> None:
        """Serve in this process until SIGINT or SIGTERM (what ``linebus actor`` calls)."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(settings, stop=stop)

        asyncio.run(main())
