"""The broker under CURVE, in-process: one ``Broker`` with a ``[security]`` config on loopback TCP
(CURVE does not run over ``inproc://``) of a test's own ZeroMQ context, driven turn by turn with
``run_once`` (which also answers the ZAP handshakes), with raw sockets playing the actors, the
clients, the publishers and the subscribers, each with its own key.

What is checked: who gets in on each of the three sockets; the access list on requests
(``forbidden``, nothing reaching the actor), registrations (the hijack rule), events (forged
presence) and subscriptions; the audit log; reload and revocation; start-up refusals; the
probe storm a flood of refused handshakes used to cause.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from bus import protocol
from bus.broker import Broker
from bus.config import BrokerConfig, SecurityConfig
from bus.directory import DOWN, UP
from bus.errors import BusError, ConfigError, from_wire
from bus.security.audit import AuditRecord, query
from bus.security.curve import DOMAIN_COMMAND, DOMAIN_SUBSCRIBE, secure_client
from bus.security.errors import AclError, KeyFileError
from bus.security.keys import KeyPair, generate_keypair, load_keypair, load_public_key

WAIT_S = 5.0
VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors"
PEERS = ("alice", "bob", "echo1", "fr1")
INFO = {"kind": "fake", "pid": 4242, "host": "bench-7", "doc": "", "commands": {}}
FR_INFO = {**INFO, "privileged": ["FR_LoadFile", "FR_Run"]}

Context = zmq.Context[zmq.Socket[bytes]]


def unpack(frame: bytes) -> Any:
    return msgpack.unpackb(frame, strict_map_key=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SecureLine:
    """A started broker with CURVE on, its key files, and the peers a test connects.

    Keys: the broker's in ``broker/``; alice, bob, echo1 and fr1 known (``peers/``); mallory's
    key exists but the broker does not know it (``strangers/``). alice is the operator.
    """

    def __init__(
        self,
        ctx: Context,
        tmp: Path,
        acl: dict[str, Any] | None = None,
        *,
        config_path: Path | None = None,
        heartbeat_timeout_s: float = 1000.0,
        max_message_bytes: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.tmp = tmp
        self.peers_dir = tmp / "peers"
        if not (tmp / "broker" / "broker.key_secret").exists():
            generate_keypair(tmp / "broker", "broker")
            for name in PEERS:
                generate_keypair(self.peers_dir, name)
            generate_keypair(tmp / "strangers", "mallory")
        self.audit_path = tmp / "audit" / "audit.jsonl"
        self.security = SecurityConfig(
            key=tmp / "broker" / "broker.key_secret",
            keys=self.peers_dir,
            audit_log=self.audit_path,
            audit_fsync="never",
            acl={"operators": ["alice"]} if acl is None else acl,
        )
        self.config = BrokerConfig(
            command="tcp://127.0.0.1:*",
            publish="tcp://127.0.0.1:*",
            subscribe="tcp://127.0.0.1:*",
            heartbeat_s=1000.0,
            heartbeat_timeout_s=heartbeat_timeout_s,
        )
        if max_message_bytes is not None:
            self.config = replace(self.config, max_message_bytes=max_message_bytes)
        self.broker = Broker(
            self.config, ctx, clock=Clock(), security=self.security, config_path=config_path
        )
        self.broker.start()
        self.broker_public = load_public_key(file=tmp / "broker" / "broker.key")
        self.sockets: list[zmq.Socket[bytes]] = []
        self.monitors: dict[zmq.Socket[bytes], list[int]] = {}
        self.events: dict[int, list[int]] = {}  # id(socket) -> its monitor's events
        self._ids = itertools.count(1)

    def close(self) -> None:
        for sock in [*self.monitors, *self.sockets]:
            sock.close(linger=0)
        self.broker.close()

    # --- peers ----------------------------------------------------------------------------

    def keys(self, name: str) -> KeyPair:
        folder = self.tmp / ("strangers" if name == "mallory" else "peers")
        return load_keypair(file=folder / f"{name}.key_secret")

    def peer(
        self,
        kind: int,
        name: str | None,
        *,
        role: str = "command",
        server_public: bytes | None = None,
    ) -> zmq.Socket[bytes]:
        """A socket of ``kind`` with ``name``'s key (None: no CURVE), connected to ``role``."""
        sock: zmq.Socket[bytes] = self.ctx.socket(kind)
        sock.linger = 0
        sock.reconnect_ivl = 20
        if name is not None:
            secure_client(sock, self.keys(name), server_public or self.broker_public)
        monitor: zmq.Socket[bytes] = sock.get_monitor_socket()
        self.monitors[monitor] = self.events[id(sock)] = []
        self.sockets.append(sock)
        sock.connect(self.broker.endpoints[role])
        return sock

    def dealer(self, name: str | None) -> zmq.Socket[bytes]:
        return self.peer(zmq.DEALER, name)

    def actor(
        self, service: str, name: str | None = None, info: dict[str, Any] | None = None
    ) -> zmq.Socket[bytes]:
        """A DEALER with ``name``'s key (the service's own by default) registered as ``service``."""
        sock = self.dealer(name or service)
        sock.send_multipart(protocol.encode_ready(service, INFO if info is None else info))
        assert self.header(sock) == [1, 7]
        return sock

    # --- driving --------------------------------------------------------------------------

    def pump(
        self, until: Callable[[], Any], what: str, each: Callable[[], None] | None = None
    ) -> Any:
        end = time.monotonic() + WAIT_S
        while not (value := until()):
            if time.monotonic() > end:
                pytest.fail(f"timed out waiting for {what}")
            if each is not None:
                each()
            self.broker.run_once(0.005)
            self._read_monitors()
        return value

    def turns(self, n: int) -> None:
        """Run ``n`` broker turns (to show that something does *not* happen)."""
        for _ in range(n):
            self.broker.run_once(0.002)
            self._read_monitors()

    def _read_monitors(self) -> None:
        for monitor, seen in self.monitors.items():
            while monitor.poll(0):
                seen.append(int(parse_monitor_message(monitor.recv_multipart())["event"]))

    def saw(self, sock: zmq.Socket[bytes], event: int) -> bool:
        return event in self.events[id(sock)]

    def recv(self, sock: zmq.Socket[bytes]) -> list[bytes]:
        self.pump(lambda: sock.poll(0), "a message")
        return sock.recv_multipart()

    def header(self, sock: zmq.Socket[bytes]) -> list[Any]:
        return unpack(self.recv(sock)[0])  # type: ignore[no-any-return]

    def sync(self, sock: zmq.Socket[bytes]) -> list[list[Any]]:
        """Headers ``sock`` receives before the answer to a ping it sends now."""
        msg_id = f"sync-{next(self._ids)}"
        sock.send_multipart(protocol.encode_request(msg_id, "broker", "ping", 5.0, None))
        before = []
        while (header := self.header(sock))[:3] != [1, 3, msg_id]:
            before.append(header)
        return before

    def request(
        self, client: zmq.Socket[bytes], service: str, command: str, args: Any = None
    ) -> str:
        msg_id = f"req-{next(self._ids)}"
        client.send_multipart(protocol.encode_request(msg_id, service, command, 10.0, args))
        return msg_id

    def call(self, client: zmq.Socket[bytes], command: str, args: Any = None) -> Any:
        """Call a broker command; its result, or the ERROR raised as a BusError."""
        msg_id = self.request(client, "broker", command, args)
        frames = self.recv(client)
        header = unpack(frames[0])
        assert header[2] == msg_id
        if header[1] == 4:
            raise from_wire(header[3], header[4], header[5])
        return protocol.unpack_value(header[3], frames[1:])

    def audit(self) -> list[AuditRecord]:
        return list(query(self.audit_path))


