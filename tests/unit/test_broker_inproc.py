"""The broker in-process: one ``Broker`` on ``inproc://`` endpoints of a test's own ZeroMQ context,
driven turn by turn with ``run_once`` and a clock the test advances, with raw DEALER sockets
playing the actors and the clients.

No threads and no sleeps: a test sends, then runs broker turns until what it waits for arrives
(each wait bounded by ``WAIT_S``); deadlines and heartbeats happen when the test moves the clock.
Two tests leave this set-up on purpose: ``run()`` in a thread (stop and orderly shutdown), and
the socket monitor over TCP on loopback (libzmq reports no disconnects on ``inproc://``).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import structlog
import zmq

from bus import protocol
from bus.broker import Broker
from bus.config import BrokerConfig, SecurityConfig
from bus.directory import DOWN, UP
from bus.errors import BusError, ConfigError, from_wire
from bus.testing import free_port
from tests.vectors.make_vectors import from_json

ID = "3f2a9c1b7d4e-1"
#: Upper bound of every wait; the waits themselves end as soon as their condition holds.
WAIT_S = 5.0
WAIT_MS = int(WAIT_S * 1000)
INFO = {"kind": "fake", "pid": 4242, "host": "bench-7", "doc": "A fake actor.", "commands": {}}
VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors"

Context = zmq.Context[zmq.Socket[bytes]]


def unpack(frame: bytes) -> Any:
    return msgpack.unpackb(frame, strict_map_key=False)


def pack(value: Any) -> bytes:
    return msgpack.packb(value)


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Line:
    """A started in-process broker, the clock it runs on, and the sockets a test connects."""

    def __init__(
        self,
        ctx: Context,
        security: SecurityConfig | None = None,
        expected: tuple[str, ...] = (),
        **config: Any,
    ) -> None:
        tag = os.urandom(4).hex()
        settings: dict[str, Any] = {
            "command": f"inproc://command-{tag}",
            "publish": f"inproc://publish-{tag}",
            "subscribe": f"inproc://subscribe-{tag}",
            **config,
        }
        self.ctx = ctx
        self.config = BrokerConfig(**settings)
        self.clock = Clock()
        self.broker = Broker(
            self.config, ctx, clock=self.clock, security=security, expected=expected
        )
        self.broker.start()
        self.sockets: list[zmq.Socket[bytes]] = []
        self._ids = itertools.count(1)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.broker.close()

    # --- peers ----------------------------------------------------------------------------

    def dealer(self) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.config.command)
        self.sockets.append(sock)
        return sock

    def actor(self, name: str, info: dict[str, Any] | None = None) -> zmq.Socket[bytes]:
        """A DEALER registered as ``name`` (READY sent, the broker's HEARTBEAT ack received)."""
        sock = self.dealer()
        sock.send_multipart(protocol.encode_ready(name, INFO if info is None else info))
        assert self.header(sock) == [1, 7]
        return sock

    def subscriber(self, prefix: str) -> zmq.Socket[bytes]:
        """A SUB on ``prefix`` whose subscription has reached the broker (checked by ``probe``)."""
        sub = self.ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.connect(self.config.subscribe)
        self.sockets.append(sub)
        token = f"_probe.{os.urandom(4).hex()}"
        sub.subscribe(prefix)
        sub.subscribe(token)
        client = self.dealer()
        end = time.monotonic() + WAIT_S
        while time.monotonic() < end:
            assert self.call(client, "probe", {"topic": token}) is None
            if sub.poll(20):
                assert protocol.decode_event(sub.recv()).topic == token
                return sub
        pytest.fail("the subscription never reached the broker")

    # --- driving the broker ---------------------------------------------------------------

    def pump(
        self, until: Callable[[], Any], what: str, each: Callable[[], None] | None = None
    ) -> Any:
        """Run broker turns until ``until()`` is truthy; fail after ``WAIT_S``."""
        end = time.monotonic() + WAIT_S
        while not (value := until()):
            if time.monotonic() > end:
                pytest.fail(f"timed out waiting for {what}")
            if each is not None:
                each()
            self.broker.run_once(0.005)
        return value

    def recv(self, sock: zmq.Socket[bytes]) -> list[bytes]:
        """The next message on ``sock``, running the broker until it comes."""
        self.pump(lambda: sock.poll(0), "a message")
        return sock.recv_multipart()

    def header(self, sock: zmq.Socket[bytes]) -> list[Any]:
        return unpack(self.recv(sock)[0])  # type: ignore[no-any-return]

    def sync(self, sock: zmq.Socket[bytes]) -> list[list[Any]]:
        """Headers of every message ``sock`` receives before the answer to a ping it sends now.

        The broker handles one connection's messages in order, so whatever it does about what
        ``sock`` sent earlier is done (and delivered) by the time the ping is answered."""
        msg_id = f"sync-{next(self._ids)}"
        sock.send_multipart(protocol.encode_request(msg_id, "broker", "ping", 5.0, None))
        before = []
        while (header := self.header(sock))[:3] != [1, 3, msg_id]:
            before.append(header)
        return before

    def request(
        self,
        client: zmq.Socket[bytes],
        service: str,
        command: str = "work",
        ttl: float | None = 10.0,
        args: dict[str, Any] | None = None,
    ) -> str:
        msg_id = f"req-{next(self._ids)}"
        client.send_multipart(protocol.encode_request(msg_id, service, command, ttl, args))
        return msg_id

    def call(self, client: zmq.Socket[bytes], command: str, args: Any = None) -> Any:
        """Call a broker command; return its result, or raise the ERROR as a BusError."""
        msg_id = f"call-{next(self._ids)}"
        payload, _ = protocol.pack_value(args)
        client.send_multipart([pack([1, 1, msg_id, "broker", command, 5.0, payload])])
        frames = self.recv(client)
        header = unpack(frames[0])
        assert header[2] == msg_id
        if header[1] == 4:
            raise from_wire(header[3], header[4], header[5])
        return protocol.unpack_value(header[3], frames[1:])


def error(header: list[Any]) -> tuple[str, str, str]:
    """``(msg_id, code, message)`` of an ERROR header."""
    assert header[:2] == [1, 4], header
    return header[2], header[3], header[4]


@pytest.fixture
def ctx() -> Iterator[Context]:
    context: Context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def line(ctx: Context) -> Iterator[Line]:
    built = Line(ctx)
    yield built
    built.close()


@pytest.fixture
def quiet(ctx: Context) -> Iterator[Line]:
    """A line whose broker sends no heartbeats and declares no actor silent while a test moves
    the clock by seconds (for deadlines)."""
    built = Line(ctx, heartbeat_s=1000.0, heartbeat_timeout_s=2000.0)
    yield built
    built.close()


# --- routing ------------------------------------------------------------------------------


class TestRouting:
    def test_request_progress_and_reply_pass_through_unchanged(self, line: Line) -> None:
        """A request reaches the actor as the very frames sent (bulk frame included); the
        actor's PROGRESS and REPLY reach the client as sent; each is counted as routed."""
        actor = line.actor("echo1")
        client = line.dealer()
        bulk = os.urandom(protocol.BULK_THRESHOLD)
        sent = protocol.encode_request(ID, "echo1", "length", 2.5, {"data": bulk})
        assert len(sent) == 2
        client.send_multipart(sent)
        assert line.recv(actor) == sent
        progress = protocol.encode_progress(ID, {"done": 1})
        reply = protocol.encode_reply(ID, bulk)
        actor.send_multipart(progress)
        actor.send_multipart(reply)
        assert line.recv(client) == progress
        assert line.recv(client) == reply
        assert dict(line.broker.routed) == {"request": 1, "progress": 1, "reply": 1}
        assert line.broker.stats()["inflight"] == 0

    def test_error_from_the_actor_finishes_the_request(self, line: Line) -> None:
        """An ERROR from the actor is forwarded and ends the request; a second answer is late."""
        actor = line.actor("echo1")
        client = line.dealer()
        msg_id = line.request(client, "echo1")
        line.recv(actor)
        failure = protocol.encode_error(msg_id, "device_fault", "jammed", {"device_code": "J"})
        actor.send_multipart(failure)
        assert line.recv(client) == failure
        actor.send_multipart(protocol.encode_reply(msg_id, 1))
        assert line.sync(client) == []
        assert line.broker.routed["error"] == 1
        assert line.broker.dropped["late_reply"] == 1

    def test_never_registered_service_is_unknown_service(self, line: Line) -> None:
        """A service no actor ever registered: unknown_service, nothing routed."""
        client = line.dealer()
        msg_id = line.request(client, "nobody")
        assert error(line.header(client)) == (
            msg_id,
            "unknown_service",
            "no service named 'nobody' has registered",
        )
        assert line.broker.dropped["unknown_service"] == 1

    def test_registered_then_gone_service_is_unavailable(self, line: Line) -> None:
        """A service whose actor said DISCONNECT is known but down: unavailable, with the reason."""
        actor = line.actor("echo1")
        actor.send_multipart(protocol.encode_disconnect("actor stopping"))
        client = line.dealer()
        msg_id = line.request(client, "echo1")
        assert error(line.header(client)) == (
            msg_id,
            "unavailable",
            "service 'echo1' is down (actor disconnected)",
        )
        assert line.broker.dropped["unavailable"] == 1

    def test_bad_ttl_comes_after_the_service_checks(self, line: Line) -> None:
        """ttl_s of the wrong type is bad_request for a service that is up, but a request to an
        unknown service is unknown_service whatever its ttl_s (PROTOCOL.md §6)."""
        line.actor("echo1")
        client = line.dealer()
        client.send_multipart([pack([1, 1, "m-1", "nobody", "add", "soon", pack({})])])
        assert error(line.header(client))[:2] == ("m-1", "unknown_service")
        client.send_multipart([pack([1, 1, "m-2", "echo1", "add", "soon", pack({})])])
        header = line.header(client)
        assert error(header) == (
            "m-2",
            "bad_request",
            "malformed message: ttl_s must be a finite number or nil",
        )
        assert header[5] == {"reason": "ttl_s must be a finite number or nil"}

    def test_duplicate_message_id_is_bad_request(self, line: Line) -> None:
        """A msg_id already in flight is refused (duplicate_id); the first request is untouched."""
        actor = line.actor("echo1")
        client = line.dealer()
        client.send_multipart(protocol.encode_request(ID, "echo1", "work", 5.0, None))
        line.recv(actor)
        other = line.dealer()
        other.send_multipart(protocol.encode_request(ID, "echo1", "work", 5.0, None))
        assert error(line.header(other)) == (
            ID,
            "bad_request",
            f"message id {ID!r} is already in flight",
        )
        assert line.broker.dropped["duplicate_id"] == 1
        assert line.broker.stats()["inflight"] == 1

    def test_answers_from_the_wrong_peer_or_for_unknown_ids_are_dropped(self, line: Line) -> None:
        """PROGRESS and REPLY count only from the actor holding the request; the others are
        dropped and counted (wrong_peer, late_progress, late_reply), never forwarded."""
        holder = line.actor("echo1")
        stranger = line.actor("echo2")
        client = line.dealer()
        msg_id = line.request(client, "echo1")
        line.recv(holder)
        stranger.send_multipart(protocol.encode_reply(msg_id, 1))
        stranger.send_multipart(protocol.encode_progress(msg_id, 1))
        stranger.send_multipart(protocol.encode_reply("nobody-asked", 1))
        stranger.send_multipart([pack([1, 3])])  # no msg_id at all
        assert line.sync(stranger) == []
        assert line.sync(client) == []
        dropped = line.broker.dropped
        assert (dropped["wrong_peer"], dropped["late_progress"], dropped["late_reply"]) == (1, 1, 2)
        holder.send_multipart(protocol.encode_reply(msg_id, 2))
        assert unpack(line.recv(client)[0])[:3] == [1, 3, msg_id]


class TestDeadlines:
    def test_expired_request_fails_the_caller_and_is_cancelled_at_the_actor(
        self, quiet: Line
    ) -> None:
        """When ttl_s passes, the client gets deadline_exceeded and the actor a CANCEL; the
        actor's late reply is dropped."""
        actor = quiet.actor("echo1")
        client = quiet.dealer()
        msg_id = quiet.request(client, "echo1", ttl=2.0)
        quiet.recv(actor)
        quiet.clock.advance(1.9)
        assert quiet.sync(client) == []
        quiet.clock.advance(0.2)
        assert error(quiet.header(client)) == (
            msg_id,
            "deadline_exceeded",
            "no answer from 'echo1' before the deadline",
        )
        assert quiet.recv(actor) == protocol.encode_cancel(msg_id)
        actor.send_multipart(protocol.encode_reply(msg_id, 1))
        assert quiet.sync(client) == []
        assert quiet.broker.dropped["deadline"] == 1
        assert quiet.broker.dropped["late_reply"] == 1

    def test_nil_ttl_takes_the_default_and_long_ttls_are_capped(self, ctx: Context) -> None:
        """ttl_s nil expires after default_timeout_s, a ttl_s over max_timeout_s after
        max_timeout_s; the actor still sees the ttl_s as sent."""
        line = Line(
            ctx,
            default_timeout_s=3.0,
            max_timeout_s=5.0,
            heartbeat_s=1000.0,
            heartbeat_timeout_s=2000.0,
        )
        try:
            actor = line.actor("echo1")
            client = line.dealer()
            nil_ttl = line.request(client, "echo1", ttl=None)
            long_ttl = line.request(client, "echo1", ttl=600.0)
            assert unpack(line.recv(actor)[0])[5] is None
            assert unpack(line.recv(actor)[0])[5] == 600.0
            line.clock.advance(3.1)
            assert error(line.header(client))[:2] == (nil_ttl, "deadline_exceeded")
            line.clock.advance(2.0)
            assert error(line.header(client))[:2] == (long_ttl, "deadline_exceeded")
        finally:
            line.close()

    @pytest.mark.parametrize("ttl", [0, -1.5])
    def test_request_arriving_with_no_time_left_is_refused(self, quiet: Line, ttl: float) -> None:
        """ttl_s <= 0: deadline_exceeded at once, nothing forwarded."""
        actor = quiet.actor("echo1")
        client = quiet.dealer()
        msg_id = quiet.request(client, "echo1", ttl=ttl)
        assert error(quiet.header(client)) == (
            msg_id,
            "deadline_exceeded",
            "request arrived with its deadline already passed",
        )
        assert quiet.sync(actor) == []
        assert quiet.broker.dropped["deadline"] == 1

    def test_answered_request_does_not_expire(self, quiet: Line) -> None:
        """A request answered before its deadline leaves nothing behind to expire."""
        actor = quiet.actor("echo1")
        client = quiet.dealer()
        msg_id = quiet.request(client, "echo1", ttl=1.0)
        quiet.recv(actor)
        actor.send_multipart(protocol.encode_reply(msg_id, 1))
        quiet.recv(client)
        quiet.clock.advance(5.0)
        assert quiet.sync(client) == []
        assert quiet.broker.dropped["deadline"] == 0


class TestCancel:
    def test_cancel_from_the_caller_reaches_the_actor(self, line: Line) -> None:
        """CANCEL from the client that sent the request is forwarded; the request stays in
        flight until the actor answers."""
        actor = line.actor("echo1")
        client = line.dealer()
        msg_id = line.request(client, "echo1")
        line.recv(actor)
        client.send_multipart(protocol.encode_cancel(msg_id))
        assert line.recv(actor) == protocol.encode_cancel(msg_id)
        assert line.broker.stats()["inflight"] == 1
        cancelled = protocol.encode_error(msg_id, "cancelled", "cancelled by the caller")
        actor.send_multipart(cancelled)
        assert line.recv(client) == cancelled
        assert line.broker.routed["cancel"] == 1

    def test_cancel_from_another_peer_or_of_an_unknown_id_is_dropped(self, line: Line) -> None:
        """Only the caller may cancel; other CANCELs are dropped and counted."""
        actor = line.actor("echo1")
        client = line.dealer()
        msg_id = line.request(client, "echo1")
        line.recv(actor)
        other = line.dealer()
        other.send_multipart(protocol.encode_cancel(msg_id))
        other.send_multipart(protocol.encode_cancel("never-sent"))
        other.send_multipart([pack([1, 5])])
        assert line.sync(other) == []
        assert line.sync(actor) == []
        assert line.broker.dropped["cancel_unknown"] == 3


# --- registration and liveness ------------------------------------------------------------


class TestRegistration:
    def test_ready_registers_and_is_acknowledged(self, line: Line) -> None:
        """READY makes the service up on that connection; services lists it with its facts."""
        line.actor("echo1")
        (row,) = line.call(line.dealer(), "services")
        assert {k: row[k] for k in ("name", "kind", "state", "pid", "host", "registrations")} == {
            "name": "echo1",
            "kind": "fake",
            "state": UP,
            "pid": 4242,
            "host": "bench-7",
            "registrations": 1,
        }

    @pytest.mark.parametrize(
        ("name", "message"),
        [
            ("broker", "service name 'broker' is reserved for the broker"),
            ("-dash", "invalid service name '-dash'"),
            ("", "invalid service name ''"),
        ],
    )
    def test_reserved_or_invalid_name_is_bad_request(
        self, line: Line, name: str, message: str
    ) -> None:
        """READY for ``broker`` or an invalid name: bad_request (msg_id ""), nothing registered."""
        sock = line.dealer()
        sock.send_multipart(protocol.encode_ready(name, INFO))
        msg_id, code, text = error(line.header(sock))
        assert (msg_id, code) == ("", "bad_request")
        assert text.startswith(message)
        assert line.broker.directory.by_name == {}
        assert line.broker.dropped["malformed"] == 1

    def test_second_ready_from_another_connection_replaces_the_first(self, line: Line) -> None:
        """A second READY for an up name wins: the first connection's requests fail with
        unavailable, it gets DISCONNECT "replaced...", and requests go to the newcomer."""
        first = line.actor("echo1")
        client = line.dealer()
        held = line.request(client, "echo1")
        line.recv(first)
        second = line.actor("echo1")
        assert error(line.header(client)) == (
            held,
            "unavailable",
            "service 'echo1' went down while handling the request: replaced by a new registration",
        )
        assert unpack(line.recv(first)[0]) == [1, 8, "replaced by a new registration"]
        routed = line.request(client, "echo1")
        assert unpack(line.recv(second)[0])[2] == routed
        entry = line.broker.directory.by_name["echo1"]
        assert entry.registrations == 2 and entry.state == UP
        # The replaced connection is nobody now: its heartbeat is answered "not registered".
        first.send_multipart(protocol.encode_heartbeat())
        assert unpack(line.recv(first)[0]) == [1, 8, "not registered; send READY"]

    def test_ready_under_another_name_moves_the_connection(self, line: Line) -> None:
        """READY on a connection registered under another name: the old name goes down."""
        sock = line.actor("echo1")
        sock.send_multipart(protocol.encode_ready("echo2", INFO))
        assert unpack(line.recv(sock)[0]) == [1, 7]
        by_name = line.broker.directory.by_name
        assert (by_name["echo1"].state, by_name["echo1"].down_reason) == (
            DOWN,
            "re-registered as another service",
        )
        assert by_name["echo2"].state == UP

    def test_ready_again_on_the_same_connection_refreshes(self, line: Line) -> None:
        """READY again from the connection holding the name: acknowledged, info refreshed,
        requests in flight untouched."""
        sock = line.actor("echo1")
        client = line.dealer()
        line.request(client, "echo1")
        line.recv(sock)
        sock.send_multipart(protocol.encode_ready("echo1", {**INFO, "pid": 5}))
        assert unpack(line.recv(sock)[0]) == [1, 7]
        entry = line.broker.directory.by_name["echo1"]
        assert (entry.info["pid"], len(entry.inflight), entry.registrations) == (5, 1, 2)

    def test_restarts_count_comebacks_and_new_processes(self, line: Line) -> None:
        """restarts: +1 for a registration after the name was down, +1 for another pid taking
        it over while up; none for the first registration or a READY again from the same
        process (on another connection too). up_since: when the current run came up, None while
        down."""

        def row() -> dict[str, Any]:
            (found,) = line.call(line.dealer(), "services")
            return {k: found[k] for k in ("state", "registrations", "restarts", "up_since")}

        line.actor("echo1")
        started = row()
        assert (started["registrations"], started["restarts"]) == (1, 0)
        assert abs(started["up_since"] - time.time()) < 60
        line.actor("echo1")  # another connection of the same pid: a reconnect, not a restart
        assert row() == {**started, "registrations": 2}
        newer = line.actor("echo1", {**INFO, "pid": 4243})  # a new process took the name over
        assert (row()["registrations"], row()["restarts"]) == (3, 1)
        newer.send_multipart(protocol.encode_disconnect("bye"))
        line.sync(newer)
        assert {k: row()[k] for k in ("state", "up_since")} == {"state": DOWN, "up_since": None}
        line.actor("echo1", {**INFO, "pid": 4243})  # back after being down, even the same pid
        assert (row()["state"], row()["restarts"]) == (UP, 2)

    def test_presence_events_on_up_and_down(self, line: Line) -> None:
        """The broker publishes presence.<service> when an actor comes up and goes down."""
        sub = line.subscriber("presence.")
        actor = line.actor("echo1")
        actor.send_multipart(protocol.encode_disconnect("actor stopping"))
        line.sync(actor)
        events = [protocol.decode_event(sub.recv()) for _ in range(2) if sub.poll(WAIT_MS)]
        assert [(e.topic, e.src, e.seq, e.data["state"]) for e in events] == [
            ("presence.echo1", "broker", 1, UP),
            ("presence.echo1", "broker", 2, DOWN),
        ]
        assert events[1].data["reason"] == "actor disconnected"

    def test_restarted_process_registering_first_still_publishes_down_then_up(
        self, line: Line
    ) -> None:
        """A new process's READY before its predecessor's death is noticed: presence says the
        predecessor went down, then the newcomer came up (a dashboard shows the restart)."""
        sub = line.subscriber("presence.")
        line.actor("echo1")
        line.actor("echo1", {**INFO, "pid": INFO["pid"] + 1})
        events = [protocol.decode_event(sub.recv()) for _ in range(3) if sub.poll(WAIT_MS)]
        assert [(e.seq, e.data["state"]) for e in events] == [(1, UP), (2, DOWN), (3, UP)]
        assert events[1].data["reason"] == "replaced by a new registration"
        assert line.broker.directory.by_name["echo1"].restarts == 1

    def test_same_process_on_a_new_connection_stays_up(self, line: Line) -> None:
        """The same process registering again on another connection is no restart: no down."""
        sub = line.subscriber("presence.")
        line.actor("echo1")
        line.actor("echo1")
        events = [protocol.decode_event(sub.recv()) for _ in range(2) if sub.poll(WAIT_MS)]
        assert [(e.seq, e.data["state"]) for e in events] == [(1, UP), (2, UP)]
        assert line.broker.directory.by_name["echo1"].restarts == 0


class TestLoop:
    def test_a_deadline_under_a_millisecond_away_is_waited_for_not_spun_on(
        self, line: Line, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An answered request's heap entry due in 0.3 ms: the turn waits (poll(1)) instead of
        returning at once (poll(0)) turn after turn until it is due."""
        client, actor = line.dealer(), line.actor("echo1")
        line.request(client, "echo1", ttl=1.0)  # due well before the next heartbeat tick
        line.recv(actor)
        deadline = line.broker._deadlines[0][0]
        line.clock.advance(deadline - line.clock() - 0.0003)
        waits: list[int] = []
        poll = line.broker._poller.poll
        monkeypatch.setattr(line.broker._poller, "poll", lambda ms: waits.append(ms) or poll(0))
        line.broker.run_once(1.0)
        assert waits == [1]


class TestLiveness:
    def test_broker_heartbeats_up_actors_every_heartbeat_s(self, line: Line) -> None:
        """Every heartbeat_s the broker sends each up actor a HEARTBEAT."""
        actor = line.actor("echo1")
        assert line.sync(actor) == []
        line.clock.advance(line.config.heartbeat_s)
        assert unpack(line.recv(actor)[0]) == [1, 7]

    def test_heartbeats_keep_an_actor_up(self, line: Line) -> None:
        """An actor heartbeating within heartbeat_timeout_s stays up however long it lives."""
        actor = line.actor("echo1")
        for _ in range(10):
            line.clock.advance(line.config.heartbeat_s)
            actor.send_multipart(protocol.encode_heartbeat())
            assert unpack(line.recv(actor)[0]) == [1, 7]
        assert line.broker.directory.by_name["echo1"].state == UP

    def test_silent_actor_is_declared_down_and_its_requests_fail(self, line: Line) -> None:
        """An actor silent for more than heartbeat_timeout_s is down at the next tick; the
        requests it held fail with unavailable naming the silence."""
        actor = line.actor("echo1")
        client = line.dealer()
        msg_id = line.request(client, "echo1")
        line.recv(actor)
        line.clock.advance(line.config.heartbeat_timeout_s + 0.5)
        msg, code, text = error(line.header(client))
        assert (msg, code) == (msg_id, "unavailable")
        assert (
            text == "service 'echo1' went down while handling the request: no heartbeat for 3.0 s"
        )
        entry = line.broker.directory.by_name["echo1"]
        assert (entry.state, entry.down_reason) == (DOWN, "no heartbeat for 3.0 s")
        assert line.broker.dropped["actor_down"] == 1

    def test_heartbeat_from_an_unregistered_peer_asks_it_to_register(self, line: Line) -> None:
        """HEARTBEAT from a connection the broker does not know: DISCONNECT "not registered"."""
        sock = line.dealer()
        sock.send_multipart(protocol.encode_heartbeat())
        assert unpack(line.recv(sock)[0]) == [1, 8, "not registered; send READY"]

    def test_disconnect_from_a_stranger_is_ignored(self, line: Line) -> None:
        """DISCONNECT from a peer that is not a registered actor changes nothing."""
        line.actor("echo1")
        stranger = line.dealer()
        stranger.send_multipart(protocol.encode_disconnect("bye"))
        assert line.sync(stranger) == []
        assert line.broker.directory.by_name["echo1"].state == UP

    def test_closed_actor_connection_is_found_by_the_heartbeat_probe(self, ctx: Context) -> None:
        """An actor whose connection is gone is down as soon as a HEARTBEAT to it fails
        (ROUTER_MANDATORY), long before heartbeat_timeout_s."""
        line = Line(ctx, heartbeat_timeout_s=1000.0)
        try:
            actor = line.actor("echo1")
            actor.close(linger=0)
            entry = line.broker.directory.by_name["echo1"]
            line.pump(
                lambda: entry.state == DOWN,
                "the actor declared down",
                each=lambda: line.clock.advance(line.config.heartbeat_s),
            )
            assert entry.down_reason == "connection lost"
        finally:
            line.close()

    def test_a_closed_connection_makes_the_broker_probe_its_actors(self, ctx: Context) -> None:
        """Over TCP, the socket monitor reports a closed connection and the broker at once
        probes every up actor with a HEARTBEAT (ROUTER_MANDATORY then finds a dead one); the
        clock does not move here, so the HEARTBEAT is not a tick's."""
        line = Line(ctx, command=f"tcp://127.0.0.1:{free_port()}")
        try:
            actor = line.actor("echo1")
            client = line.dealer()
            assert line.call(client, "ping")["pong"] is True
            client.close(linger=0)
            assert unpack(line.recv(actor)[0]) == [1, 7]
            assert line.broker.directory.by_name["echo1"].state == UP
        finally:
            line.close()


# --- malformed and oversized input --------------------------------------------------------


def _vectors() -> list[dict[str, Any]]:
    return [
        v
        for v in (json.loads(p.read_text()) for p in sorted(VECTOR_DIR.glob("invalid_*.json")))
        if v["channel"] == "command"
    ]


#: Where each invalid command-channel vector is refused: by the broker (ERROR to the sender,
#: with this msg_id), or, for what the broker only routes, by the actor or the client receiving
#: it. A vector missing here fails test_every_invalid_vector_is_placed.
WHERE = {
    "invalid_bulk_reference_out_of_range": ("actor", None),
    "invalid_bulk_reference_zero": ("actor", None),
    "invalid_empty_header": ("broker", ""),
    "invalid_error_details_not_map": ("client", None),
    "invalid_event_on_command_channel": ("broker", ""),
    "invalid_header_not_array": ("broker", ""),
    "invalid_header_one_element": ("broker", ""),
    "invalid_hello_versions_not_array": ("broker", ""),
    "invalid_no_frames": ("nowhere", None),  # a ZeroMQ message has at least one frame
    "invalid_not_msgpack": ("broker", ""),
    "invalid_payload_not_msgpack": ("client", None),
    "invalid_ready_info_not_map": ("broker", ""),
    "invalid_reply_data_str": ("client", None),
    "invalid_request_args_not_bin": ("broker", ID),
    "invalid_request_missing_args": ("broker", ID),
    "invalid_request_msg_id_int": ("broker", ""),
    "invalid_request_ttl_bool": ("broker", ID),
    "invalid_request_ttl_string": ("broker", ID),
    "invalid_truncated_header": ("broker", ""),
    "invalid_unknown_ext_type": ("client", None),
    "invalid_unknown_kind": ("broker", ""),
    "invalid_version_2": ("broker", ""),
    "invalid_version_2_request": ("broker", ID),
    "invalid_version_string": ("broker", ""),
    "invalid_version_2_short": ("broker", ""),
    "invalid_header_trailing_bytes": ("broker", ""),
    "invalid_header_not_utf8": ("broker", ""),  # not decodable: no element 2 to echo
    "invalid_header_map_key_int": ("broker", ""),
    "invalid_header_timestamp": ("broker", ""),
    "invalid_cancel_with_bulk_frame": ("broker", ID),
    "invalid_bulk_reference_size_2": ("actor", None),
    "invalid_payload_map_key_int": ("actor", None),
    "invalid_payload_timestamp": ("actor", None),
    "invalid_payload_not_utf8": ("client", None),
}
SENDABLE = [v for v in _vectors() if WHERE.get(v["name"], ("",))[0] != "nowhere"]


def receive(frames: list[bytes]) -> Any:
    """Decode a message as an actor or a client does with bus.protocol's fast decoders:
    ``split``, the kind's decoder, then the payload (bulk-aware only when bulk frames came)."""
    frame = frames[0]
    kind, header = protocol.split(frame)
    if kind == protocol.Kind.REQUEST:
        payload = protocol.request_header(header, frame).payload
    elif kind == protocol.Kind.ERROR:
        return protocol.error_header(header)
    else:
        payload = protocol.reply_header(header).payload
    bulk = frames[1:]
    return protocol.unpack_value(payload, bulk) if bulk else protocol.unpack_small(payload)


class TestInvalidVectors:
    def test_every_invalid_vector_is_placed(self) -> None:
        """Each invalid command-channel vector has its place in WHERE."""
        assert sorted(v["name"] for v in _vectors()) == sorted(WHERE)

    @pytest.mark.parametrize("vector", SENDABLE, ids=[v["name"] for v in SENDABLE])
    def test_is_refused_with_the_documented_error(self, line: Line, vector: dict[str, Any]) -> None:
        """Sent to the broker, each vector is refused with its code: by the broker itself (with
        decode()'s message and details, counted once), or, when the broker only routes it, by
        the fast decoders of the actor or the client it is delivered to, unchanged."""
        frames = [bytes.fromhex(h) for h in vector["frames_hex"]]
        code = vector["error"]["code"]
        where, msg_id = WHERE[vector["name"]]
        actors = {name: line.actor(name) for name in ("echo1", "fr1")}
        client = line.dealer()
        if where == "broker":
            client.send_multipart(frames)
            header = line.header(client)
            with pytest.raises(BusError) as reference:
                protocol.decode(frames)
            assert header == [1, 4, msg_id, code, reference.value.message, reference.value.details]
            key = "malformed" if code == "bad_request" else code
            assert dict(line.broker.dropped) == {key: 1}
            assert line.sync(client) == []
            return
        if where == "actor":  # a REQUEST whose header is fine: routed to fr1 untouched
            client.send_multipart(frames)
            delivered = line.recv(actors["fr1"])
        else:  # an answer: the actor holding the request sends the vector as its answer
            client.send_multipart(protocol.encode_request(ID, "echo1", "add", 5.0, {"a": 1}))
            line.recv(actors["echo1"])
            actors["echo1"].send_multipart(frames)
            delivered = line.recv(client)
        assert delivered == frames
        with pytest.raises(BusError) as refused:
            receive(delivered)
        assert refused.value.code == code

    def test_valid_request_vectors_reach_the_actor_unchanged(self, line: Line) -> None:
        """Every valid REQUEST vector to an actor's service (bulk frames, bulk lifting depth,
        trailing elements...) is delivered frame for frame, and the actor's fast decoders give
        the vector's arguments."""
        requests = [
            v
            for v in (json.loads(p.read_text()) for p in sorted(VECTOR_DIR.glob("request_*.json")))
            if v["decoded"]["service"] != protocol.BROKER_SERVICE
        ]
        assert {v["name"] for v in requests} >= {"request_bulk_frame", "request_bulk_lifting_depth"}
        client = line.dealer()
        actors: dict[str, zmq.Socket[bytes]] = {}
        for vector in requests:
            service = vector["decoded"]["service"]
            if service not in actors:
                actors[service] = line.actor(service)
            actor = actors[service]
            frames = [bytes.fromhex(h) for h in vector["frames_hex"]]
            client.send_multipart(frames)
            delivered = line.recv(actor)
            assert delivered == frames, vector["name"]
            assert receive(delivered) == from_json(vector["decoded"]["args"]), vector["name"]
            actor.send_multipart(protocol.encode_reply(vector["decoded"]["msg_id"], None))
            assert line.header(client)[:3] == [1, 3, vector["decoded"]["msg_id"]]

    def test_answers_to_many_malformed_messages_come_in_order(self, line: Line) -> None:
        """Every broker-refused vector sent back to back gets its ERROR, in order, and the
        connection is served normally afterwards."""
        line.actor("echo1")  # the vectors' requests are to echo1: their ttl_s is checked
        client = line.dealer()
        refused = [v for v in SENDABLE if WHERE[v["name"]][0] == "broker"]
        for vector in refused:
            client.send_multipart([bytes.fromhex(h) for h in vector["frames_hex"]])
        codes = [error(line.header(client))[1] for _ in refused]
        assert codes == [v["error"]["code"] for v in refused]
        assert line.call(client, "ping")["pong"] is True


class TestRejectedInputLog:
    def test_a_flood_of_garbage_writes_a_bounded_log(self, ctx: Context) -> None:
        """2000 malformed messages: each is answered and counted, but the log gets the first
        reject_log_limit lines in full, then one summary line with the count, when the window
        closes (the broker's tick writes it)."""
        with structlog.testing.capture_logs() as logs:
            line = Line(ctx, SecurityConfig(reject_log_limit=5, reject_log_window_s=0.05))
            try:
                client = line.dealer()
                for _ in range(2000):
                    client.send(b"\xc1 not msgpack")
                line.pump(lambda: line.broker.dropped["malformed"] == 2000, "every drop counted")
                # The window is on the broker's clock: it closes at the tick, however long the
                # flood took in real time (under coverage, longer than the window).
                line.clock.advance(max(line.config.heartbeat_s, 0.06))
                line.broker.run_once(0)
            finally:
                line.close()
        rejected = [e for e in logs if e["event"] == "message_rejected"]
        summaries = [e for e in logs if e["event"] == "rejected_input_suppressed"]
        assert len(rejected) == 5 and rejected[0]["reason"] == "malformed"
        assert [s["suppressed"] for s in summaries] == [1995]
        assert summaries[0]["reasons"] == {"malformed": 1995}


class TestMalformedAndOversized:
    def test_request_over_max_message_bytes_is_too_large(self, ctx: Context) -> None:
        """A request whose frames add up to more than max_message_bytes: bad_request
        too_large with its size; the broker keeps routing smaller ones."""
        line = Line(ctx, max_message_bytes=200_000)
        try:
            actor = line.actor("echo1")
            client = line.dealer()
            frames = protocol.encode_request(ID, "echo1", "length", 5.0, {"data": bytes(300_000)})
            client.send_multipart(frames)
            header = line.header(client)
            size = sum(map(len, frames))
            assert error(header) == (
                ID,
                "bad_request",
                f"message of {size} bytes exceeds the broker limit of 200000",
            )
            assert header[5] == {"reason": "too_large", "size": size}
            small = line.request(client, "echo1", args={"data": bytes(1000)})
            assert unpack(line.recv(actor)[0])[2] == small
            assert line.broker.dropped["too_large"] == 1
        finally:
            line.close()

    def test_header_over_the_limit_is_header_too_large(self, line: Line) -> None:
        """A REQUEST header over MAX_HEADER_BYTES (data inline instead of in bulk frames)."""
        line.actor("echo1")
        client = line.dealer()
        frame = pack([1, 1, ID, "echo1", "length", 5.0, pack({"data": bytes(2**20)})])
        client.send_multipart([frame])
        header = line.header(client)
        assert error(header)[:2] == (ID, "bad_request")
        assert header[5] == {"reason": "header_too_large", "size": len(frame)}
        assert line.broker.dropped["header_too_large"] == 1

    def test_non_string_map_keys_in_ready_info_are_refused(self, line: Line) -> None:
        """READY info with an integer key is bad_request (map keys are str, §4): the name is
        not registered, and the same connection registers once its READY is well formed."""
        sock = line.dealer()
        sock.send_multipart([pack([1, 6, "odd-keys", {1: 2}])])
        assert error(line.header(sock))[:2] == ("", "bad_request")
        assert "odd-keys" not in line.broker.directory.by_name
        sock.send_multipart([pack([1, 6, "odd-keys", {"1": 2}])])
        assert unpack(line.recv(sock)[0]) == [1, 7]
        assert line.broker.directory.by_name["odd-keys"].state == UP

    def test_a_bug_while_handling_is_answered_and_survived(
        self, line: Line, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unexpected exception while handling a message is answered with bad_request
        (reason unhandled, counted under that key) and the broker goes on."""

        def broken(command: str, args: dict[str, Any]) -> Any:
            raise RuntimeError("simulated bug")

        monkeypatch.setattr(line.broker, "_internal_command", broken)
        client = line.dealer()
        client.send_multipart(protocol.encode_request(ID, "broker", "ping", 5.0, None))
        header = line.header(client)
        assert error(header) == (
            ID,
            "bad_request",
            "message could not be handled: simulated bug",
        )
        assert header[5] == {"reason": "unhandled"}
        monkeypatch.undo()
        assert line.call(client, "ping")["pong"] is True
        assert line.broker.dropped["unhandled"] == 1


# --- the broker's own commands ------------------------------------------------------------


class TestIntrospection:
    def test_ping(self, line: Line) -> None:
        result = line.call(line.dealer(), "ping")
        assert result["pong"] is True and result["version"] == 1
        assert abs(result["time"] - time.time()) < 60

    def test_services_sorted_with_state_and_load(self, line: Line) -> None:
        """services lists every name ever registered, sorted, up or down, with its load."""
        line.actor("zeta")
        alpha = line.actor("alpha")
        client = line.dealer()
        line.request(client, "alpha")
        line.recv(alpha)
        line.actor("mid").send_multipart(protocol.encode_disconnect("bye"))
        rows = line.call(client, "services")
        assert [(r["name"], r["state"], r["inflight"]) for r in rows] == [
            ("alpha", UP, 1),
            ("mid", DOWN, 0),
            ("zeta", UP, 0),
        ]
        assert rows[1]["reason"] == "actor disconnected"

    def test_describe_returns_the_ready_description(self, line: Line) -> None:
        """describe gives the services row plus doc and commands from the actor's READY."""
        commands = {"add": {"doc": "Add.", "args": [], "returns": "int"}}
        line.actor("echo1", {**INFO, "commands": commands})
        result = line.call(line.dealer(), "describe", {"service": "echo1"})
        assert (result["name"], result["doc"], result["commands"]) == (
            "echo1",
            "A fake actor.",
            commands,
        )

    def test_describe_of_a_down_service_without_a_description(self, line: Line) -> None:
        """An actor that sent neither doc nor commands is described with empty ones."""
        line.actor("bare", {"kind": "bare"})
        result = line.call(line.dealer(), "describe", {"service": "bare"})
        assert (result["doc"], result["commands"]) == ("", {})

    @pytest.mark.parametrize(
        ("args", "code", "details"),
        [
            ({}, "invalid_arguments", {"argument": "service", "problem": "missing"}),
            ({"service": 5}, "invalid_arguments", {"argument": "service", "problem": "type"}),
            ({"service": "x"}, "unknown_service", {}),
        ],
    )
    def test_describe_errors(
        self, line: Line, args: dict[str, Any], code: str, details: dict[str, Any]
    ) -> None:
        """describe's errors; invalid_arguments with the actors' details (§10)."""
        with pytest.raises(BusError) as info:
            line.call(line.dealer(), "describe", args)
        assert info.value.code == code
        assert info.value.details == ({**details, "expected": "str"} if details else {})

    def test_stats_counts_routes_and_drops(self, line: Line) -> None:
        """stats: routed by what, dropped by reason, in-flight and service counts."""
        actor = line.actor("echo1")
        line.actor("echo2").send_multipart(protocol.encode_disconnect("bye"))
        client = line.dealer()
        line.request(client, "nobody")
        line.header(client)
        msg_id = line.request(client, "echo1")
        line.recv(actor)
        client.send_multipart([b"\xc1"])
        line.header(client)
        stats = line.call(client, "stats")
        assert stats["routed"] == {"request": 1}
        assert stats["dropped"] == {"unknown_service": 1, "malformed": 1}
        assert (stats["inflight"], stats["services_up"], stats["services_known"]) == (1, 1, 2)
        assert stats["uptime_s"] >= 0 and "C proxy" in stats["events"]
        actor.send_multipart(protocol.encode_reply(msg_id, None))
        line.recv(client)
        assert line.call(client, "stats")["routed"] == {"request": 1, "reply": 1, "internal": 1}

    def test_probe_publishes_on_the_probe_topic(self, line: Line) -> None:
        """probe publishes an event on the given _probe. topic (used by subscribers to learn
        their subscription is active); other topics are invalid_arguments."""
        line.subscriber("_probe.")  # waits on probe itself
        with pytest.raises(BusError) as info:
            line.call(line.dealer(), "probe", {"topic": "presence.echo1"})
        assert info.value.code == "invalid_arguments"
        assert info.value.details == {
            "argument": "topic",
            "problem": "value",
            "expected": "str starting with '_probe.'",
        }

    def test_unknown_command_and_arguments_not_a_map(self, line: Line) -> None:
        client = line.dealer()
        with pytest.raises(BusError) as info:
            line.call(client, "reboot")
        assert (info.value.code, info.value.details) == ("unknown_command", {"command": "reboot"})
        for args in ([1, 2], [], 0):
            with pytest.raises(BusError) as info:
                line.call(client, "ping", args)
            assert (info.value.code, info.value.details) == (
                "invalid_arguments",
                {"argument": None, "problem": "type", "expected": "map"},
            ), args

    def test_hello_is_answered_with_the_common_version(self, line: Line) -> None:
        """HELLO listing version 1 gets version 1 and the broker's endpoints."""
        sock = line.dealer()
        sock.send_multipart(protocol.encode_hello([1, 7], {"client": "test"}))
        header = line.header(sock)
        assert header[:3] == [1, 10, [1]]
        assert header[3]["broker"] == "linebus" and header[3]["pid"] == os.getpid()
        assert header[3]["command"] == line.config.command

    def test_hello_without_a_common_version_is_unsupported_version(self, line: Line) -> None:
        sock = line.dealer()
        sock.send_multipart(protocol.encode_hello([7], {}))
        header = line.header(sock)
        assert header == [
            1,
            4,
            "",
            "unsupported_version",
            "no common protocol version: peer speaks [7], broker [1]",
            {"supported": [1]},
        ]
        assert line.broker.dropped["unsupported_version"] == 1


# --- shutdown -----------------------------------------------------------------------------


class TestStartFailure:
    @pytest.mark.parametrize("role", ["publish", "subscribe"])
    def test_an_event_socket_that_cannot_bind_is_named_and_nothing_stays_open(
        self, role: str
    ) -> None:
        """The event path's sockets opened before the refused bind are closed too: the broker's
        own context then ends (before, it waited for them forever and the process hung)."""
        with zmq.Context() as other, other.socket(zmq.ROUTER) as holder:
            holder.linger = 0
            taken = f"tcp://127.0.0.1:{holder.bind_to_random_port('tcp://127.0.0.1')}"
            endpoints = {"publish": "inproc://p-fail", "subscribe": "inproc://s-fail", role: taken}
            broker = Broker(BrokerConfig(command="inproc://c-fail", **endpoints))
            with pytest.raises(ConfigError, match=rf"cannot listen on {taken} \({role}\)"):
                broker.start()
            assert broker._ctx.closed


class TestShutdown:
    def test_close_tells_actors_and_fails_their_requests(self, ctx: Context) -> None:
        """close(): every up actor gets DISCONNECT "broker stopping" and the requests they held
        fail with unavailable."""
        line = Line(ctx)
        try:
            actor = line.actor("echo1")
            client = line.dealer()
            msg_id = line.request(client, "echo1")
            line.recv(actor)
            line.broker.close()
            assert actor.poll(WAIT_MS) and client.poll(WAIT_MS)
            assert unpack(actor.recv()) == [1, 8, "broker stopping"]
            assert error(unpack(client.recv())) == (
                msg_id,
                "unavailable",
                "service 'echo1' went down while handling the request: broker stopping",
            )
            assert line.broker.directory.by_name["echo1"].state == DOWN
            line.broker.close()  # a second close does nothing
        finally:
            line.close()

    def test_run_serves_until_stop_then_closes(self, ctx: Context) -> None:
        """run() in a thread of its own (real clock) serves requests; stop() from another
        thread makes it return after telling the actors the broker is stopping."""
        tag = os.urandom(4).hex()
        config = BrokerConfig(
            command=f"inproc://command-{tag}",
            publish=f"inproc://publish-{tag}",
            subscribe=f"inproc://subscribe-{tag}",
        )
        broker = Broker(config, ctx)
        broker.start()
        thread = threading.Thread(target=broker.run, name="test-broker")
        thread.start()
        actor = ctx.socket(zmq.DEALER)
        client = ctx.socket(zmq.DEALER)
        try:
            for sock in (actor, client):
                sock.linger = 0
                sock.connect(config.command)
            actor.send_multipart(protocol.encode_ready("echo1", INFO))
            assert actor.poll(WAIT_MS) and unpack(actor.recv()) == [1, 7]
            client.send_multipart(protocol.encode_request(ID, "broker", "ping", 5.0, None))
            assert client.poll(WAIT_MS) and unpack(client.recv())[:3] == [1, 3, ID]
            broker.stop()
            thread.join(WAIT_S)
            assert not thread.is_alive()
            assert actor.poll(WAIT_MS) and unpack(actor.recv()) == [1, 8, "broker stopping"]
        finally:
            broker.stop()
            thread.join(WAIT_S)
            actor.close(linger=0)
            client.close(linger=0)

    def test_run_binds_when_not_started_and_owns_its_context(self) -> None:
        """A broker given no context makes and terminates its own; run() starts it if needed."""
        tag = os.urandom(4).hex()
        broker = Broker(
            BrokerConfig(
                command=f"inproc://command-{tag}",
                publish=f"inproc://publish-{tag}",
                subscribe=f"inproc://subscribe-{tag}",
            )
        )
        broker.stop()  # run() binds, sees the stop at once, and closes
        broker.run()
        assert broker.endpoints["command"] == f"inproc://command-{tag}"
        assert broker._ctx.closed


class TestServicesComingBack:
    """A name the line runs, or any name just after the broker started, is answered
    ``unavailable`` (retryable) until an actor registers it, never ``unknown_service``: a client
    retrying as documented rides out a broker restart (PROTOCOL.md §6, §8)."""

    def test_a_name_of_the_config_is_unavailable_until_it_registers(self, ctx: Context) -> None:
        line = Line(ctx, expected=("echo1",))
        try:
            client = line.dealer()
            msg_id = line.request(client, "echo1")
            assert error(line.header(client)) == (
                msg_id,
                "unavailable",
                "service 'echo1' has not registered yet (the line runs it)",
            )
            with pytest.raises(BusError) as described:
                line.call(client, "describe", {"service": "echo1"})
            assert described.value.code == "unavailable" and described.value.retryable
            msg_id = line.request(client, "echo2")  # not in the config: unknown as ever
            assert error(line.header(client))[:2] == (msg_id, "unknown_service")
            line.clock.advance(3600)  # no grace window: the config's names stay expected
            msg_id = line.request(client, "echo1")
            assert error(line.header(client))[:2] == (msg_id, "unavailable")
            assert line.broker.dropped["unavailable"] == 2
            actor = line.actor("echo1")
            msg_id = line.request(client, "echo1")
            assert unpack(line.recv(actor)[0])[2] == msg_id  # registered: routed as usual
        finally:
            line.close()

    def test_any_name_is_unavailable_within_the_grace_window(self, ctx: Context) -> None:
        line = Line(ctx, registration_grace_s=3.0)
        try:
            client = line.dealer()
            line.clock.advance(2.9)
            msg_id = line.request(client, "nobody")
            assert error(line.header(client)) == (
                msg_id,
                "unavailable",
                "service 'nobody' has not registered yet (the broker started 2.9 s ago)",
            )
            line.clock.advance(0.1)
            msg_id = line.request(client, "nobody")
            assert error(line.header(client)) == (
                msg_id,
                "unknown_service",
                "no service named 'nobody' has registered",
            )
        finally:
            line.close()
