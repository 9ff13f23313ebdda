"""The actor runtime in-process: an ``Actor`` serving on this test's asyncio loop against a fake
broker made of raw ZeroMQ sockets (a ROUTER for commands, an XSUB for events).

The fake broker shares the actor's context (``zmq.Context.instance()``) so both talk over
``inproc://``, except for the broker-restart test: an inproc connection does not come back when
its bound peer is replaced, so that test uses loopback TCP (``bus.testing.free_port``). Every wait
is bounded; a test that would hang fails with the message it was waiting for instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio
from structlog.testing import capture_logs

from bus import _publisher, protocol
from bus.actor import Actor, ActorSettings, CommandContext, command
from bus.errors import DeviceFault, RemoteError
from bus.protocol import Kind
from bus.testing import async_wait_until, free_port

SERVICE = "probe1"
WAIT_S = 3.0  # the bound on every wait below; the tests themselves take milliseconds

_endpoints = itertools.count(1)


class Probe(Actor):
    """A device-less actor whose commands let a test steer every path of the runtime."""

    kind = "probe"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.release = asyncio.Event()
        self.ran: list[str] = []
        self.started = False
        self.stopped = False

    async def on_start(self) -> None:
        if self.options.get("fail_on_start"):
            raise RuntimeError("no device")
        self.started = True

    async def on_stop(self) -> None:
        self.stopped = True
        if self.options.get("fail_on_stop"):
            raise RuntimeError("the device would not close")

    def describe_extra(self) -> dict[str, Any]:
        return {"model": "P-1"}

    @command
    def add(self, a: int, b: int = 0) -> int:
        """Add two integers."""
        self.ran.append(f"add {a}")
        return a + b

    @command
    def fail(self) -> None:
        """Raise a device fault."""
        raise DeviceFault("jammed", device_code="E7")

    @command
    def relay(self) -> None:
        """Let through an error of a code this version does not know (from a service called)."""
        raise RemoteError("on fire", remote_code="printer_on_fire", details={"tray": 2})

    @command
    def crash(self) -> None:
        """Raise an unexpected exception."""
        raise RuntimeError("simulated bug")

    @command
    def opaque(self) -> object:
        """Return something msgpack cannot encode."""
        return object()

    @command
    def size(self, data: bytes) -> int:
        """The length of ``data``."""
        return len(data)

    @command
    def blob(self, size: int) -> bytes:
        """``size`` bytes."""
        return b"x" * size

    @command
    async def gate(self, name: str, ctx: CommandContext) -> str:
        """Report progress on entry, then wait until the test sets ``release``."""
        ctx.progress({"entered": name})
        await self.release.wait()
        self.ran.append(name)
        return name

    @command
    async def hang(self) -> None:
        """Never finish (until cancelled)."""
        await asyncio.Event().wait()

    @command
    async def afail(self, crash: bool = False) -> None:
        """Fail from a coroutine: a device fault, or a bug."""
        await asyncio.sleep(0)
        if crash:
            raise RuntimeError("simulated async bug")
        raise DeviceFault("async jam")

    @command
    async def transfer(self, total: int, ctx: CommandContext) -> float:
        """Report a byte transfer through ``byte_progress``; return the seconds left."""
        report = ctx.byte_progress()
        for done in (0, 1, 2, *range(total // 4, total + 1, total // 4)):
            report(done, total)  # 1 and 2 are still 0 %: not reported
        return ctx.remaining()

    @command(concurrent=True)
    async def side(self, value: int) -> int:
        """Run beside the one-at-a-time commands."""
        await asyncio.sleep(0)
        return value

    @command(name="Echo", concurrent=True)
    def echo_fast(self, value: Any = None) -> Any:
        """Return ``value`` (a wire name that differs from the method name)."""
        return value

    @command(privileged=True)
    def wipe(self) -> None:
        """Change the device (a privileged command)."""
        self.ran.append("wipe")

    @command
    def options_of(self, **extra: Any) -> dict[str, Any]:
        """Accept any argument."""
        return extra


# --- the fake broker ----------------------------------------------------------------------------


@dataclass
class Received:
    """One message from the actor, decoded by ``bus.protocol``."""

    kind: Kind
    message: protocol.Message


@dataclass
class Answer:
    """The outcome of one request: the progress it reported and its reply or error."""

    kind: Kind
    value: Any = None
    code: str = ""
    text: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    progress: list[Any] = field(default_factory=list)


class FakeBroker:
    """The broker's side of the actor's two connections, as raw sockets."""

    def __init__(self, ctx: zmq.asyncio.Context, command: str, publish: str) -> None:
        self.command, self.publish = command, publish
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        _bind(self.router, command)
        self.xsub = ctx.socket(zmq.XSUB)
        self.xsub.linger = 0
        self.xsub.bind(publish)
        self.identity = b""
        self.control: list[Received] = []  # READY, HEARTBEAT, DISCONNECT, in arrival order
        self.answers: dict[str, list[Received]] = defaultdict(list)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.router.close()
        self.xsub.close()

    # receiving

    async def _receive(self, until: float, waiting_for: str) -> None:
        remaining = until - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {waiting_for} from the actor within {WAIT_S} s")
        try:
            frames = await asyncio.wait_for(self.router.recv_multipart(), remaining)
        except TimeoutError:
            raise AssertionError(f"no {waiting_for} from the actor within {WAIT_S} s") from None
        self.identity = frames[0]
        message = protocol.decode(frames[1:])
        received = Received(message.kind, message)
        if message.kind in (Kind.PROGRESS, Kind.REPLY, Kind.ERROR):
            self.answers[message.msg_id].append(received)
        else:
            self.control.append(received)

    async def expect(
        self, kind: Kind, *, skip: frozenset[Kind] = frozenset({Kind.HEARTBEAT})
    ) -> Received:
        """The next control message, which must be of ``kind`` once those of a ``skip`` kind
        are passed over."""
        until = time.monotonic() + WAIT_S
        while True:
            while self.control:
                received = self.control.pop(0)
                if received.kind is kind:
                    return received
                if received.kind not in skip:
                    raise AssertionError(f"expected {kind.name}, got {received.kind.name}")
            await self._receive(until, kind.name)

    async def answer(self, msg_id: str) -> Answer:
        """Wait for the REPLY or ERROR of ``msg_id``; with the PROGRESS that came before."""
        until = time.monotonic() + WAIT_S
        while True:
            messages = self.answers[msg_id]
            if messages and messages[-1].kind is not Kind.PROGRESS:
                del self.answers[msg_id]
                progress = [m.message.value() for m in messages[:-1]]
                final = messages[-1].message
                if final.kind is Kind.REPLY:
                    return Answer(Kind.REPLY, value=final.value(), progress=progress)
                return Answer(
                    Kind.ERROR,
                    code=final.code,
                    text=final.text,
                    details=final.details or {},
                    progress=progress,
                )
            await self._receive(until, f"answer to {msg_id}")

    async def progress(self, msg_id: str) -> Any:
        """Wait for the next PROGRESS of ``msg_id`` and return its data."""
        until = time.monotonic() + WAIT_S
        while True:
            messages = self.answers[msg_id]
            if messages and messages[0].kind is Kind.PROGRESS:
                return messages.pop(0).message.value()
            await self._receive(until, f"progress of {msg_id}")

    # sending

    async def send(self, *frames: Any) -> None:
        await self.router.send_multipart([self.identity, *frames])

    async def request(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        ttl: float | None = 5.0,
        msg_id: str | None = None,
    ) -> str:
        msg_id = msg_id or f"t-{next(self._ids)}"
        await self.send(*protocol.encode_request(msg_id, SERVICE, command, ttl, args or {}))
        return msg_id

    async def call(
        self, command: str, args: dict[str, Any] | None = None, *, ttl: float | None = 5.0
    ) -> Answer:
        return await self.answer(await self.request(command, args, ttl=ttl))

    async def cancel(self, msg_id: str) -> None:
        await self.send(*protocol.encode_cancel(msg_id))

    async def disconnect(self, reason: str) -> None:
        await self.send(*protocol.encode_disconnect(reason))

    async def heartbeat(self) -> None:
        await self.send(*protocol.encode_heartbeat())

    # events

    async def subscribe(self, prefix: bytes) -> None:
        await self.xsub.send(b"\x01" + prefix)

    async def unsubscribe(self, prefix: bytes) -> None:
        await self.xsub.send(b"\x00" + prefix)

    async def event(self) -> protocol.Event:
        """The next event that is not a probe of ``heard``."""
        while True:
            try:
                frame = await asyncio.wait_for(self.xsub.recv(), WAIT_S)
            except TimeoutError:
                raise AssertionError(f"no event within {WAIT_S} s") from None
            event = protocol.decode_event(frame)
            if event.data != "probe":
                return event

    def event_waiting(self) -> bool:
        events = self.xsub.getsockopt(zmq.EVENTS)
        return isinstance(events, int) and bool(events & zmq.POLLIN)


def header(msg_id: Any, command: Any, args: bytes) -> bytes:
    """A REQUEST header frame built by hand, so that it can be malformed."""
    return msgpack.packb([1, 1, msg_id, SERVICE, command, 5.0, args])


def _bind(sock: zmq.Socket[Any], endpoint: str) -> None:
    """Bind, retrying while a just-closed socket still holds a TCP port."""
    until = time.monotonic() + WAIT_S
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > until:
                raise
            time.sleep(0.01)


async def until(predicate: Callable[[], object], what: str) -> None:
    """``async_wait_until`` with this file's bound and a short pause."""
    await async_wait_until(predicate, WAIT_S, what, interval=0.002)