def _saw(line: SecureLine, sock: zmq.Socket[bytes], event: int) -> Callable[[], bool]:
    return lambda: line.saw(sock, event)


@pytest.fixture
def ctx() -> Iterator[Context]:
    context: Context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def make_line(ctx: Context, tmp_path: Path) -> Iterator[Callable[..., SecureLine]]:
    made: list[SecureLine] = []

    def make(acl: dict[str, Any] | None = None, **kwargs: Any) -> SecureLine:
        made.append(SecureLine(ctx, tmp_path, acl, **kwargs))
        return made[-1]

    yield make
    for line in made:
        line.close()


@pytest.fixture
def line(make_line: Callable[..., SecureLine]) -> SecureLine:
    return make_line()


# --- who gets in ----------------------------------------------------------------------------


SOCKETS = [
    pytest.param(zmq.DEALER, "command", id="command"),
    pytest.param(zmq.PUB, "publish", id="publish"),
    pytest.param(zmq.SUB, "subscribe", id="subscribe"),
]


class TestHandshakes:
    def test_known_identity_is_served_and_named(self, line: SecureLine) -> None:
        """A known key gets in; the broker answers; stats show CURVE and the handshake."""
        alice = line.dealer("alice")
        assert line.call(alice, "ping")["pong"] is True
        security = line.call(alice, "stats")["security"]
        assert security["curve"] is True and security["identities"] == len(PEERS)
        assert security["handshakes"] == {"accepted": 1}

    @pytest.mark.parametrize(("kind", "role"), SOCKETS)
    def test_unknown_key_is_refused(self, line: SecureLine, kind: int, role: str) -> None:
        """A key the broker does not know: the handshake fails with AUTH on every socket."""
        sock = line.peer(kind, "mallory", role=role)
        line.pump(_saw(line, sock, zmq.EVENT_HANDSHAKE_FAILED_AUTH), "the refusal")
        assert line.broker._zap is not None
        assert line.broker._zap.counts["unknown key"] == 1

    @pytest.mark.parametrize(("kind", "role"), SOCKETS)
    def test_no_key_is_refused(self, line: SecureLine, kind: int, role: str) -> None:
        """A plaintext peer never gets through the CURVE greeting."""
        sock = line.peer(kind, None, role=role)
        line.pump(_saw(line, sock, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL), "the refusal")

    @pytest.mark.parametrize(("kind", "role"), SOCKETS)
    def test_wrong_broker_key_fails(self, line: SecureLine, kind: int, role: str) -> None:
        """A client that expects another broker key never completes a handshake."""
        other = zmq.curve_keypair()[0]
        sock = line.peer(kind, "alice", role=role, server_public=other)
        line.pump(_saw(line, sock, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL), "the failure")
        assert not line.saw(sock, zmq.EVENT_HANDSHAKE_SUCCEEDED)

    def test_refused_handshakes_make_no_probe_storm(self, line: SecureLine) -> None:
        """Refused connections are not taken for actors' closed connections: the broker sends
        the actors no probe for them (it used to probe every actor per refused attempt), and
        still probes at once when a real connection closes."""
        actor = line.actor("echo1")
        for _ in range(20):
            line.peer(zmq.DEALER, "mallory")
        zap = line.broker._zap
        assert zap is not None
        line.pump(lambda: zap.counts["unknown key"] == 20, "20 refusals")
        line.turns(50)
        assert not actor.poll(0)
        client = line.dealer("bob")
        assert line.call(client, "ping")["pong"] is True
        client.close(linger=0)
        assert unpack(line.recv(actor)[0]) == [1, 7]  # the probe of a real disconnect


