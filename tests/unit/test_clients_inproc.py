"""The Python clients (``bus.client.Client`` and ``bus.aio.AsyncClient``) in-process, against a
fake line: a thread serving a ROUTER and an XPUB over ``inproc://`` with scripted answers.

The fake shares the client's context (the sync client's ``zmq.Context.instance()``, or the
asyncio one's, shadowed) so both sides talk over ``inproc://``; the tests of an absent broker use
a loopback TCP port nobody listens on (an inproc connect before the bind would queue the request).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import zmq
import zmq.asyncio

from bus import protocol
from bus.aio import AsyncClient
from bus.client import Client, default_endpoints
from bus.errors import BrokerUnreachable, Cancelled, DeadlineExceeded, DeviceFault, Unavailable
from bus.protocol import Kind
from bus.testing import async_wait_until, free_port, wait_until

WAIT_S = 3.0
_lines = itertools.count(1)


class FakeLine(threading.Thread):
    """A broker and one service, ``svc``, answering from a script (see ``_serve``)."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        super().__init__(daemon=True)
        n = next(_lines)
        self.command = f"inproc://clients-{n}-cmd"
        self.subscribe = f"inproc://clients-{n}-sub"
        self._ctx = ctx
        self._ready = threading.Event()
        self._halt = threading.Event()
        self.held: dict[str, bytes] = {}  # msg_id -> caller of the requests left to a CANCEL
        self._seq: dict[str, int] = {}
        self.cancelled: list[str] = []

    def __enter__(self) -> FakeLine:
        self.start()
        assert self._ready.wait(WAIT_S), "the fake line did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(WAIT_S)

    def run(self) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        xpub = self._ctx.socket(zmq.XPUB)
        try:
            router.bind(self.command)
            xpub.bind(self.subscribe)
            self._ready.set()
            while not self._halt.is_set():
                while xpub.poll(0):
                    xpub.recv()  # subscriptions: nothing to do with them
                if router.poll(10):
                    ident, *frames = router.recv_multipart()
                    self._handle(router, xpub, ident, protocol.decode(frames))
        finally:
            router.close(linger=0)
            xpub.close(linger=0)

    def _handle(
        self, router: zmq.Socket[Any], xpub: zmq.Socket[Any], ident: bytes, msg: protocol.Message
    ) -> None:
        if msg.kind is Kind.CANCEL:
            self.cancelled.append(msg.msg_id)
            caller = self.held.pop(msg.msg_id, None)
            if caller is not None:
                router.send_multipart(
                    [caller, *protocol.encode_error(msg.msg_id, "cancelled", "cancelled by caller")]
                )
        elif msg.kind is Kind.REQUEST:
            for frames in self._serve(xpub, ident, msg):
                router.send_multipart([ident, *frames])

    def _serve(
        self, xpub: zmq.Socket[Any], ident: bytes, msg: protocol.Message
    ) -> Iterator[list[Any]]:
        args = msg.value() or {}
        msg_id = msg.msg_id
        if msg.service == protocol.BROKER_SERVICE:
            if msg.command == "probe":
                self._publish(xpub, args["topic"], None)
            yield protocol.encode_reply(msg_id, {"command": msg.command, **args})
        elif msg.command == "echo":
            yield protocol.encode_reply(msg_id, args.get("value"))
        elif msg.command == "steps":
            for i in range(args["n"]):
                yield protocol.encode_progress(msg_id, {"done": i + 1})
            yield protocol.encode_reply(msg_id, args["n"])
        elif msg.command == "fail":
            yield protocol.encode_error(msg_id, "device_fault", "jammed", {"device_code": "E7"})
        elif msg.command == "hold":
            self.held[msg_id] = ident  # answered by the CANCEL
        elif msg.command == "silent":
            pass
        elif msg.command == "emit":
            for i in range(args["count"]):
                if i not in args.get("skip", ()):
                    self._publish(xpub, args["topic"], i)
                else:
                    self._seq[args["topic"]] = self._seq.get(args["topic"], 0) + 1
            yield protocol.encode_reply(msg_id, args["count"])
        else:
            yield protocol.encode_error(msg_id, "unknown_command", msg.command)

    def _publish(self, xpub: zmq.Socket[Any], topic: str, data: Any) -> None:
        seq = self._seq[topic] = self._seq.get(topic, 0) + 1
        xpub.send(protocol.encode_event(topic, "svc", 1, seq, time.time(), data))


