"""The synchronous Python client: call actors' commands and subscribe to events.

    from bus.client import Client

    with Client() as bus:                         # LINEBUS_ENDPOINT or tcp://127.0.0.1:7750
        print(bus.call("fr1", "FR_GetDllVersion"))
        job = bus.start("fr1", "FR_SendFile", path="fw.frb", data=image)
        for update in job.updates():               # progress, until the job ends
            print(update)
        job.result()
        for event in bus.subscribe("presence."):
            print(event.topic, event.data)

A ``Client`` is not thread-safe (ZeroMQ sockets are not): use one per thread, or ``AsyncClient``.
Imports only pyzmq, msgpack and ``bus.protocol``/``bus.errors`` (a test proves it), so it can ship
alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import zmq

from bus import protocol
from bus._calls import CallCore, CallState, GapTracker, ProgressCallback, TrackedEvent
from bus.errors import BrokerUnreachable, DeadlineExceeded, Unavailable

__all__ = ["Call", "Client", "Subscription", "default_endpoints"]


def default_endpoints(
    endpoint: str | None = None, subscribe_endpoint: str | None = None
) -> tuple[str, str]:
    """Resolve the command and subscribe endpoints from arguments, environment, or defaults.

    With only a command endpoint ``tcp://host:P``, subscribers go to ``tcp://host:P+2``, the
    default layout of a broker.
    """
    command = endpoint or os.environ.get("LINEBUS_ENDPOINT") or protocol.DEFAULT_COMMAND_ENDPOINT
    subscribe = subscribe_endpoint or os.environ.get("LINEBUS_SUBSCRIBE")
    if not subscribe:
        host, _, port = command.rpartition(":")
        subscribe = (
            f"{host}:{int(port) + 2}"
            if command.startswith("tcp://") and port.isdigit()
            else protocol.DEFAULT_SUBSCRIBE_ENDPOINT
        )
    return command, subscribe


class Call:
    """A request in flight, from ``Client.start``: read its progress, cancel it, get its result."""

    def __init__(self, client: Client, state: CallState) -> None:
        self._client = client
        self._state = state

    @property
    def msg_id(self) -> str:
        """The request's message id (appears in the actor's and broker's logs)."""
        return self._state.msg_id

    @property
    def done(self) -> bool:
        """True once a result or error has arrived."""
        return self._state.done

    def updates(self, timeout: float | None = None) -> Iterator[Any]:
        """Yield progress updates as they arrive, until the call ends (then call ``result``)."""
        state = self._state
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            while state.progress:
                yield state.progress.pop(0)
            if state.done:
                return
            limit = state.deadline if end is None else min(end, state.deadline)
            self._client._pump_once(limit, state)
            if end is not None and time.monotonic() >= end and not state.progress:
                return

    def cancel(self) -> None:
        """Ask the actor to stop this command; ``result()`` then raises ``Cancelled``."""
        if not self._state.done:
            self._client._send(protocol.encode_cancel(self._state.msg_id))

    def result(self) -> Any:
        """Wait for the end of the call; return its result or raise its typed error."""
        state = self._state
        while not state.done:
            self._client._pump_once(state.deadline, state)
        return state.outcome()