# --- calls ----------------------------------------------------------------------------------


class TestCalls:
    def test_forbidden_privileged_call_never_reaches_the_actor(self, line: SecureLine) -> None:
        """A privileged command (declared in READY) called by a non-operator: ERROR forbidden
        naming identity and command, nothing delivered, a forbidden audit record."""
        fr1 = line.actor("fr1", info=FR_INFO)
        bob = line.dealer("bob")
        msg_id = line.request(bob, "fr1", "FR_Run", {"project": "p"})
        header = line.header(bob)
        assert header[:4] == [1, 4, msg_id, "forbidden"]
        assert "'bob'" in header[4] and "fr1.FR_Run" in header[4]
        assert header[5] == {
            "identity": "bob",
            "service": "fr1",
            "command": "FR_Run",
            "rule": "privileged",
        }
        assert line.sync(fr1) == []
        assert line.broker.dropped["forbidden"] == 1
        (record,) = line.audit()
        assert (record.identity, record.service, record.command, record.outcome) == (
            "bob",
            "fr1",
            "FR_Run",
            "forbidden",
        )

    def test_unprivileged_call_by_anyone_known(self, line: SecureLine) -> None:
        """Read commands are everyone's, and not audited."""
        fr1 = line.actor("fr1", info=FR_INFO)
        bob = line.dealer("bob")
        sent = protocol.encode_request("r1", "fr1", "FR_GetInfo", 5.0, None)
        bob.send_multipart(sent)
        assert line.recv(fr1) == sent
        assert line.audit() == []

    def test_operator_privileged_call_is_audited_with_redacted_args(self, line: SecureLine) -> None:
        """An operator's privileged call goes through; the audit record is written when the
        reply passes, with secrets and bulk data left out of the arguments."""
        fr1 = line.actor("fr1", info=FR_INFO)
        alice = line.dealer("alice")
        args = {
            "path": "/fw.bin",
            "password": "hunter2",
            "data": os.urandom(protocol.BULK_THRESHOLD),
        }
        sent = protocol.encode_request("r1", "fr1", "FR_LoadFile", 5.0, args)
        alice.send_multipart(sent)
        assert line.recv(fr1) == sent
        assert line.audit() == []  # not yet: when the call ends
        fr1.send_multipart(protocol.encode_reply("r1", True))
        line.recv(alice)
        (record,) = line.audit()
        assert (record.identity, record.command, record.outcome) == ("alice", "FR_LoadFile", "ok")
        assert record.args["password"] == "***" and record.args["path"] == "/fw.bin"
        assert "hunter2" not in line.audit_path.read_text()
        assert record.args["<bulk>"] == f"<{protocol.BULK_THRESHOLD} bytes>"

    def test_audited_call_outcomes(self, line: SecureLine) -> None:
        """An actor's ERROR is the outcome's code; an actor going down makes it unavailable."""
        fr1 = line.actor("fr1", info=FR_INFO)
        alice = line.dealer("alice")
        first = line.request(alice, "fr1", "FR_Run")
        line.recv(fr1)
        fr1.send_multipart(protocol.encode_error(first, "device_fault", "jammed"))
        line.recv(alice)
        line.request(alice, "fr1", "FR_Run")
        line.recv(fr1)
        fr1.send_multipart(protocol.encode_disconnect("bye"))
        assert error_code(line.header(alice)) == "unavailable"
        assert [r.outcome for r in line.audit()] == ["device_fault", "unavailable"]

    def test_failing_audit_log_refuses_privileged_calls(self, line: SecureLine) -> None:
        """Once a record cannot be written, privileged calls are refused with storage_error
        (nothing reaches the actor) until one can; unprivileged calls go on."""
        fr1 = line.actor("fr1", info=FR_INFO)
        alice = line.dealer("alice")
        assert line.broker._audit is not None
        line.broker._audit.close()  # every record now fails
        first = line.request(alice, "fr1", "FR_Run")
        line.recv(fr1)
        fr1.send_multipart(protocol.encode_reply(first, 1))
        line.recv(alice)  # its record failed: from now on, refused
        line.request(alice, "fr1", "FR_Run")
        assert error_code(line.header(alice)) == "storage_error"
        assert line.sync(fr1) == []
        line.request(alice, "fr1", "FR_GetInfo")
        line.recv(fr1)
        assert line.call(alice, "stats")["security"]["audit_failing"] is True

    def test_call_rules_and_config_privileged(self, make_line: Callable[..., SecureLine]) -> None:
        """Identity call rules with "!" entries, and commands the config makes privileged."""
        line = make_line(
            {
                "operators": ["alice"],
                "privileged": ["echo1.reset"],
                "identity": {"bob": {"call": ["*.*", "!fr1.*"]}},
            }
        )
        line.actor("fr1")
        line.actor("echo1")
        bob = line.dealer("bob")
        line.request(bob, "fr1", "info")
        assert error_code(line.header(bob), rule="call") == "forbidden"
        line.request(bob, "echo1", "reset")
        assert error_code(line.header(bob), rule="privileged") == "forbidden"
        with pytest.raises(BusError) as refused:
            line.call(bob, "reload")
        assert refused.value.code == "forbidden"

    def test_frame_at_the_size_limit_is_answered_too_large(
        self, make_line: Callable[..., SecureLine]
    ) -> None:
        """A frame of exactly the ROUTER's limit (max_message_bytes + MAX_HEADER_BYTES) gets
        bad_request/too_large as in plaintext: the limit allows for CURVE's per-frame envelope,
        which would otherwise make libzmq cut the connection with no answer."""
        line = make_line(max_message_bytes=1024)
        alice = line.dealer("alice")
        data = bytes(1024 + protocol.MAX_HEADER_BYTES)
        alice.send_multipart(protocol.encode_request("big", "echo1", "length", 5.0, {"data": data}))
        header = line.header(alice)
        assert header[:4] == [1, 4, "big", "bad_request"]
        assert header[5]["reason"] == "too_large" and header[5]["size"] > len(data)
        assert line.call(alice, "ping")["pong"] is True

    def test_unknown_service_after_the_access_check(self, line: SecureLine) -> None:
        """A call the rules allow to a service nobody registered: unknown_service as ever."""
        bob = line.dealer("bob")
        line.request(bob, "nobody", "x")
        assert error_code(line.header(bob)) == "unknown_service"