# --- the synchronous client -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_line() -> Iterator[FakeLine]:
    with FakeLine(zmq.Context.instance()) as line:
        yield line


@pytest.fixture
def client(sync_line: FakeLine) -> Iterator[Client]:
    with Client(sync_line.command, subscribe_endpoint=sync_line.subscribe, timeout=WAIT_S) as c:
        yield c


class TestClientCalls:
    def test_call(self, client: Client) -> None:
        """call returns the result; arguments come as keywords or as ``args``."""
        assert client.call("svc", "echo", value=[1, "x"]) == [1, "x"]
        assert client.call("svc", "echo", {"value": 1}) == 1

    def test_progress(self, client: Client) -> None:
        """Progress goes to the callback of call, or through the updates of start."""
        seen: list[Any] = []
        assert client.call("svc", "steps", n=2, progress=seen.append) == 2
        assert seen == [{"done": 1}, {"done": 2}]
        call = client.start("svc", "steps", n=3)
        assert call.msg_id
        assert list(call.updates()) == [{"done": 1}, {"done": 2}, {"done": 3}]
        assert call.done and call.result() == 3

    def test_updates_with_a_timeout(self, client: Client) -> None:
        """updates(timeout) returns when no update comes in time; the call goes on."""
        call = client.start("svc", "hold")
        assert list(call.updates(timeout=0.02)) == []
        call.cancel()
        with pytest.raises(Cancelled):
            call.result()
        call.cancel()  # already over: nothing is sent

    def test_typed_error(self, client: Client) -> None:
        """An ERROR is raised as its typed exception."""
        with pytest.raises(DeviceFault, match=r"svc\.fail: jammed"):
            client.call("svc", "fail")

    def test_introspection(self, client: Client) -> None:
        """ping, services, describe and stats ask the broker."""
        assert client.ping()["command"] == "ping"
        assert client.services() == {"command": "services"}
        assert client.describe("svc") == {"command": "describe", "service": "svc"}
        assert client.stats()["command"] == "stats"

    def test_deadline(self, client: Client) -> None:
        """A call that gets no answer ends deadline_exceeded after its timeout."""
        client.ping()
        with pytest.raises(DeadlineExceeded, match="no answer before the deadline"):
            client.call("svc", "silent", timeout=0.05)

    def test_close_fails_pending_calls(self, sync_line: FakeLine) -> None:
        """Closing fails calls in flight; a closed client refuses new ones."""
        client = Client(sync_line.command, subscribe_endpoint=sync_line.subscribe)
        call = client.start("svc", "hold")
        client.close()
        client.close()
        with pytest.raises(Unavailable, match="client closed"):
            call.result()
        with pytest.raises(Unavailable, match="client is closed"):
            client.call("svc", "echo")

    def test_no_broker(self) -> None:
        """With nothing listening, a call fails broker_unreachable at its deadline."""
        with (
            Client(f"tcp://127.0.0.1:{free_port()}", timeout=0.05) as client,
            pytest.raises(BrokerUnreachable, match="no answer from the broker"),
        ):
            client.call("svc", "echo")


class TestClientSubscriptions:
    def test_events_and_gaps(self, client: Client) -> None:
        """A ready subscription gets the events of its prefix, with lost ones counted."""
        with client.subscribe("svc.a", timeout=0.05) as sub:
            sub.wait_ready()
            client.call("svc", "emit", topic="svc.a", count=4, skip=[2])
            client.call("svc", "emit", topic="svc.other", count=1)
            events = [sub.next(timeout=WAIT_S) for _ in range(3)]
            assert [(e.topic, e.data, e.missed) for e in events if e] == [
                ("svc.a", 0, 0),
                ("svc.a", 1, 0),
                ("svc.a", 3, 1),
            ]
            assert sub.missed_total == 1
            assert sub.next(timeout=0.01) is None
            client.call("svc", "emit", topic="svc.a", count=2)
            assert [e.data for e in sub] == [0, 1]  # iteration ends after the timeout

    def test_not_ready_in_time(self, sync_line: FakeLine) -> None:
        """wait_ready gives up with deadline_exceeded when the probe never comes back."""
        nowhere = f"inproc://nowhere-{next(_lines)}"
        with (
            Client(sync_line.command, subscribe_endpoint=nowhere) as client,
            client.subscribe("svc.b") as sub,
            pytest.raises(DeadlineExceeded, match="not active"),
        ):
            sub.wait_ready(timeout=0.05)