@dataclass
class Line:
    """One actor serving against one fake broker."""

    broker: FakeBroker
    actor: Probe
    stop: asyncio.Event
    task: asyncio.Task[None]
    ready: Received

    async def stopped(self) -> None:
        """Ask for an orderly shutdown and wait for ``serve`` to return."""
        self.stop.set()
        await asyncio.wait_for(self.task, WAIT_S)


Starter = Callable[..., Awaitable[Line]]


@pytest.fixture
def actx() -> Iterator[zmq.asyncio.Context]:
    """An asyncio view of the actor's context, so the fake broker can use inproc://."""
    yield zmq.asyncio.Context.shadow(zmq.Context.instance())


@pytest.fixture
async def start(actx: zmq.asyncio.Context) -> AsyncIterator[Starter]:
    """Start a Probe against a fresh fake broker: ``await start(**settings)``."""
    lines: list[Line] = []
    brokers: list[FakeBroker] = []

    async def starter(
        *, options: dict[str, Any] | None = None, command: str | None = None, **overrides: Any
    ) -> Line:
        n = next(_endpoints)
        command = command or f"inproc://probe-{os.getpid()}-{n}-cmd"
        broker = FakeBroker(actx, command, f"inproc://probe-{os.getpid()}-{n}-pub")
        brokers.append(broker)
        settings = ActorSettings(command, broker.publish, **overrides)
        actor = Probe(SERVICE, options)
        stop = asyncio.Event()
        task = asyncio.create_task(actor.serve(settings, stop=stop))
        ready = await broker.expect(Kind.READY)
        line = Line(broker, actor, stop, task, ready)
        lines.append(line)
        return line

    yield starter
    for line in lines:
        if not line.task.done():
            await line.stopped()
    for broker in brokers:
        broker.close()