class Subscription:
    """An iterator of events whose topic starts with one of the prefixes; detects gaps.

    Each event is a ``TrackedEvent``; its ``missed`` says how many events of that topic from that
    publisher were lost just before it. ``missed_total`` sums them.
    """

    def __init__(self, client: Client, prefixes: tuple[str, ...], timeout: float | None) -> None:
        self._client = client
        self._timeout = timeout
        self._tracker = GapTracker()
        self.prefixes = prefixes
        sock = client._ctx.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 100_000
        for prefix in prefixes or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        sock.connect(client.subscribe_endpoint)
        self._sock = sock

    @property
    def missed_total(self) -> int:
        """Events detected as lost since the subscription began."""
        return self._tracker.missed_total

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Return once the broker is forwarding to this subscription (subscriptions propagate
        asynchronously in ZeroMQ); raises DeadlineExceeded after ``timeout``."""
        token = f"_probe.{protocol.new_id_prefix()}"
        self._sock.setsockopt(zmq.SUBSCRIBE, token.encode())
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                self._client.call(
                    protocol.BROKER_SERVICE,
                    "probe",
                    topic=token,
                    timeout=max(0.1, end - time.monotonic()),
                )
                if self._sock.poll(100):
                    frame = self._sock.recv()
                    if frame.startswith(token.encode()):
                        return
                    self._pushback = frame
                    return
            raise DeadlineExceeded(f"subscription to {self.prefixes} not active within {timeout} s")
        finally:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, token.encode())

    _pushback: bytes | None = None

    def next(self, timeout: float | None = None) -> TrackedEvent | None:
        """Return the next event, or None if none arrives within ``timeout`` (None: the
        subscription's own timeout, and if that is None too, wait forever)."""
        sock = self._sock
        while True:
            if self._pushback is not None:
                frame, self._pushback = self._pushback, None
            else:
                try:
                    frame = sock.recv(
                        zmq.NOBLOCK
                    )  # no poll() while events are queued: the hot path
                except zmq.Again:
                    limit = self._timeout if timeout is None else timeout
                    if limit is not None and not sock.poll(limit * 1000):
                        return None
                    frame = sock.recv()
            event = self._tracker.decode(frame)
            if event is not None:
                return event

    def __iter__(self) -> Iterator[TrackedEvent]:
        """Yield events until none arrives within the subscription's timeout (None: never end)."""
        # The subscriber's hot path: a blocking recv bounded by RCVTIMEO, like a bare SUB loop.
        sock = self._sock
        decode = self._tracker.decode
        sock.rcvtimeo = -1 if self._timeout is None else max(1, int(self._timeout * 1000))
        again = zmq.Again
        try:
            while True:
                if self._pushback is not None:
                    frame, self._pushback = self._pushback, None
                else:
                    try:
                        frame = sock.recv()
                    except again:
                        return
                event = decode(frame)
                if event is not None:
                    yield event
        finally:
            sock.rcvtimeo = -1

    def close(self) -> None:
        """Stop receiving."""
        self._sock.close(linger=0)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A connection to a linebus broker.

    Args:
        endpoint: Broker command endpoint; default ``LINEBUS_ENDPOINT`` or ``tcp://127.0.0.1:7750``.
        subscribe_endpoint: Where events are read; default ``LINEBUS_SUBSCRIBE`` or command port + 2.
        timeout: Default deadline of a call, in seconds.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        subscribe_endpoint: str | None = None,
        timeout: float = 10.0,
        ctx: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint, self.subscribe_endpoint = default_endpoints(endpoint, subscribe_endpoint)
        self._ctx = ctx or zmq.Context.instance()
        self._core = CallCore(timeout)
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 100_000
        # Never queue requests for an absent broker: a request delivered after its caller gave
        # up could still run on a device. Sends wait (with a deadline) for a live connection.
        sock.immediate = 1
        sock.connect(self.endpoint)
        self._sock = sock
        self._closed = False

    # --- calls ------------------------------------------------------------------------------

    def call(
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
        """Call ``command`` on ``service`` and return its result.

        Arguments are given as keywords, or as ``args`` when a name clashes with these parameters.

        Raises:
            BusError: the typed error of the failure (``UnknownService``, ``InvalidArguments``,
                ``DeadlineExceeded``, ``Unavailable``, ``DeviceFault``...).
        """
        state = self._start(service, command, args, kwargs, timeout, progress)
        while not state.done:
            self._pump_once(state.deadline, state)
        return state.outcome()

    def start(
        self,
        service: str,
        command: str,
        /,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Call:
        """Send a request and return at once with a ``Call`` to follow, cancel or wait on."""
        return Call(self, self._start(service, command, args, kwargs, timeout, None))

    def _start(
        self,
        service: str,
        command: str,
        args: dict[str, Any] | None,
        kwargs: dict[str, Any],
        timeout: float | None,
        progress: ProgressCallback | None,
    ) -> CallState:
        if self._closed:
            raise Unavailable("client is closed")
        merged = {**args, **kwargs} if args else kwargs
        state, frames = self._core.request(service, command, merged, timeout, progress)
        self._send(frames, state)
        return state

    def _send(self, frames: list[Any], state: CallState | None = None) -> None:
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=len(frames) == 1)
            return
        except zmq.Again:
            pass
        # Not connected (yet): wait for the connection until the call's deadline.
        deadline = (
            state.deadline if state is not None else time.monotonic() + self._core.default_timeout_s
        )
        while True:
            remaining = deadline - time.monotonic()
            if remaining > 0 and self._sock.poll(remaining * 1000, zmq.POLLOUT):
                try:
                    self._sock.send_multipart(frames, zmq.NOBLOCK, copy=len(frames) == 1)
                    return
                except zmq.Again:
                    continue
            if state is not None:
                self._core.expire(state, self.endpoint, unsent=True)
                if state.error is not None:
                    raise state.error
            raise BrokerUnreachable(
                f"no connection to the broker at {self.endpoint}",
                details={"endpoint": self.endpoint},
            )

    def _pump_once(self, limit: float, state: CallState) -> None:
        """Wait for one message (until ``limit`` at most) and dispatch it to whichever call owns
        it; fail ``state`` if its own deadline has passed meanwhile."""
        remaining = limit - time.monotonic()
        if remaining <= 0 or not self._sock.poll(remaining * 1000):
            # Only the call's deadline ends it: a shorter limit (updates' timeout) does not.
            if time.monotonic() >= state.deadline:
                self._core.expire(state, self.endpoint)
            return
        self._core.dispatch(self._sock.recv_multipart())

    # --- introspection ----------------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask the broker for a pong; raises ``BrokerUnreachable`` if it does not answer."""
        result: dict[str, Any] = self.call(protocol.BROKER_SERVICE, "ping", timeout=timeout)
        return result

    def services(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every service the broker has seen: name, kind, state (up/down), since, pid, host."""
        result: list[dict[str, Any]] = self.call(
            protocol.BROKER_SERVICE, "services", timeout=timeout
        )
        return result

    def describe(self, service: str, timeout: float | None = None) -> dict[str, Any]:
        """A service's commands with their arguments and docs, as it declared them."""
        result: dict[str, Any] = self.call(
            protocol.BROKER_SERVICE, "describe", service=service, timeout=timeout
        )
        return result

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """The broker's routing counters and drops by reason."""
        result: dict[str, Any] = self.call(protocol.BROKER_SERVICE, "stats", timeout=timeout)
        return result

    # --- events -----------------------------------------------------------------------------

    def subscribe(self, *prefixes: str, timeout: float | None = None) -> Subscription:
        """Subscribe to events whose topic starts with any of ``prefixes`` (all, if none).

        Iteration ends when no event arrives within ``timeout`` (None: never).
        """
        return Subscription(self, prefixes, timeout)

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Fail calls still pending and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._core.fail_all(lambda s: Unavailable(f"{s.service}.{s.command}: client closed"))
        self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