class TestDefaultEndpoints:
    def test_subscribe_endpoint_follows_the_command_port(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Given only a TCP command endpoint, events are read from its port + 2."""
        monkeypatch.delenv("LINEBUS_ENDPOINT", raising=False)
        monkeypatch.delenv("LINEBUS_SUBSCRIBE", raising=False)
        assert default_endpoints("tcp://h:9000") == ("tcp://h:9000", "tcp://h:9002")
        assert default_endpoints("ipc:///x") == (
            "ipc:///x",
            protocol.DEFAULT_SUBSCRIBE_ENDPOINT,
        )
        assert default_endpoints() == (
            protocol.DEFAULT_COMMAND_ENDPOINT,
            protocol.DEFAULT_SUBSCRIBE_ENDPOINT,
        )

    def test_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """LINEBUS_ENDPOINT and LINEBUS_SUBSCRIBE are the defaults."""
        monkeypatch.setenv("LINEBUS_ENDPOINT", "tcp://a:1")
        monkeypatch.setenv("LINEBUS_SUBSCRIBE", "tcp://b:2")
        assert default_endpoints() == ("tcp://a:1", "tcp://b:2")


# --- the asyncio client ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def async_line() -> Iterator[FakeLine]:
    shared = zmq.Context.shadow(zmq.asyncio.Context.instance().underlying)
    with FakeLine(shared) as line:
        yield line


@pytest.fixture
async def aclient(async_line: FakeLine) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        async_line.command, subscribe_endpoint=async_line.subscribe, timeout=WAIT_S
    ) as c:
        yield c


class TestAsyncClient:
    async def test_call_and_progress(self, aclient: AsyncClient) -> None:
        """call returns the result; progress reaches the callback, or start's updates."""
        assert await aclient.call("svc", "echo", {"value": 1}) == 1
        seen: list[Any] = []
        assert await aclient.call("svc", "steps", n=2, progress=seen.append) == 2
        assert seen == [{"done": 1}, {"done": 2}]
        call = await aclient.start("svc", "steps", n=3)
        assert call.msg_id
        assert [u async for u in call.updates()] == [{"done": 1}, {"done": 2}, {"done": 3}]
        assert await call == 3

    async def test_typed_error_and_introspection(self, aclient: AsyncClient) -> None:
        """Errors are typed; the broker's introspection commands answer."""
        with pytest.raises(DeviceFault):
            await aclient.call("svc", "fail")
        assert (await aclient.ping())["command"] == "ping"
        assert await aclient.services() == {"command": "services"}
        assert (await aclient.describe("svc"))["service"] == "svc"
        assert (await aclient.stats())["command"] == "stats"

    async def test_cancel(self, aclient: AsyncClient, async_line: FakeLine) -> None:
        """AsyncCall.cancel asks for a cancel; cancelling the awaiting task does too."""
        call = await aclient.start("svc", "hold")
        await call.cancel()
        with pytest.raises(Cancelled):
            await call.result()
        await call.cancel()  # over: nothing sent
        task = asyncio.ensure_future(aclient.call("svc", "hold"))
        await async_wait_until(lambda: async_line.held, WAIT_S, "the request to be held")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await async_wait_until(
            lambda: len(async_line.cancelled) == 2, WAIT_S, "the task's cancel to arrive"
        )

    async def test_deadline(self, aclient: AsyncClient) -> None:
        """A call that gets no answer ends deadline_exceeded after its timeout."""
        await aclient.ping()
        with pytest.raises(DeadlineExceeded):
            await aclient.call("svc", "silent", timeout=0.05)

    async def test_each_call_ends_at_its_own_deadline(self, aclient: AsyncClient) -> None:
        """One timer serves every call's deadline: a short call made while a long one waits
        still ends at its own deadline, and so does one made after that timer fired."""
        await aclient.ping()
        long = await aclient.start("svc", "silent", timeout=60)
        long_wait = asyncio.ensure_future(long.result())
        await asyncio.sleep(0)  # one pass of the loop: the long call's wait has begun
        for timeout in (0.05, 0.2):
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await aclient.call("svc", "silent", timeout=timeout)
            # Deadline plus the client's grace; far below the long call's 60 s.
            assert timeout <= time.monotonic() - started < timeout + 5
        assert not long_wait.done()
        long_wait.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long_wait

    async def test_close_fails_pending_calls(self, async_line: FakeLine) -> None:
        """Closing fails calls in flight with cancelled."""
        client = AsyncClient(async_line.command, subscribe_endpoint=async_line.subscribe)
        client.open()
        client.open()  # already open
        call = await client.start("svc", "hold")
        await client.close()
        with pytest.raises(Cancelled, match="client closed"):
            await call
        with pytest.raises(Unavailable, match="not open"):
            await client.call("svc", "echo")

    async def test_no_broker(self) -> None:
        """With nothing listening, a call fails broker_unreachable."""
        async with AsyncClient(f"tcp://127.0.0.1:{free_port()}", timeout=0.05) as client:
            with pytest.raises(BrokerUnreachable):
                await client.call("svc", "echo")

    async def test_subscription(self, aclient: AsyncClient) -> None:
        """A ready subscription gets its events, with gaps counted."""
        sub = aclient.subscribe("svc.c")
        try:
            await sub.wait_ready()
            await aclient.call("svc", "emit", topic="svc.c", count=3, skip=[1])
            first = await sub.next(timeout=WAIT_S)
            second = await anext(aiter(sub))
            assert first is not None and (first.data, first.missed) == (0, 0)
            assert (second.data, second.missed) == (2, 1)
            assert sub.missed_total == 1
            assert await sub.next(timeout=0.01) is None
        finally:
            sub.close()

    async def test_subscription_not_ready_in_time(self, async_line: FakeLine) -> None:
        """wait_ready gives up with deadline_exceeded when the probe never comes back."""
        nowhere = f"inproc://nowhere-{next(_lines)}"
        async with AsyncClient(async_line.command, subscribe_endpoint=nowhere) as client:
            sub = client.subscribe("svc.d")
            try:
                with pytest.raises(DeadlineExceeded, match="not active"):
                    await sub.wait_ready(timeout=0.05)
            finally:
                sub.close()


class RestartingRouter:
    """A ROUTER on a loopback TCP port that takes one request, then closes and binds again on
    the same port: a broker restart as the client's connection sees it."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.ctx = ctx
        self.port = free_port()
        self.router = self._bind()

    def _bind(self) -> zmq.Socket[bytes]:
        """Bind the port, once the closed socket's I/O thread has let it go (bounded wait)."""
        router = self.ctx.socket(zmq.ROUTER)
        router.linger = 0

        def bound() -> bool:
            try:
                router.bind(f"tcp://127.0.0.1:{self.port}")
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE:
                    raise
                return False
            return True

        try:
            wait_until(bound, WAIT_S, "the port to be free again", interval=0.01)
        except BaseException:
            router.close(linger=0)
            raise
        return router

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def next_request(self) -> list[bytes]:
        """The next request."""
        assert self.router.poll(WAIT_S * 1000), "no request reached the router"
        return self.router.recv_multipart()

    def restart_after_a_request(self) -> None:
        self.next_request()
        self.restart()

    def restart(self) -> None:
        self.router.close(linger=0)
        self.router = self._bind()

    def close(self) -> None:
        self.router.close(linger=0)


class TestBrokerRestartMidCall:
    """A call in flight when the broker's connection closes fails with ``unavailable`` as soon
    as the client is connected again, not with ``deadline_exceeded`` at its deadline."""

    def test_sync(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        broker = RestartingRouter(ctx)
        try:
            with Client(broker.endpoint, timeout=30, ctx=ctx) as client:
                call = client.start("echo1", "add", a=1)
                broker.restart_after_a_request()
                started = time.monotonic()
                with pytest.raises(Unavailable, match="closed before the answer") as info:
                    call.result()
                assert info.value.retryable
                assert time.monotonic() - started < WAIT_S
        finally:
            broker.close()
            ctx.term()

    async def test_async(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        broker = RestartingRouter(ctx)
        try:
            async with AsyncClient(broker.endpoint, timeout=30) as client:
                call = await client.start("echo1", "add", a=1)
                await asyncio.to_thread(broker.restart_after_a_request)
                with pytest.raises(Unavailable, match="closed before the answer"):
                    await asyncio.wait_for(call.result(), WAIT_S)
        finally:
            broker.close()
            ctx.term()