@pytest.fixture
async def line(start: Starter) -> Line:
    """A Probe with the default settings, registered."""
    return await start()


# --- registration -----------------------------------------------------------------------------


class TestRegistration:
    async def test_ready_carries_the_description(self, line: Line) -> None:
        """READY names the service and carries kind, pid, host, heartbeat and every command."""
        ready = line.ready.message
        assert ready.service == SERVICE
        info = ready.info or {}
        assert (info["kind"], info["pid"], info["host"]) == (
            "probe",
            os.getpid(),
            socket.gethostname(),
        )
        assert info["heartbeat_s"] == 1.0
        assert info["service"] == SERVICE
        assert info["doc"].startswith("A device-less actor")
        assert info["model"] == "P-1"
        assert {"ping", "describe", "add", "gate", "Echo", "side"} <= set(info["commands"])
        assert info["commands"]["side"]["concurrent"] is True
        assert info["commands"]["gate"]["progress"] is True
        assert line.actor.started

    async def test_ready_lists_the_privileged_commands(self, line: Line) -> None:
        """READY's info names the privileged commands, and each command says whether it is."""
        info = line.ready.message.info or {}
        assert info["privileged"] == ["wipe"]
        assert info["commands"]["wipe"]["privileged"] is True
        assert info["commands"]["add"]["privileged"] is False

    async def test_on_start_failure_refuses_to_start(self, actx: zmq.asyncio.Context) -> None:
        """An actor whose on_start raises does not register: serve raises the error."""
        actor = Probe(SERVICE, {"fail_on_start": True})
        with pytest.raises(RuntimeError, match="no device"):
            await asyncio.wait_for(actor.serve(ActorSettings("inproc://unused")), WAIT_S)
        assert not actor.started

    async def test_request_stop_before_serving_is_harmless(self) -> None:
        """request_stop on an actor that is not serving does nothing."""
        Probe(SERVICE).request_stop()


# --- requests ---------------------------------------------------------------------------------


