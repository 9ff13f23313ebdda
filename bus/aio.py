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
import math
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import zmq
import zmq.asyncio

from bus import _zmqio, protocol
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
        await self._client._wait(self._state, self._done, shared=True)
        return self._state.outcome()

    def __await__(self) -> Any:
        return self.result().__await__()


class AsyncSubscription:
    """An async iterator of events with gap detection, and gap repair when ``repair`` is true
    (see ``bus.client.Subscription``).

    With ``latest_only``, the subscription holds one event, the newest (ZeroMQ's
    ``ZMQ_CONFLATE``): a reader that samples a busy line now and then gets the latest event each
    time, and its ``missed`` says how many of that topic went by unread since the last one of
    it. Nothing is repaired or reported to the broker then: missing them is the point. Such a
    subscription takes one prefix at most, no ``add_prefixes``, and ``wait_ready`` only when it
    follows every topic: libzmq conflates the subscription messages it sends upstream too, so a
    second one (the probe's) could replace the first.
    """

    def __init__(
        self,
        client: AsyncClient,
        prefixes: tuple[str, ...],
        *,
        repair: bool = False,
        repair_timeout: float = 2.0,
        max_queue: int | None = None,
        latest_only: bool = False,
    ) -> None:
        if latest_only and repair:
            raise ValueError("a latest_only subscription cannot repair gaps: it skips on purpose")
        if latest_only and len(prefixes) > 1:
            raise ValueError(f"a latest_only subscription takes one prefix at most, not {prefixes}")
        self._tracker = GapTracker()
        self._latest_only = latest_only
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
        if latest_only:
            sock.setsockopt(zmq.CONFLATE, 1)
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

    def add_prefixes(self, *prefixes: str) -> None:
        """Also receive events whose topic starts with any of ``prefixes`` from now on."""
        if self._latest_only:
            raise ValueError("a latest_only subscription cannot take more prefixes")
        for prefix in prefixes:
            if prefix not in self.prefixes:
                self._sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
                self.prefixes += (prefix,)
                self._loss.prefixes.append(prefix)

    def report(self, *, now: bool = False) -> None:
        """Tell the broker what was missed and repaired (``bus.client.Subscription.report``)."""
        if self._latest_only:
            return  # a sampler misses by design; the broker's gap figures are for real losses
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
        # A subscription to every topic gets the probe as it is; any other needs one more.
        covered = any(token.startswith(prefix) for prefix in self.prefixes or ("",))
        if not covered:
            if self._latest_only:
                raise ValueError(
                    "wait_ready needs a second subscription, which latest_only forbids "
                    "(unless it follows every topic)"
                )
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
            if not covered:
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


# The hot path's frame I/O without pyzmq's Python layer (bus._zmqio), as in bus.client.
_NOBLOCK = _zmqio.NOBLOCK
_events = _zmqio.events
_readable = _zmqio.readable
_recv_frame = _zmqio.recv_frame
_recv_rest = _zmqio.recv_rest
_send_frames = _zmqio.send_frames
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)


def _drop(_update: Any) -> None:
    """Progress of a ``call`` made without a ``progress`` callback: nobody reads it."""


