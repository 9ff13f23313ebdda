"""The asyncio Python client; same core and semantics as ``bus.client.Client``.

    async with AsyncClient() as bus:
        version = await bus.call("fr1", "FR_GetDllVersion")
        async for event in bus.subscribe("presence."):
            print(event.topic, event.data)

Many calls may be in flight at once from many tasks; one reader task matches answers to calls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from bus import protocol
from bus._calls import (
    CallCore,
    CallState,
    GapRepair,
    GapTracker,
    LossReport,
    ProgressCallback,
    TrackedEvent,
)
from bus.client import (
    CALL_EVENTS,
    HANDSHAKE_EVENTS,
    NOTIFY_TTL_S,
    REFUSAL_CHECK_S,
    HandshakeWatch,
    KeysArg,
    connect_endpoint,
    default_endpoints,
    queue_options,
    resolve_keys,
)
from bus.errors import BrokerUnreachable, BusError, Cancelled, DeadlineExceeded, Unavailable

__all__ = ["AsyncCall", "AsyncClient", "AsyncSubscription"]


class AsyncCall:
    """A request in flight from ``AsyncClient.start``: await it, read progress, cancel it."""

    def __init__(
        self,
        client: AsyncClient,
        state: CallState,
        done: asyncio.Future[None],
        updates: asyncio.Queue[Any],
    ) -> None:
        self._client = client
        self._state = state
        self._done = done
        self._updates = updates

    @property
    def msg_id(self) -> str:
        """The request's message id."""
        return self._state.msg_id

    async def updates(self) -> AsyncIterator[Any]:
        """Yield progress updates until the call ends."""
        while True:
            if not self._updates.empty():
                yield self._updates.get_nowait()
                continue
            if self._done.done():
                return
            getter = asyncio.ensure_future(self._updates.get())
            finished, _ = await asyncio.wait(
                {getter, self._done}, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in finished:
                yield getter.result()
            else:
                getter.cancel()

    async def cancel(self) -> None:
        """Ask the actor to stop; awaiting the call then raises ``Cancelled``."""
        if not self._done.done():
            await self._client._send(protocol.encode_cancel(self._state.msg_id))

    async def result(self) -> Any:
        """Wait for the end of the call; return its result or raise its typed error."""
        await self._client._wait(self._state, self._done)
        return self._state.outcome()

    def __await__(self) -> Any:
        return self.result().__await__()


class AsyncSubscription:
    """An async iterator of events with gap detection, and gap repair when ``repair`` is true
    (see ``bus.client.Subscription``)."""

    def __init__(
        self,
        client: AsyncClient,
        prefixes: tuple[str, ...],
        *,
        repair: bool = False,
        repair_timeout: float = 2.0,
        max_queue: int | None = None,
    ) -> None:
        self._tracker = GapTracker()
        self._repair = repair
        self._repair_timeout = repair_timeout
        self._ready: collections.deque[TrackedEvent] = collections.deque()
        #: Events recovered by repairing gaps (not counted in ``missed_total``).
        self.repaired_total = 0
        self.prefixes = prefixes
        self._loss = LossReport(prefixes)
        options = queue_options(max_queue)
        sock = client._ctx.socket(zmq.SUB)
        sock.linger = 0
        for option, value in options.items():
            sock.setsockopt(option, value)
        for prefix in prefixes or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        if client.keys is not None:
            client.keys.secure(sock)
        self._watch = HandshakeWatch(client.subscribe_endpoint, client.keys, "events")
        self._monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
        # Read without blocking through a plain view of the same socket (no future needed).
        self._monitor_now: zmq.Socket[bytes] = zmq.Socket.shadow(self._monitor.underlying)
        monitor = self._monitor

        def release() -> None:
            sock.disable_monitor()
            monitor.close(linger=0)

        connect_endpoint(sock, client.subscribe_endpoint, release)
        self._sock = sock
        self._client = client

    def _check_refused(self) -> None:
        """Raise ``Unauthenticated`` if the broker refused this subscription's handshake."""
        refused = self._watch.drain(self._monitor_now)
        if refused is not None:
            raise refused

    async def _poll(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever) for an event, looking at the
        handshake monitor at least every ``REFUSAL_CHECK_S``; False if none came."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            step = REFUSAL_CHECK_S if end is None else min(REFUSAL_CHECK_S, end - time.monotonic())
            if await self._sock.poll(max(0.0, step) * 1000):
                return True
            self._check_refused()
            self.report()
            if end is not None and time.monotonic() >= end:
                return False

    @property
    def missed_total(self) -> int:
        """Events detected as lost (and not recovered) since the subscription began."""
        return self._tracker.missed_total

    def report(self, *, now: bool = False) -> None:
        """Tell the broker what was missed and repaired (``bus.client.Subscription.report``)."""
        args = self._loss.args(self.missed_total, self.repaired_total, now=now)
        if args is not None and self._client.notify(
            protocol.BROKER_SERVICE, "report_subscriber", args
        ):
            self._loss.sent(args)

    async def _repaired(self, event: TrackedEvent) -> list[TrackedEvent]:
        """``event`` preceded by what its gap's publisher still had."""
        repair = GapRepair(event)
        while (args := repair.args()) is not None:
            try:
                result = await self._client.call(
                    event.src, "replay", args, timeout=self._repair_timeout
                )
            except BusError as exc:
                repair.take(error=exc)
            else:
                repair.take(result)
        self._tracker.missed_total -= repair.recovered
        self.repaired_total += repair.recovered
        return repair.events()

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Return once the broker forwards to this subscription (see the sync client)."""
        token = f"_probe.{protocol.new_id_prefix()}"
        self._sock.setsockopt(zmq.SUBSCRIBE, token.encode())
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                await self._client.call(
                    protocol.BROKER_SERVICE,
                    "probe",
                    topic=token,
                    timeout=max(0.1, end - time.monotonic()),
                )
                if await self._sock.poll(100):
                    frame = await self._sock.recv()
                    if not frame.startswith(token.encode()):
                        self._pushback = frame
                    return
                self._check_refused()
            raise DeadlineExceeded(f"subscription to {self.prefixes} not active within {timeout} s")
        finally:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, token.encode())

    _pushback: bytes | None = None

    async def next(self, timeout: float | None = None) -> TrackedEvent | None:
        """The next event, or None if none arrives within ``timeout``."""
        if self._ready:
            return self._ready.popleft()
        while True:
            if self._pushback is not None:
                frame, self._pushback = self._pushback, None
            else:
                try:
                    frame = asyncio.ensure_future(self._sock.recv(zmq.NOBLOCK)).result()  # queued
                except zmq.Again:
                    if not await self._poll(timeout):
                        return None
                    frame = await self._sock.recv()
            event = self._tracker.decode(frame)
            if event is not None:
                if event.missed:
                    if self._repair:
                        self._ready.extend(await self._repaired(event))
                    else:
                        self._ready.append(event)
                    self.report()
                    return self._ready.popleft()
                return event

    def __aiter__(self) -> AsyncIterator[TrackedEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TrackedEvent]:
        while True:
            event = await self.next()
            if event is not None:
                yield event

    def close(self) -> None:
        """Stop receiving (and report what was missed, if that is news)."""
        if not self._sock.closed:
            self.report(now=True)
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)


class AsyncClient:
    """An asyncio connection to a linebus broker; arguments as for ``bus.client.Client``
    (``keys`` too: None takes them from the environment, and a broker that refuses the
    handshake fails calls with ``Unauthenticated`` at once)."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        subscribe_endpoint: str | None = None,
        timeout: float = 10.0,
        keys: KeysArg = None,
    ) -> None:
        self.endpoint, self.subscribe_endpoint = default_endpoints(endpoint, subscribe_endpoint)
        self.keys = resolve_keys(keys)
        self._ctx = zmq.asyncio.Context.instance()
        self._core = CallCore(timeout)
        self._waiters: dict[str, tuple[asyncio.Future[None], asyncio.Queue[Any]]] = {}
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watch = HandshakeWatch(self.endpoint, self.keys, on_connection=self._on_connection)
        self._monitor: zmq.asyncio.Socket | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._refused = asyncio.Event()

    async def __aenter__(self) -> AsyncClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        """Connect (done by ``async with``)."""
        if self._sock is not None:
            return
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 100_000
        sock.immediate = 1  # never queue requests for an absent broker (see bus.client)
        if self.keys is not None:
            self.keys.secure(sock)
        monitor = sock.get_monitor_socket(CALL_EVENTS)

        def release() -> None:
            sock.disable_monitor()
            monitor.close(linger=0)

        connect_endpoint(sock, self.endpoint, release)
        self._monitor = monitor
        # The same monitor socket read without waiting (see _monitor_events_now).
        self._monitor_now: zmq.Socket[bytes] = zmq.Socket.shadow(monitor.underlying)
        self._sock = sock
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read_loop())
        self._watcher = loop.create_task(self._watch_loop(self._monitor))

    def _on_connection(self, up: bool) -> None:
        """The connection closed (calls in flight are lost) or a handshake succeeded (the lost
        calls fail with ``unavailable``): ``CallCore.connection_lost``. Answers queued before
        the close are read by ``_read_loop`` long before the next handshake can succeed."""
        if not up:
            self._core.connection_lost()
            return
        self._core.reconnected(self.endpoint)
        for msg_id, (done, _) in self._waiters.items():
            if msg_id not in self._core.pending and not done.done():
                done.set_result(None)

    async def _watch_loop(self, monitor: zmq.asyncio.Socket) -> None:
        """Follow the handshakes: a refusal fails the calls in flight and wakes waiting sends."""
        while True:
            self._on_monitor_event(await monitor.recv_multipart())

    def _monitor_events_now(self) -> None:
        """Apply the monitor events already queued, before a new request goes out: after a
        broker restart while the loop was busy elsewhere, the old connection's close must not
        be taken for the loss of a request sent on the new one."""
        monitor = self._monitor_now
        while monitor.poll(0):
            self._on_monitor_event(monitor.recv_multipart())

    def _on_monitor_event(self, frames: list[bytes]) -> None:
        refused = self._watch.on_event(frames)
        if refused is None:
            if self._watch.refused is None:  # a success; a close keeps a refusal standing
                self._refused.clear()
            return
        self._refused.set()
        self._core.fail_every(refused)
        for done, _ in self._waiters.values():
            if not done.done():
                done.set_result(None)

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            state = self._core.dispatch(frames)
            if state is None:
                continue
            waiter = self._waiters.get(state.msg_id)
            if waiter is None:
                continue
            done, updates = waiter
            while state.progress:
                updates.put_nowait(state.progress.pop(0))
            if state.done and not done.done():
                done.set_result(None)

    def notify(self, service: str, command: str, args: dict[str, Any]) -> bool:
        """Send a request whose answer nobody waits for (dropped on arrival); never blocks.
        False: not sent (no connection to the broker now, or the client is not open)."""
        sock = self._sock
        if sock is None:
            return False
        frames = self._core.notice(service, command, args, NOTIFY_TTL_S)
        sent = asyncio.ensure_future(sock.send_multipart(frames, zmq.NOBLOCK))
        if not sent.done():  # not expected with NOBLOCK: give up rather than wait
            sent.cancel()
            return False
        return sent.exception() is None

    async def _send(self, frames: list[Any], state: CallState | None = None) -> None:
        sock = self._sock
        if sock is None:
            raise Unavailable("client is not open (use `async with AsyncClient()`)")
        # zmq.asyncio tries the send at once and returns a done future when it went out (the
        # hot path). Otherwise the future is a blocking send (it waits for the connection;
        # ZMQ_IMMEDIATE queues nothing before), awaited until the call's deadline or until the
        # broker refuses our handshake, whichever comes first.
        if state is not None:
            self._monitor_events_now()
        sent = asyncio.ensure_future(sock.send_multipart(frames, copy=len(frames) == 1))
        if sent.done():
            sent.result()
            if state is not None:
                state.sent = True
            return
        deadline = (
            state.deadline if state is not None else time.monotonic() + self._core.default_timeout_s
        )
        if self._watch.refused is not None:
            # libzmq never retries a refused handshake: try once more (the key may be known now).
            self._watch.reset()
            self._refused.clear()
            sock.disconnect(self.endpoint)
            sock.connect(self.endpoint)
        refusal: asyncio.Future[Any] = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait(
                {sent, refusal},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            refusal.cancel()
        if sent.done():
            sent.result()
            if state is not None:
                state.sent = True
            return
        sent.cancel()
        refused = self._watch.refused
        if refused is not None:
            if state is not None:
                self._core.fail(state, refused)
            raise refused
        if state is not None:
            self._core.expire(state, self.endpoint, unsent=True)
            if state.error is not None:
                raise state.error
        raise BrokerUnreachable(f"no connection to the broker at {self.endpoint}")

    async def _wait(self, state: CallState, done: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(
                asyncio.shield(done), max(0.0, state.deadline - time.monotonic())
            )
        except TimeoutError:
            self._core.expire(state, self.endpoint)
        except asyncio.CancelledError:
            # The awaiting task was cancelled: cancel the remote command too, then propagate.
            if not state.done:
                await self._send(protocol.encode_cancel(state.msg_id))
            raise
        finally:
            if state.done:
                self._waiters.pop(state.msg_id, None)

    async def start(
        self,
        service: str,
        command: str,
        /,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncCall:
        """Send a request and return an ``AsyncCall`` to follow, cancel or await."""
        merged = {**args, **kwargs} if args else kwargs
        updates: asyncio.Queue[Any] = asyncio.Queue()
        state, frames = self._core.request(service, command, merged, timeout, updates.put_nowait)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[state.msg_id] = (done, updates)
        await self._send(frames, state)
        return AsyncCall(self, state, done, updates)

    async def call(
        self,
        service: str,
        command: str,
        /,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``command`` on ``service``; return its result or raise its typed error."""
        merged = {**args, **kwargs} if args else kwargs
        state, frames = self._core.request(service, command, merged, timeout, progress)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[state.msg_id] = (done, asyncio.Queue())
        try:
            await self._send(frames, state)
        except BaseException:
            self._waiters.pop(state.msg_id, None)
            raise
        await self._wait(state, done)
        return state.outcome()

    async def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask the broker for a pong."""
        result: dict[str, Any] = await self.call(protocol.BROKER_SERVICE, "ping", timeout=timeout)
        return result

    async def services(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every service the broker has seen, with its state."""
        result: list[dict[str, Any]] = await self.call(
            protocol.BROKER_SERVICE, "services", timeout=timeout
        )
        return result

    async def describe(self, service: str, timeout: float | None = None) -> dict[str, Any]:
        """A service's commands, arguments and docs."""
        result: dict[str, Any] = await self.call(
            protocol.BROKER_SERVICE, "describe", service=service, timeout=timeout
        )
        return result

    async def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """The broker's counters."""
        result: dict[str, Any] = await self.call(protocol.BROKER_SERVICE, "stats", timeout=timeout)
        return result

    def subscribe(
        self,
        *prefixes: str,
        repair: bool = False,
        repair_timeout: float = 2.0,
        max_queue: int | None = None,
    ) -> AsyncSubscription:
        """Subscribe to events whose topic starts with any of ``prefixes`` (all, if none); with
        ``repair``, missed events are fetched from their publisher and delivered first;
        ``max_queue`` as in ``bus.client.queue_options``."""
        return AsyncSubscription(
            self, prefixes, repair=repair, repair_timeout=repair_timeout, max_queue=max_queue
        )

    async def close(self) -> None:
        """Fail pending calls and close."""
        for task in (self._reader, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._watcher = None
        self._core.fail_all(lambda s: Cancelled(f"{s.service}.{s.command}: client closed"))
        for done, _ in self._waiters.values():
            if not done.done():
                done.set_result(None)
        self._waiters.clear()
        if self._sock is not None:
            self._sock.disable_monitor()
            if self._monitor is not None:
                self._monitor.close(linger=0)
                self._monitor = None
            self._sock.close(linger=0)
            self._sock = None