class TestRequests:
    async def test_plain_command_answers(self, line: Line) -> None:
        """A plain command runs inline and its result comes back as a REPLY."""
        assert (await line.broker.call("add", {"a": 2, "b": 3})).value == 5
        assert (await line.broker.call("Echo", {"value": [1, "x"]})).value == [1, "x"]
        assert (await line.broker.call("options_of", {"x": 1})).value == {"x": 1}

    async def test_builtin_commands(self, line: Line) -> None:
        """ping and describe answer with the actor's facts."""
        pong = (await line.broker.call("ping")).value
        assert pong == {"service": SERVICE, "kind": "probe", "pid": os.getpid(), "queued": 0}
        described = (await line.broker.call("describe")).value
        assert described["commands"]["add"]["args"][0] == {
            "name": "a",
            "type": "int",
            "required": True,
        }

    async def test_nil_ttl_runs_without_a_local_deadline(self, line: Line) -> None:
        """A request with ttl_s nil runs (the broker owns its deadline)."""
        assert (await line.broker.call("add", {"a": 1}, ttl=None)).value == 1
        assert (await line.broker.call("side", {"value": 4}, ttl=None)).value == 4

    async def test_bulk_argument_and_result(self, line: Line) -> None:
        """Large bytes travel as bulk frames both ways."""
        data = os.urandom(protocol.BULK_THRESHOLD + 10)
        assert (await line.broker.call("size", {"data": data})).value == len(data)
        answer = await line.broker.call("blob", {"size": protocol.BULK_THRESHOLD})
        assert answer.value == b"x" * protocol.BULK_THRESHOLD


class TestInvalidRequests:
    @pytest.mark.parametrize(
        ("args", "details"),
        [
            (
                {"a": 1, "c": 2},
                {"argument": "c", "problem": "unknown", "expected": None, "known": ["a", "b"]},
            ),
            ({"a": "one"}, {"argument": "a", "expected": "int", "problem": "type"}),
            ({"b": 1}, {"argument": "a", "problem": "missing", "expected": "int"}),
            ([1, 2], {"argument": None, "problem": "type", "expected": "map"}),
        ],
    )
    async def test_arguments_are_checked(
        self, line: Line, args: dict[str, Any], details: dict[str, Any]
    ) -> None:
        """A bad argument is answered invalid_arguments naming it; the command does not run."""
        answer = await line.broker.call("add", args)
        assert (answer.code, answer.details) == ("invalid_arguments", details)
        assert line.actor.ran == []

    async def test_unknown_command(self, line: Line) -> None:
        """An unknown command is answered unknown_command with the known ones."""
        answer = await line.broker.call("nope")
        assert answer.code == "unknown_command"
        assert answer.details["command"] == "nope"
        assert "add" in answer.details["known"]

    async def test_arguments_must_be_a_map(self, line: Line) -> None:
        """Arguments that are not a map are invalid_arguments."""
        await line.broker.send(header("t-list", "add", msgpack.packb([1, 2])))
        answer = await line.broker.answer("t-list")
        assert answer.code == "invalid_arguments"

    @pytest.mark.parametrize(
        ("payload", "problem", "text"),
        [
            (b"\xc1", "invalid_byte", "a byte that begins no msgpack value (0xc1)"),
            (b"\x81\xa1a", "truncated", "it ends in the middle of a value"),
            (b"\x80\x80", "trailing_bytes", "bytes left over after the value"),
            (b"\x81\x01\x02", "map_key_not_str", "a map key is not a str (int)"),
            (
                b"\xd6\xff\x00\x00\x00\x01",
                "ext_type",
                "ext type -1 (msgpack timestamp); only type 1 is defined",
            ),
        ],
        ids=["invalid_byte", "truncated", "trailing_bytes", "map_key_not_str", "timestamp"],
    )
    async def test_corrupt_payload(
        self, line: Line, payload: bytes, problem: str, text: str
    ) -> None:
        """Arguments that are not valid msgpack are bad_request (never invalid_arguments, even
        a timestamp, §4), the message naming the command and the problem, the details too."""
        await line.broker.send(header("t-bad", "add", payload))
        answer = await line.broker.answer("t-bad")
        assert (answer.code, answer.text, answer.details) == (
            "bad_request",
            f"arguments of 'add': payload is not valid msgpack: {text}",
            {"reason": "invalid_payload", "problem": problem},
        )

    async def test_malformed_request_with_an_id_is_answered(self, line: Line) -> None:
        """A REQUEST header with a wrong element but a usable id gets the decoder's error."""
        await line.broker.send(header("t-7", 7, b"\x80"))
        answer = await line.broker.answer("t-7")
        assert answer.code == "bad_request"
        assert answer.text == "malformed message: command must be a string, got int"

    async def test_an_error_from_the_broker_is_logged(self, line: Line) -> None:
        """An ERROR the broker sends the actor (it refused the actor's READY or heartbeat; msg_id
        "", §6) is logged with its code and message; the actor goes on serving."""
        with capture_logs() as logs:
            await line.broker.send(
                protocol.encode_error("", "bad_request", "malformed message: x")[0]
            )
            await line.broker.send(msgpack.packb([1, 4, "", "bad_request", "x", None]))
            assert (await line.broker.call("add", {"a": 1})).value == 1
        refused = [entry for entry in logs if entry["event"] == "refused_by_broker"]
        assert [(e["code"], e["message"], e["msg_id"]) for e in refused] == [
            ("bad_request", "malformed message: x", "")
        ]
        assert [e["event"] for e in logs].count("malformed_from_broker") == 1

    async def test_malformed_messages_are_dropped(self, line: Line) -> None:
        """Frames that are not messages, REQUESTs without an id and CANCELs without one are
        logged and dropped; the actor goes on serving."""
        with capture_logs() as logs:
            await line.broker.send(b"\xc1")
            await line.broker.send(header(7, "add", b"\x80"))
            await line.broker.send(msgpack.packb([1, 5]))
            assert (await line.broker.call("add", {"a": 1})).value == 1
        events = [entry["event"] for entry in logs]
        assert events.count("malformed_from_broker") == 2
        assert events.count("malformed_request") == 1