def error_code(header: list[Any], *, rule: str | None = None) -> str:
    assert header[1] == 4, header
    if rule is not None:
        assert header[5]["rule"] == rule, header
    return str(header[3])


class TestVectors:
    def test_refusals_are_the_golden_vectors(self, make_line: Callable[..., SecureLine]) -> None:
        """The broker's forbidden ERRORs (a call, a READY) are byte for byte the vectors
        error_forbidden and error_forbidden_ready of docs/PROTOCOL.md §18."""
        line = make_line({"operators": ["alice"], "identity": {"bob": {"register": ["fr*"]}}})
        line.actor("fr1", info=FR_INFO)
        bob = line.dealer("bob")
        bob.send_multipart(protocol.encode_request("3f2a9c1b7d4e-1", "fr1", "FR_Run", 5.0, None))
        assert line.recv(bob) == vector_frames("error_forbidden")
        bob.send_multipart(protocol.encode_ready("fr1", INFO))
        assert line.recv(bob) == vector_frames("error_forbidden_ready")

    def test_bulk_frames_after_the_wrong_kind_are_refused(
        self, make_line: Callable[..., SecureLine]
    ) -> None:
        """The secured path (READY and REQUEST are handled apart, for the access list) refuses
        bulk frames after a kind without them as the plain one does (§3): the golden CANCEL
        vector is answered bad_request with its msg_id, a READY with bulk frames registers
        nothing."""
        line = make_line({"operators": ["alice"]})
        alice = line.dealer("alice")
        alice.send_multipart(vector_frames("invalid_cancel_with_bulk_frame"))
        header = line.header(alice)
        assert header[:4] == [1, 4, "3f2a9c1b7d4e-1", "bad_request"]
        assert header[4] == "malformed message: CANCEL carries no bulk frames, got 1"
        fr1 = line.dealer("fr1")
        fr1.send_multipart([*protocol.encode_ready("fr1", FR_INFO), b"xx"])
        assert line.header(fr1)[:4] == [1, 4, "", "bad_request"]
        assert "fr1" not in line.broker.directory.by_name