class AsyncClient:
    """An asyncio connection to a linebus broker; arguments as for ``bus.client.Client``
    (``keys`` too: None takes them from the environment, and a broker that refuses the
    handshake fails calls with ``Unauthenticated`` at once).

    How it reads: the command socket is a plain pyzmq socket whose file descriptor the event
    loop watches (``loop.add_reader``); each wake-up drains every answer already queued and
    resolves the futures of the calls they end, with no future, task or coroutine per frame.
    ZeroMQ's descriptor signals a change of the socket's state, not the data, so every send
    looks at the socket's events afterwards (``_pump``): a send may have consumed the signal
    of an answer that arrived meanwhile."""

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
        #: The future each waiting call is resolved through, by msg_id.
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._sock: zmq.Socket[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._pumping = False
        self._pump_due = False
        #: Sends waiting for the socket to accept a message (no connection yet).
        self._writable: list[asyncio.Future[None]] = []
        self._watch = HandshakeWatch(self.endpoint, self.keys, on_connection=self._on_connection)
        self._monitor: zmq.asyncio.Socket | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._refused = asyncio.Event()
        #: The one timer that fails calls past their deadline (``_sweep_by``), and its time.
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf

    async def __aenter__(self) -> AsyncClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        """Connect (done by ``async with``)."""
        if self._sock is not None:
            return
        # A plain socket in the asyncio context: its monitor (made by the context) is an
        # asyncio socket, while the command socket itself is read by _pump.
        sock: zmq.Socket[bytes] = zmq.Socket(self._ctx, zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 100_000
        sock.immediate = 1  # never queue requests for an absent broker (see bus.client)
        if self.keys is not None:
            self.keys.secure(sock)
        # Made by the socket's (asyncio) context: an asyncio socket, typed as a plain one.
        monitor = cast(zmq.asyncio.Socket, sock.get_monitor_socket(CALL_EVENTS))

        def release() -> None:
            sock.disable_monitor()
            monitor.close(linger=0)

        connect_endpoint(sock, self.endpoint, release)
        self._monitor = monitor
        # The same monitor socket read without waiting (see _monitor_events_now).
        self._monitor_now: zmq.Socket[bytes] = zmq.Socket.shadow(monitor.underlying)
        self._sock = sock
        loop = self._loop = asyncio.get_running_loop()
        self._fd = cast(int, sock.get(zmq.FD))
        loop.add_reader(self._fd, self._pump)
        self._watcher = loop.create_task(self._watch_loop(monitor))

    def _pump(self) -> None:
        """Take in every answer the socket holds, and wake the sends waiting for it to accept
        messages; called when its descriptor signals and after every send."""
        sock = self._sock
        if sock is None or self._pumping:
            return  # closed, or called back from a progress callback while pumping
        self._pumping = True
        try:
            dispatch = self._dispatch
            while True:
                events = _events(sock)
                if events & _POLLOUT and self._writable:
                    for waiting in self._writable:
                        if not waiting.done():
                            waiting.set_result(None)
                    self._writable.clear()
                if not events & _POLLIN:
                    return
                first, more = _recv_frame(sock, _NOBLOCK)
                dispatch([first, *_recv_rest(sock)] if more else [first])
        finally:
            self._pumping = False

    def _pump_soon(self) -> None:
        """``_pump`` once the callbacks the loop is running now are done, before it waits again:
        a send may have consumed the descriptor's signal of an answer (see the class
        docstring), and one look after the last of them serves every send of that pass (the
        tasks a drain woke each send their next request in the same pass)."""
        if not self._pump_due and self._loop is not None:
            self._pump_due = True
            self._loop.call_soon(self._pump_now)

    def _pump_now(self) -> None:
        self._pump_due = False
        self._pump()

    def _dispatch(self, frames: list[Any]) -> None:
        state = self._core.dispatch(frames)
        if state is not None and state.done:
            done = self._waiters.pop(state.msg_id, None)
            if done is not None and not done.done():
                done.set_result(None)

    def _on_connection(self, up: bool) -> None:
        """The connection closed (calls in flight are lost) or a handshake succeeded (the lost
        calls fail with ``unavailable``): ``CallCore.connection_lost``. Answers that arrived
        before the close are taken in first, so only calls really left unanswered count."""
        if not up:
            self._pump()
            self._core.connection_lost()
            return
        self._core.reconnected(self.endpoint)
        self._release_finished()

    def _release_finished(self) -> None:
        """Resolve the futures of the calls the core has ended (failed locally)."""
        pending = self._core.pending
        for msg_id in [m for m in self._waiters if m not in pending]:
            done = self._waiters.pop(msg_id)
            if not done.done():
                done.set_result(None)

    async def _watch_loop(self, monitor: zmq.asyncio.Socket) -> None:
        """Follow the handshakes: a refusal fails the calls in flight and wakes waiting sends."""
        while True:
            self._on_monitor_event(await monitor.recv_multipart())

    def _monitor_events_now(self) -> None:
        """Apply the monitor events already queued, before a new request goes out: after a
        broker restart while the loop was busy elsewhere, the old connection's close must not
        be taken for the loss of a request sent on the new one. (Looking at the events reads
        no descriptor, unlike a poll.)"""
        monitor = self._monitor_now
        while _readable(monitor):
            self._on_monitor_event(monitor.recv_multipart(_NOBLOCK))

    def _on_monitor_event(self, frames: list[bytes]) -> None:
        refused = self._watch.on_event(frames)
        if refused is None:
            if self._watch.refused is None:  # a success; a close keeps a refusal standing
                self._refused.clear()
            return
        self._refused.set()
        self._core.fail_every(refused)
        self._release_finished()

    def notify(self, service: str, command: str, args: dict[str, Any]) -> bool:
        """Send a request whose answer nobody waits for (dropped on arrival); never blocks.
        False: not sent (no connection to the broker now, or the client is not open)."""
        sock = self._sock
        if sock is None:
            return False
        frames = self._core.notice(service, command, args, NOTIFY_TTL_S)
        try:
            sock.send_multipart(frames, _NOBLOCK)
        except zmq.ZMQError:
            return False
        finally:
            self._pump()
        return True

    def _try_send(self, frames: list[Any], state: CallState | None) -> bool:
        """Send at once if the socket takes the message (the hot path); False if it cannot now."""
        sock = self._sock
        if sock is None:
            raise Unavailable("client is not open (use `async with AsyncClient()`)")
        if state is not None:
            self._monitor_events_now()
        try:
            _send_frames(sock, frames, _NOBLOCK, len(frames) == 1)
        except zmq.Again:
            return False
        finally:
            self._pump_soon()
        if state is not None:
            state.sent = True
        return True

    async def _send(self, frames: list[Any], state: CallState | None = None) -> None:
        if not self._try_send(frames, state):
            await self._send_later(frames, state)

    async def _send_later(self, frames: list[Any], state: CallState | None) -> None:
        """Wait until the socket takes ``frames`` (it waits for a connection; ZMQ_IMMEDIATE
        queues nothing before), until the call's deadline or until the broker refuses our
        handshake, whichever comes first."""
        sock = self._sock
        assert sock is not None and self._loop is not None
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
            while (remaining := deadline - time.monotonic()) > 0:
                writable = self._loop.create_future()
                self._writable.append(writable)
                self._pump()  # the state now: a signal consumed before this wait is not lost
                await asyncio.wait(
                    {writable, refusal}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if self._watch.refused is not None:
                    break
                if self._try_send(frames, state):
                    return
        finally:
            refusal.cancel()
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

    def _expire(self, state: CallState) -> None:
        """The call's deadline (plus grace) passed with no answer: fail it locally."""
        self._core.expire(state, self.endpoint)
        done = self._waiters.pop(state.msg_id, None)
        if done is not None and not done.done():
            done.set_result(None)

    async def _wait(
        self, state: CallState, done: asyncio.Future[None], *, shared: bool = False
    ) -> None:
        """Until ``state`` ends: its answer, a local failure, or its deadline. ``shared``: the
        future may have other waiters (an ``AsyncCall``), so a cancelled wait must not cancel
        it."""
        if done.done():
            return
        self._sweep_by(state.deadline)
        try:
            await (asyncio.shield(done) if shared else done)
        except asyncio.CancelledError:
            # The awaiting task was cancelled: cancel the remote command too, then propagate.
            if not state.done:
                await self._send(protocol.encode_cancel(state.msg_id))
            raise

    def _sweep_by(self, deadline: float) -> None:
        """Make sure a deadline sweep runs by ``deadline`` (``time.monotonic()``).

        One timer serves every call: a timer per call (set, then cancelled when the answer
        comes, nearly always) was a tenth of the client's CPU with 8 calls in flight. Calls
        mostly share one timeout, so the armed sweep is nearly always the earlier one."""
        if deadline >= self._sweep_at:
            return
        assert self._loop is not None
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_at = deadline
        self._sweep = self._loop.call_later(
            max(0.0, deadline - time.monotonic()), self._sweep_deadlines
        )

    def _sweep_deadlines(self) -> None:
        """Fail locally every call past its deadline (plus grace) with no answer; arm the next
        sweep for the earliest deadline left."""
        self._sweep, self._sweep_at = None, math.inf
        now = time.monotonic()
        pending = self._core.pending
        earliest = math.inf
        for msg_id in list(self._waiters):
            state = pending.get(msg_id)
            if state is None:
                continue
            if state.deadline <= now:
                self._expire(state)
            elif state.deadline < earliest:
                earliest = state.deadline
        if earliest < math.inf:
            self._sweep_by(earliest)

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
        self._waiters[state.msg_id] = done
        try:
            await self._send(frames, state)
        except BaseException:
            self._waiters.pop(state.msg_id, None)
            raise
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
        state, frames = self._core.request(service, command, merged, timeout, progress or _drop)
        loop = self._loop
        if loop is None:
            raise Unavailable("client is not open (use `async with AsyncClient()`)")
        done: asyncio.Future[None] = loop.create_future()
        msg_id = state.msg_id
        self._waiters[msg_id] = done
        try:
            if not self._try_send(frames, state):
                await self._send_later(frames, state)
        except BaseException:
            self._waiters.pop(msg_id, None)
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
        latest_only: bool = False,
    ) -> AsyncSubscription:
        """Subscribe to events whose topic starts with any of ``prefixes`` (all, if none); with
        ``repair``, missed events are fetched from their publisher and delivered first;
        ``max_queue`` as in ``bus.client.queue_options``; ``latest_only``: hold only the newest
        event (see ``AsyncSubscription``)."""
        return AsyncSubscription(
            self,
            prefixes,
            repair=repair,
            repair_timeout=repair_timeout,
            max_queue=max_queue,
            latest_only=latest_only,
        )

    async def close(self) -> None:
        """Fail pending calls and close."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self._watcher = None
        self._core.fail_all(lambda s: Cancelled(f"{s.service}.{s.command}: client closed"))
        self._release_finished()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep, self._sweep_at = None, math.inf
        for waiting in self._writable:
            waiting.cancel()
        self._writable.clear()
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            self._sock.disable_monitor()
            if self._monitor is not None:
                self._monitor.close(linger=0)
                self._monitor = None
            self._sock.close(linger=0)
            self._sock = None