class TestCommandErrors:
    async def test_bus_error_from_a_command(self, line: Line) -> None:
        """A BusError raised by a command reaches the caller with its code and details."""
        answer = await line.broker.call("fail")
        assert (answer.code, answer.text) == ("device_fault", "jammed")
        assert answer.details["device_code"] == "E7"
        assert (await line.broker.call("afail")).code == "device_fault"

    async def test_an_unknown_code_is_relayed_as_it_came(self, line: Line) -> None:
        """A RemoteError let through by a command is answered with the code it arrived with,
        never remote_error (which is only the Python class's name for unknown codes, §10)."""
        answer = await line.broker.call("relay")
        assert (answer.code, answer.text, answer.details) == (
            "printer_on_fire",
            "on fire",
            {"tray": 2},
        )

    async def test_unexpected_exception_is_internal(self, line: Line) -> None:
        """A bug in a command is answered internal (naming the msg_id) and logged."""
        with capture_logs() as logs:
            msg_id = await line.broker.request("crash")
            answer = await line.broker.answer(msg_id)
            assert (await line.broker.call("afail", {"crash": True})).code == "internal"
        assert answer.code == "internal"
        assert msg_id in answer.text
        crashed = [entry for entry in logs if entry["event"] == "command_crashed"]
        assert [entry["command"] for entry in crashed] == ["crash", "afail"]

    async def test_unencodable_result_is_internal(self, line: Line) -> None:
        """A result msgpack cannot encode is answered internal instead of not at all."""
        answer = await line.broker.call("opaque")
        assert answer.code == "internal"
        assert answer.text.startswith("result cannot be encoded")


# --- progress, queueing, concurrency, cancel, deadlines ------------------------------------------


class TestProgressAndQueue:
    async def test_progress_comes_before_the_reply(self, line: Line) -> None:
        """Progress updates reach the caller in order, before the result."""
        answer = await line.broker.call("transfer", {"total": 400})
        assert answer.progress == [
            {"done": 0, "total": 400},
            {"done": 100, "total": 400},
            {"done": 200, "total": 400},
            {"done": 300, "total": 400},
            {"done": 400, "total": 400},
        ]
        assert 4.0 < answer.value <= 5.0  # seconds left of the 5 s ttl

    async def test_one_at_a_time_in_order(self, line: Line) -> None:
        """Commands queue behind the running one and run in order when it ends; concurrent
        commands and ping answer meanwhile, and ping counts the queue."""
        broker, actor = line.broker, line.actor
        first = await broker.request("gate", {"name": "first"})
        assert await broker.progress(first) == {"entered": "first"}
        queued = [
            await broker.request("add", {"a": 1}),
            await broker.request("gate", {"name": "second"}),
            await broker.request("add", {"a": 2}),
        ]
        assert (await broker.call("side", {"value": 9})).value == 9
        assert (await broker.call("ping")).value["queued"] == 3
        assert actor.ran == []
        actor.release.set()
        assert (await broker.answer(first)).value == "first"
        answers = [await broker.answer(msg_id) for msg_id in queued]
        assert [a.value for a in answers] == [1, "second", 2]
        assert actor.ran == ["first", "add 1", "second", "add 2"]

    async def test_full_queue_answers_busy(self, start: Starter) -> None:
        """Past max_queue waiting requests, new ones get busy; the queued ones still run."""
        line = await start(max_queue=2)
        broker = line.broker
        running = await broker.request("gate", {"name": "g"})
        await broker.progress(running)
        waiting = [await broker.request("add", {"a": i}) for i in range(3)]
        busy = await broker.answer(waiting[2])
        assert busy.code == "busy"
        line.actor.release.set()
        assert [(await broker.answer(m)).value for m in [running, *waiting[:2]]] == ["g", 0, 1]