def vector_frames(name: str) -> list[bytes]:
    vector = json.loads((VECTOR_DIR / f"{name}.json").read_text())
    return [bytes.fromhex(h) for h in vector["frames_hex"]]


# --- registrations ---------------------------------------------------------------------------


class TestRegistration:
    def test_identity_registers_its_own_name_only(self, line: SecureLine) -> None:
        """By default an identity registers the service of its own name; another name is
        refused with ERROR forbidden (msg_id "") and no acknowledgement."""
        bob = line.dealer("bob")
        bob.send_multipart(protocol.encode_ready("fr1", INFO))
        header = line.header(bob)
        assert header[:4] == [1, 4, "", "forbidden"]
        assert header[5] == {"identity": "bob", "service": "fr1", "rule": "register"}
        assert "fr1" not in line.broker.directory.by_name

    def test_hijack_is_refused_and_the_live_actor_keeps_the_name(
        self, make_line: Callable[..., SecureLine]
    ) -> None:
        """Even when the rules let another identity register the name, a READY for the live
        name from that identity is refused; requests keep going to the live actor. Once the
        live actor is gone, the other identity may take the name."""
        line = make_line({"identity": {"bob": {"register": ["echo*"]}}})
        echo = line.actor("echo1")
        bob = line.dealer("bob")
        bob.send_multipart(protocol.encode_ready("echo1", INFO))
        header = line.header(bob)
        assert header[3] == "forbidden" and "up under identity 'echo1'" in header[4]
        client = line.dealer("alice")
        sent = protocol.encode_request("r1", "echo1", "work", 5.0, None)
        client.send_multipart(sent)
        assert line.recv(echo) == sent
        assert line.sync(bob) == []
        records = line.audit()
        assert [(r.identity, r.service, r.command, r.outcome) for r in records] == [
            ("bob", "echo1", "READY", "forbidden")
        ]
        echo.send_multipart(protocol.encode_disconnect("bye"))
        line.sync(client)
        bob.send_multipart(protocol.encode_ready("echo1", INFO))
        assert line.header(bob) == [1, 7]
        assert line.broker.directory.by_name["echo1"].owner == "bob"

    def test_same_identity_restart_replaces_as_before(self, line: SecureLine) -> None:
        """A second connection of the same identity (a restarted actor) takes the name over."""
        old = line.actor("echo1")
        line.actor("echo1")
        assert unpack(line.recv(old)[0])[:2] == [1, 8]  # DISCONNECT "replaced ..."

    def test_privileged_commands_come_from_ready(self, line: SecureLine) -> None:
        """READY info ``privileged`` (a list of names) is kept on the service's entry."""
        line.actor("fr1", info=FR_INFO)
        assert line.broker.directory.by_name["fr1"].privileged == {"FR_LoadFile", "FR_Run"}


# --- events and subscriptions -----------------------------------------------------------------