class TestCancel:
    async def test_cancel_a_running_command(self, line: Line) -> None:
        """CANCEL of a running command cancels its task: cancelled, and the queue moves on."""
        broker = line.broker
        running = await broker.request("gate", {"name": "g"})
        await broker.progress(running)
        behind = await broker.request("add", {"a": 5})
        await broker.cancel(running)
        answer = await broker.answer(running)
        assert (answer.code, answer.text) == ("cancelled", "cancelled by the caller")
        assert (await broker.answer(behind)).value == 5

    async def test_cancel_a_queued_command(self, line: Line) -> None:
        """CANCEL of a queued command takes it out of the queue; it never runs."""
        broker, actor = line.broker, line.actor
        running = await broker.request("gate", {"name": "g"})
        await broker.progress(running)
        queued = await broker.request("add", {"a": 1})
        await broker.cancel(queued)
        answer = await broker.answer(queued)
        assert (answer.code, answer.text) == ("cancelled", "cancelled before it started")
        await broker.cancel("t-unknown")  # nothing to cancel: ignored
        actor.release.set()
        assert (await broker.answer(running)).value == "g"
        assert actor.ran == ["g"]

    async def test_cancel_before_the_task_starts(self, line: Line) -> None:
        """A command cancelled in the same receive burst as its request, before its task took a
        step, is answered cancelled and frees the device."""
        broker = line.broker
        msg_id = "t-early"
        # Both messages are queued in the actor's socket before its loop turn reads them.
        await broker.send(*protocol.encode_request(msg_id, SERVICE, "hang", 5.0, {}))
        await broker.cancel(msg_id)
        answer = await broker.answer(msg_id)
        assert (answer.code, answer.text) == ("cancelled", "cancelled before it started")
        assert (await broker.call("add", {"a": 3})).value == 3


class TestDeadlines:
    async def test_running_command_past_its_deadline(self, line: Line) -> None:
        """A coroutine command still running at its deadline is cancelled: deadline_exceeded."""
        answer = await line.broker.call("hang", ttl=0.05)
        assert (answer.code, answer.text) == (
            "deadline_exceeded",
            "did not finish before the deadline",
        )
        assert (await line.broker.call("add", {"a": 1})).value == 1

    async def test_expired_on_arrival(self, line: Line) -> None:
        """A coroutine command whose ttl is already spent does not start."""
        answer = await line.broker.call("gate", {"name": "late"}, ttl=0)
        assert (answer.code, answer.text) == ("deadline_exceeded", "deadline passed while queued")

    async def test_queued_command_past_its_deadline_never_runs(self, line: Line) -> None:
        """A command whose deadline passes while it waits is answered deadline_exceeded and
        never touches the device."""
        broker, actor = line.broker, line.actor
        running = await broker.request("gate", {"name": "g"})
        await broker.progress(running)
        stale = await broker.request("add", {"a": 1}, ttl=0.02)
        fresh = await broker.request("add", {"a": 2})
        assert (await broker.call("ping")).value["queued"] == 2  # both received
        await asyncio.sleep(0.03)  # the stale one's deadline passes (measured from its arrival)
        actor.release.set()
        answer = await broker.answer(stale)
        assert (answer.code, answer.text) == ("deadline_exceeded", "deadline passed while queued")
        assert (await broker.answer(fresh)).value == 2
        assert actor.ran == ["g", "add 2"]


# --- heartbeats and registration ------------------------------------------------------------------


class TestHeartbeats:
    async def test_heartbeats_both_ways(self, start: Starter) -> None:
        """The actor heartbeats while the broker does; when the broker falls silent it sends
        READY again, and heartbeats once the broker is back."""
        line = await start(heartbeat_s=0.02, heartbeat_timeout_s=0.15)
        broker = line.broker
        with capture_logs() as logs:
            for _ in range(3):  # the broker's heartbeats keep it registered
                await broker.expect(Kind.HEARTBEAT)
                await broker.heartbeat()
            again = await broker.expect(Kind.READY)  # silence: register again
            assert again.message.service == SERVICE
            await broker.heartbeat()
            await until(lambda: any(e["event"] == "broker_back" for e in logs), "broker_back")
            await broker.expect(Kind.HEARTBEAT, skip=frozenset({Kind.READY}))
        events = [entry["event"] for entry in logs]
        assert events.index("broker_silent") < events.index("broker_back")

    async def test_reregisters_after_a_broker_restart(
        self, start: Starter, actx: zmq.asyncio.Context
    ) -> None:
        """A restarted broker that answers a heartbeat with DISCONNECT 'not registered' gets
        READY again (over TCP: inproc connections do not come back)."""
        command = f"tcp://127.0.0.1:{free_port()}"
        line = await start(command=command, heartbeat_s=0.02, heartbeat_timeout_s=30.0)
        old = line.broker
        old.router.close()
        restarted = FakeBroker(actx, command, f"inproc://restarted-{next(_endpoints)}")
        try:
            with capture_logs() as logs:
                await restarted.expect(Kind.HEARTBEAT)
                await restarted.disconnect(f"{protocol.REASON_NOT_REGISTERED}; send READY")
                ready = await restarted.expect(Kind.READY)
                assert ready.message.service == SERVICE
                assert (await restarted.call("add", {"a": 4})).value == 4
            assert "reregistering" in [entry["event"] for entry in logs]
            await line.stopped()
        finally:
            restarted.close()