def event(topic: str, src: str = "x", seq: int = 1) -> bytes:
    return protocol.encode_event(topic, src, 7, seq, 1.0, {"n": seq})


class TestEvents:
    def _subscribed(self, line: SecureLine, name: str, prefix: str = "") -> zmq.Socket[bytes]:
        sub = line.peer(zmq.SUB, name, role="subscribe")
        sub.subscribe(prefix)
        return sub

    def _flowing(
        self, line: SecureLine, pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], topic: str
    ) -> None:
        """Publish ``topic`` until ``sub`` receives one (subscriptions take a moment to reach
        the publisher), then drain ``sub``."""
        line.pump(lambda: sub.poll(0), f"{topic} flowing", each=lambda: pub.send(event(topic)))
        while sub.poll(50):
            sub.recv()

    def test_forged_presence_and_foreign_topics_are_dropped(self, line: SecureLine) -> None:
        """An actor publishes under its own name only; presence.* is the broker's alone."""
        sub = self._subscribed(line, "alice")
        pub = line.peer(zmq.PUB, "echo1", role="publish")
        self._flowing(line, pub, sub, "echo1.ok")
        forged = protocol.encode_event(
            "presence.fr1", "broker", 1, 1, 1.0, {"service": "fr1", "state": "down"}
        )
        pub.send(forged)
        pub.send(event("fr1.temperature"))
        pub.send(event("echo1.marker"))
        line.pump(lambda: sub.poll(0), "the marker")
        assert protocol.decode_event(sub.recv()).topic == "echo1.marker"
        stats = line.call(line.dealer("alice"), "stats")
        assert stats["events"]["forbidden_publish"] == 2

    def test_broker_events_still_reach_subscribers(self, line: SecureLine) -> None:
        """The broker's own events (probes, presence) take their own path into the loop,
        never checked against anyone's publish rules."""
        sub = self._subscribed(line, "bob", "presence.")
        sub.subscribe("_probe.t1")
        bob = line.dealer("bob")
        line.pump(
            lambda: sub.poll(0),
            "the probe",
            each=lambda: line.call(bob, "probe", {"topic": "_probe.t1"}),
        )
        while sub.poll(50):
            assert protocol.decode_event(sub.recv()).topic == "_probe.t1"
        line.actor("echo1")
        line.pump(lambda: sub.poll(0), "presence")
        presence = protocol.decode_event(sub.recv())
        assert (presence.topic, presence.src, presence.data["state"]) == (
            "presence.echo1",
            "broker",
            UP,
        )

    def test_subscription_rules(self, make_line: Callable[..., SecureLine]) -> None:
        """A subscription the rules refuse gets nothing; an allowed one of the same
        subscriber works; and a refused subscriber going away does not take the topic away
        from an allowed one (the publisher keeps sending it)."""
        line = make_line({"identity": {"bob": {"subscribe": ["echo1."]}}})
        pub = line.peer(zmq.PUB, "fr1", role="publish")
        alice = self._subscribed(line, "alice", "fr1.")
        self._flowing(line, pub, alice, "fr1.t")
        bob = self._subscribed(line, "bob", "fr1.")
        bob.subscribe("echo1.")
        line.pump(lambda: line.broker._events.forbidden_subscribe == 1, "the refusal")
        pub.send(event("fr1.t", seq=2))
        line.pump(lambda: alice.poll(0), "alice's event")
        assert not bob.poll(100)
        bob.close(linger=0)
        line.sockets.remove(bob)
        line.turns(20)
        for seq in range(3, 8):
            pub.send(event("fr1.t", seq=seq))
        seen = []
        line.pump(
            lambda: (alice.poll(10) and seen.append(alice.recv())) or len(seen) >= 5,
            "alice's events after bob left",
        )

    def test_c_proxy_when_the_acl_checks_nothing(
        self, make_line: Callable[..., SecureLine]
    ) -> None:
        """check_publish = false and no subscribe rule: the C proxy forwards events."""
        line = make_line({"check_publish": False})
        assert not line.broker._events.python_loop
        sub = self._subscribed(line, "alice")
        pub = line.peer(zmq.PUB, "echo1", role="publish")
        self._flowing(line, pub, sub, "anything.at.all")
        alice = line.dealer("alice")
        assert isinstance(line.call(alice, "stats")["events"], str)
        # The broker's own events reach the secured XSUB over inproc, where CURVE does not run.
        line.pump(
            lambda: sub.poll(0) and protocol.decode_event(sub.recv()).topic == "_probe.c",
            "the broker's probe event",
            each=lambda: line.call(alice, "probe", {"topic": "_probe.c"}),
        )


# --- reload and revocation --------------------------------------------------------------------


class TestReload:
    def test_removed_key_loses_access_on_open_connections(self, line: SecureLine) -> None:
        """Removing bob's key and reloading: bob's open connection is refused at once
        (unknown identity), and the actor whose key was removed goes down."""
        line.actor("echo1")
        bob = line.dealer("bob")
        assert line.call(bob, "ping")["pong"] is True
        (line.peers_dir / "bob.key").unlink()
        (line.peers_dir / "echo1.key").unlink()
        alice = line.dealer("alice")
        result = line.call(alice, "reload")
        assert set(result["revoked"]) == {"bob", "echo1"} and result["dropped"] == []
        with pytest.raises(BusError) as refused:
            line.call(bob, "ping")
        assert refused.value.code == "forbidden"
        assert refused.value.details["rule"] == "unknown_identity"
        entry = line.broker.directory.by_name["echo1"]
        assert entry.state == DOWN and "revoked" in entry.down_reason
        assert line.audit()[-1].command == "reload" and line.audit()[-1].identity == "alice"

    def test_new_connection_of_a_removed_key_is_refused(self, line: SecureLine) -> None:
        """After the reload, bob's key no longer gets through the handshake."""
        (line.peers_dir / "bob.key").unlink()
        line.broker.reload()
        bob = line.dealer("bob")
        line.pump(_saw(line, bob, zmq.EVENT_HANDSHAKE_FAILED_AUTH), "the refusal")

    def test_rotated_key_drops_the_command_socket(self, line: SecureLine) -> None:
        """A key replaced by a new one: the old key's connection cannot be told apart by
        name, so the command socket is reset; the old key is refused on reconnection, the new
        one gets in, and the actors come back by registering again."""
        old = line.dealer("bob")
        assert line.call(old, "ping")["pong"] is True
        echo = line.actor("echo1")
        generate_keypair(line.peers_dir, "bob", overwrite=True)
        result = line.broker.reload()
        assert result["dropped"] == [DOMAIN_COMMAND]
        assert line.broker.directory.by_name["echo1"].state == DOWN
        line.pump(_saw(line, old, zmq.EVENT_HANDSHAKE_FAILED_AUTH), "the old key refused")
        new = line.dealer("bob")
        assert line.call(new, "ping")["pong"] is True
        echo.send_multipart(protocol.encode_heartbeat())
        line.pump(lambda: echo.poll(0), "the reconnection", each=lambda: None)
        assert unpack(echo.recv())[:2] == [1, 8]  # not registered: send READY

    def test_revoked_subscriber_is_cut_off(self, line: SecureLine) -> None:
        """A subscriber whose key is removed stops receiving events (the XPUB is reset; the
        others reconnect and resubscribe)."""
        pub = line.peer(zmq.PUB, "echo1", role="publish")
        bob = TestEvents()._subscribed(line, "bob")
        alice = TestEvents()._subscribed(line, "alice")
        TestEvents()._flowing(line, pub, bob, "echo1.t")
        TestEvents()._flowing(line, pub, alice, "echo1.t")
        (line.peers_dir / "bob.key").unlink()
        result = line.broker.reload()
        assert DOMAIN_SUBSCRIBE in result["dropped"]
        line.pump(
            lambda: alice.poll(0),
            "alice back",
            each=lambda: (pub.send(event("echo1.t")), bob.poll(0) and bob.recv_multipart()),
        )
        line.pump(lambda: line.saw(bob, zmq.EVENT_HANDSHAKE_FAILED_AUTH), "bob refused")
        while bob.poll(0):
            bob.recv()
        pub.send(event("echo1.after"))
        line.pump(
            lambda: alice.poll(0) and protocol.decode_event(alice.recv()).topic == "echo1.after",
            "alice",
        )
        assert not bob.poll(100)

    def test_reload_from_the_config_file(
        self, make_line: Callable[..., SecureLine], tmp_path: Path
    ) -> None:
        """With a config path, reload reads [security] again: new operators apply at once."""
        config = tmp_path / "line.toml"
        keys = 'key = "broker/broker.key_secret"\nkeys = "peers"\naudit_log = "audit/audit.jsonl"\n'
        config.write_text(f'[security]\n{keys}[security.acl]\noperators = ["alice"]\n')
        line = make_line(config_path=config)
        fr1 = line.actor("fr1", info=FR_INFO)
        bob = line.dealer("bob")
        line.request(bob, "fr1", "FR_Run")
        assert error_code(line.header(bob)) == "forbidden"
        config.write_text(f'[security]\n{keys}[security.acl]\noperators = ["alice", "bob"]\n')
        line.broker.request_reload()  # what SIGHUP does
        line.turns(1)
        msg_id = line.request(bob, "fr1", "FR_Run")
        assert unpack(line.recv(fr1)[0])[:5] == [1, 1, msg_id, "fr1", "FR_Run"]
        assert line.audit()[-1].identity == "SIGHUP"

    def test_failed_reload_changes_nothing(
        self, make_line: Callable[..., SecureLine], tmp_path: Path
    ) -> None:
        """A config that no longer parses, or a change that needs a restart: an error, and the
        keys and access list in force stay."""
        config = tmp_path / "line.toml"
        keys = 'key = "broker/broker.key_secret"\nkeys = "peers"\n'
        config.write_text(f"[security]\n{keys}")
        line = make_line(config_path=config)
        before = line.broker._acl
        config.write_text(f'[security]\n{keys}[security.acl]\noperators = "alice"\n')
        with pytest.raises(AclError):
            line.broker.reload()
        config.write_text(f'[security]\n{keys}[security.acl.default]\nsubscribe = ["a."]\n')
        with pytest.raises(ConfigError, match="restart"):
            line.broker.reload()
        config.write_text('[security]\nkey_env = "X"\n')
        with pytest.raises(ConfigError, match="restart"):
            line.broker.reload()
        assert line.broker._acl is before