class TestDisconnect:
    async def test_replaced_stops_the_actor(self, line: Line) -> None:
        """DISCONNECT 'replaced' (another process took the name) ends serve in order."""
        with capture_logs() as logs:
            await line.broker.disconnect(f"{protocol.REASON_REPLACED} by a new registration")
            goodbye = await line.broker.expect(Kind.DISCONNECT)
            await asyncio.wait_for(line.task, WAIT_S)
        assert goodbye.message.text == "actor stopping"
        assert line.actor.stopped
        assert "replaced_by_another_instance" in [entry["event"] for entry in logs]

    async def test_not_registered_sends_ready(self, line: Line) -> None:
        """DISCONNECT 'not registered' (or with no usable reason) is answered with READY."""
        await line.broker.disconnect(protocol.REASON_NOT_REGISTERED)
        await line.broker.expect(Kind.READY)
        await line.broker.send(msgpack.packb([1, 8, 5]))
        await line.broker.expect(Kind.READY)

    async def test_broker_stopping_is_waited_out(self, line: Line) -> None:
        """DISCONNECT 'broker stopping' is logged; the actor keeps serving and does not
        re-register until the broker is back."""
        with capture_logs() as logs:
            await line.broker.disconnect(protocol.REASON_BROKER_STOPPING)
            assert (await line.broker.call("add", {"a": 1})).value == 1
        assert "broker_stopping" in [entry["event"] for entry in logs]
        assert [m.kind for m in line.broker.control if m.kind is not Kind.HEARTBEAT] == []
        assert not line.task.done()


# --- events -------------------------------------------------------------------------------------


class EncodeCounter:
    """Counts the event bodies the publisher encodes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = _publisher._encode_body

        def counting(*args: Any) -> bytes:
            self.count += 1
            return real(*args)

        monkeypatch.setattr(_publisher, "_encode_body", counting)


async def heard(line: Line, event: str) -> protocol.Event:
    """Publish probes on ``event`` until one reaches the broker (the subscription has reached
    the actor); return the first that arrived. ``FakeBroker.event`` skips the later ones."""

    def probe() -> bool:
        line.actor.publish(event, "probe")
        return line.broker.event_waiting()

    await until(probe, f"the subscription to {event} to reach the actor")
    return protocol.decode_event(await line.broker.xsub.recv())


class TestPublish:
    async def test_no_subscriber_no_encoding(
        self, line: Line, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Events nobody subscribed to are not encoded (nor iterated); their numbers are used up."""
        counter = EncodeCounter(monkeypatch)

        def never() -> Iterator[Any]:
            raise AssertionError("iterated with nobody listening")
            yield

        line.actor.publish("reading", 1)
        line.actor.publish("reading", 2)
        line.actor.publish_many("reading", never(), count=3)
        line.actor.publish_many("reading", [{"x": 1}], common={"y": 2})
        assert counter.count == 0
        assert line.actor.events_dropped == 0
        await line.broker.subscribe(f"{SERVICE}.reading".encode())
        probe = await heard(line, "reading")
        assert probe.seq >= 7  # 2 + 3 + 1 numbers were used up before it

    async def test_events_reach_a_subscriber(self, line: Line) -> None:
        """publish and publish_many send numbered events on <service>.<event>."""
        await line.broker.subscribe(f"{SERVICE}.".encode())
        probe = await heard(line, "reading")
        line.actor.publish("reading", {"value": 21.5})
        line.actor.publish_many("reading", (n for n in (1, 2)))
        line.actor.publish_many("reading", [{"v": 1}, {"v": 2}], common={"stream": "s"})
        events = [await line.broker.event() for _ in range(5)]
        assert [e.topic for e in events] == [f"{SERVICE}.reading"] * 5
        first = events[0].seq
        assert first > probe.seq
        assert [e.seq for e in events] == list(range(first, first + 5))
        assert [e.data for e in events] == [
            {"value": 21.5},
            1,
            2,
            {"stream": "s", "v": 1},
            {"stream": "s", "v": 2},
        ]
        assert {(e.src, e.epoch) for e in events} == {(SERVICE, probe.epoch)}

    async def test_unsubscribe_stops_encoding(
        self, line: Line, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once the last subscription to a topic is withdrawn, its events are no longer encoded."""
        await line.broker.subscribe(f"{SERVICE}.status".encode())
        await heard(line, "status")
        counter = EncodeCounter(monkeypatch)
        await line.broker.unsubscribe(f"{SERVICE}.status".encode())

        def skipped() -> bool:
            before = counter.count
            line.actor.publish("status", "x")
            return counter.count == before

        await until(skipped, "the unsubscription to reach the actor")

    async def test_subscription_reaching_into_the_body_counts(self, line: Line) -> None:
        """A subscription longer than the topic (it reaches into the body) counts as listening."""
        await line.broker.subscribe(f"{SERVICE}.t".encode() + b"\0\x97")
        assert (await heard(line, "t")).data == "probe"

    async def test_publish_while_not_serving_counts_drops(self) -> None:
        """Events published before serve (no connection) are counted as dropped."""
        actor = Probe(SERVICE)
        actor.publish("early", 1)
        actor.publish_many("early", [1, 2, 3])
        assert actor.events_dropped == 4


# --- shutdown -----------------------------------------------------------------------------------


class TestShutdown:
    async def test_orderly_shutdown(self, start: Starter) -> None:
        """Stop: the queue fails with unavailable, new requests too, the running command
        finishes, then DISCONNECT goes out and on_stop runs."""
        line = await start(shutdown_grace_s=WAIT_S)
        broker, actor = line.broker, line.actor
        running = await broker.request("gate", {"name": "g"})
        await broker.progress(running)
        queued = await broker.request("add", {"a": 1})
        with capture_logs() as logs:
            line.stop.set()
            answer = await broker.answer(queued)
            assert (answer.code, answer.text) == ("unavailable", f"{SERVICE} is shutting down")
            assert (await broker.call("add", {"a": 2})).code == "unavailable"
            await broker.disconnect(protocol.REASON_NOT_REGISTERED)  # ignored while stopping
            assert not actor.stopped
            actor.release.set()
            assert (await broker.answer(running)).value == "g"
            goodbye = await broker.expect(Kind.DISCONNECT)
            await asyncio.wait_for(line.task, WAIT_S)
        assert goodbye.message.text == "actor stopping"
        assert actor.stopped
        assert actor.ran == ["g"]
        events = [entry["event"] for entry in logs]
        assert events[0] == "actor_stopping"
        assert events[-1] == "actor_stopped"

    async def test_grace_period_then_cancel(self, start: Starter) -> None:
        """A command still running after the grace period is cancelled."""
        line = await start(shutdown_grace_s=0.05)
        running = await line.broker.request("hang")
        assert (await line.broker.call("ping")).value["queued"] == 0  # hang has started
        await line.stopped()
        assert (await line.broker.answer(running)).code == "cancelled"
        await line.broker.expect(Kind.DISCONNECT)

    async def test_on_stop_failure_is_logged(self, start: Starter) -> None:
        """A device that fails to close does not hide the orderly exit."""
        line = await start(options={"fail_on_stop": True})
        with capture_logs() as logs:
            await line.stopped()
        assert "on_stop_failed" in [entry["event"] for entry in logs]
        assert line.actor.stopped

    async def test_serves_before_the_broker_is_there(self) -> None:
        """With no broker, the actor starts all the same (READY waits for the heartbeat loop),
        notices the silence, and on stop drops the DISCONNECT that has nowhere to go."""
        # TCP: an inproc connect before the bind already has a pipe to queue messages in.
        settings = ActorSettings(
            f"tcp://127.0.0.1:{free_port()}",
            f"inproc://nobody-{next(_endpoints)}-pub",
            heartbeat_s=0.02,
            heartbeat_timeout_s=0.05,
        )
        actor = Probe(SERVICE)
        stop = asyncio.Event()
        with capture_logs() as logs:
            task = asyncio.create_task(actor.serve(settings, stop=stop))
            await until(lambda: any(e["event"] == "broker_silent" for e in logs), "broker_silent")
            stop.set()
            await asyncio.wait_for(task, WAIT_S)
        events = [entry["event"] for entry in logs]
        assert events.index("actor_started") < events.index("broker_silent")
        assert "send_dropped" in events