# --- start-up ---------------------------------------------------------------------------------


class TestStartup:
    def test_exposed_bind_without_curve_refuses_to_start(self, ctx: Context) -> None:
        """Safe by default: a broker bound beyond loopback without CURVE does not start,
        unless insecure = true."""
        config = BrokerConfig(
            command="tcp://0.0.0.0:*", publish="inproc://p", subscribe="inproc://s"
        )
        with pytest.raises(ConfigError, match="insecure = true"):
            Broker(config, ctx).start()
        broker = Broker(config, ctx, security=SecurityConfig(insecure=True))
        broker.start()
        broker.close()

    def test_missing_key_file_fails_before_binding(self, ctx: Context, tmp_path: Path) -> None:
        """A configured key that is missing: KeyFileError, and nothing was bound."""
        security = SecurityConfig(key=tmp_path / "nope.key_secret", keys=tmp_path)
        config = BrokerConfig(
            command="tcp://127.0.0.1:*", publish="inproc://p2", subscribe="inproc://s2"
        )
        broker = Broker(config, ctx, security=security)
        with pytest.raises(KeyFileError):
            broker.start()
        assert broker.endpoints == {}

    def test_failed_bind_releases_what_start_opened(self, tmp_path: Path) -> None:
        """The command port is taken: start() raises, and closes the ZAP handler, the audit
        log and its own context (no socket left for the garbage collector to warn about)."""
        generate_keypair(tmp_path / "keys", "broker")
        taken: zmq.Context[Any] = zmq.Context()
        holder = taken.socket(zmq.ROUTER)
        try:
            port = holder.bind_to_random_port("tcp://127.0.0.1")
            security = SecurityConfig(
                key=tmp_path / "keys" / "broker.key_secret",
                keys=tmp_path / "keys",
                audit_log=tmp_path / "audit.jsonl",
            )
            config = BrokerConfig(
                command=f"tcp://127.0.0.1:{port}", publish="inproc://p3", subscribe="inproc://s3"
            )
            broker = Broker(config, security=security)
            with pytest.raises(ConfigError, match=r"cannot listen on .*Address already in use"):
                broker.start()
            assert broker._ctx.closed
            gc.collect()
        finally:
            holder.close(linger=0)
            taken.term()


# --- device lookup ----------------------------------------------------------------------------


def test_lookup_shows_a_caller_only_the_services_it_may_call(
    make_line: Callable[..., SecureLine],
) -> None:
    """``lookup`` through the secured broker applies the caller's own access list (the rules
    themselves: tests/unit/test_broker_lookup.py)."""
    line = make_line({"operators": ["alice"], "identity": {"bob": {"call": ["*.*", "!fr1.*"]}}})
    info = {**INFO, "commands": {"FR_GetInfo": {}}, "devices": ["10.0.0.40:1234"]}
    line.actor("fr1", info=info)
    query = {"address": "10.0.0.40"}
    assert [row["name"] for row in line.call(line.dealer("alice"), "lookup", query)] == ["fr1"]
    assert line.call(line.dealer("bob"), "lookup", query) == []
