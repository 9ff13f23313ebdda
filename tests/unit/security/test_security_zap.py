"""The ZAP handler, with real CURVE sockets on loopback: who gets in, under which name, and
what a reload takes away.

Every wait ends on an event (a message, a monitor event), never on a fixed sleep; the deadline
is only there to fail a broken test quickly.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from bus.security.curve import (
    DOMAIN_COMMAND,
    DOMAIN_PUBLISH,
    DOMAIN_SUBSCRIBE,
    secure_client,
    secure_server,
)
from bus.security.keyring import Keyring
from bus.security.keys import KeyPair
from bus.security.zap import Revocation, ZapHandler, drop_connections

DEADLINE_S = 3.0


def keypair() -> KeyPair:
    return KeyPair(*zmq.curve_keypair())


class Harness:
    """A broker-like set of secured sockets served by one poll loop, like the broker's."""

    def __init__(self, ctx: zmq.Context[Any], keyring: Keyring, *, start: bool = True) -> None:
        self.ctx = ctx
        self.server = keypair()
        self.refusals: list[tuple[str, str, str]] = []
        self.zap = ZapHandler(ctx, keyring, on_refused=lambda *args: self.refusals.append(args))
        if start:
            self.zap.start()
        self.router = self._bound(zmq.ROUTER, DOMAIN_COMMAND)
        self.xpub = self._bound(zmq.XPUB, DOMAIN_SUBSCRIBE)
        self.received: list[tuple[str, bytes, str]] = []  # (socket, payload, User-Id)
        self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, duplicates included
        self.events: dict[int, list[int]] = {}  # id(client) -> monitor events
        self._monitors: dict[zmq.Socket[Any], int] = {}
        self._clients: list[zmq.Socket[Any]] = []
        self.delivered: list[tuple[int, bytes]] = []  # (id(client), event) received by clients

    def close(self) -> None:
        """Close every socket (an unclosed socket is a ResourceWarning, an error here)."""
        for sock in (*self._clients, *self._monitors, self.router, self.xpub):
            sock.close(linger=0)
        self.zap.close()

    def _bound(self, kind: int, domain: str) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.ctx.socket(kind)
        sock.linger = 0
        secure_server(sock, self.server, domain)
        sock.bind("tcp://127.0.0.1:*")
        return sock

    def endpoint(self, sock: zmq.Socket[Any]) -> str:
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def client(
        self, kind: int, keys: KeyPair | None, *, server_public: bytes | None = None
    ) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.ctx.socket(kind)
        sock.linger = 0
        sock.reconnect_ivl = 20
        if keys is not None:
            secure_client(sock, keys, server_public or self.server.public)
        self._clients.append(sock)
        monitor = sock.get_monitor_socket()
        self._monitors[monitor] = id(sock)
        self.events[id(sock)] = []
        sock.connect(self.endpoint(self.router if kind == zmq.DEALER else self.xpub))
        return sock

    def pump(self, until: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
        """Serve the ZAP socket, read the server sockets and the monitors until ``until()``."""
        poller = zmq.Poller()
        # Clients are polled too: a SUB resends its subscriptions after a reconnection only
        # when its owner calls into it, as a real subscriber does all the time.
        for sock in (self.router, self.xpub, *self._monitors, *self._clients):
            poller.register(sock, zmq.POLLIN)
        if self.zap._socket is not None:
            poller.register(self.zap.socket, zmq.POLLIN)
        end = time.monotonic() + timeout
        while not until():
            if time.monotonic() > end:
                raise AssertionError(f"timed out; received {self.received}, events {self.events}")
            for sock, _ in poller.poll(10):
                if self.zap._socket is not None and sock is self.zap.socket:
                    self.zap.handle_pending()
                elif sock is self.router or sock is self.xpub:
                    frames = sock.recv_multipart(copy=False)
                    name = "router" if sock is self.router else "xpub"
                    try:
                        user = str(frames[-1].get("User-Id"))
                    except zmq.ZMQError:  # XPUB's unsubscriptions for a gone peer: no metadata
                        user = ""
                    self.received.append((name, frames[-1].bytes, user))
                elif sock in self._monitors:
                    event = parse_monitor_message(sock.recv_multipart())
                    self.events[self._monitors[sock]].append(int(event["event"]))
                else:
                    self.delivered.append((id(sock), sock.recv()))

    def saw(self, client: zmq.Socket[Any], event: int) -> Callable[[], bool]:
        return lambda: event in self.events[id(client)]

    def got(self, payload: bytes) -> Callable[[], bool]:
        return lambda: any(p == payload for _, p, _ in self.received)

    def user_of(self, payload: bytes) -> str:
        return next(user for _, p, user in self.received if p == payload)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def alice() -> KeyPair:
    return keypair()


@pytest.fixture
def bob() -> KeyPair:
    return keypair()


@pytest.fixture
def make_line(ctx: zmq.Context[Any]) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(keyring: Keyring, *, start: bool = True) -> Harness:
        made.append(Harness(ctx, keyring, start=start))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def line(make_line: Callable[..., Harness], alice: KeyPair, bob: KeyPair) -> Harness:
    return make_line(Keyring({"alice": alice.public, "bob": bob.public}))


class TestHandshakes:
    def test_known_keys_get_their_identity_on_every_message(
        self, line: Harness, alice: KeyPair, bob: KeyPair
    ) -> None:
        a = line.client(zmq.DEALER, alice)
        b = line.client(zmq.DEALER, bob)
        for i in range(3):
            a.send(b"a%d" % i)
            b.send(b"b%d" % i)
        line.pump(lambda: len(line.received) == 6)
        assert sorted(line.received) == sorted(
            [("router", b"a%d" % i, "alice") for i in range(3)]
            + [("router", b"b%d" % i, "bob") for i in range(3)]
        )
        assert line.zap.counts["accepted"] == 2
        assert line.zap.accepted(DOMAIN_COMMAND) == {"alice": 1, "bob": 1}

    def test_subscriptions_carry_the_subscriber_identity(
        self, line: Harness, alice: KeyPair
    ) -> None:
        sub = line.client(zmq.SUB, alice)
        sub.subscribe(b"line1.")
        line.pump(line.got(b"\x01line1."))
        assert line.user_of(b"\x01line1.") == "alice"
        assert line.zap.accepted(DOMAIN_SUBSCRIBE) == {"alice": 1}
        assert line.zap.accepted(DOMAIN_COMMAND) == {}

    def test_unknown_key_is_refused(self, line: Harness) -> None:
        stranger = line.client(zmq.DEALER, keypair())
        stranger.send(b"let me in")
        line.pump(line.saw(stranger, zmq.EVENT_HANDSHAKE_FAILED_AUTH))
        assert line.received == []
        assert not line.router.poll(0)
        assert line.zap.counts["unknown key"] == 1
        assert line.refusals == [(DOMAIN_COMMAND, "127.0.0.1", "unknown key")]

    def test_known_public_key_with_another_secret_is_refused(
        self, line: Harness, alice: KeyPair
    ) -> None:
        """Claiming alice's public key without her secret fails the CURVE handshake itself."""
        impostor = keypair()
        forged = line.client(zmq.DEALER, KeyPair(alice.public, impostor.secret))
        forged.send(b"i am alice")
        line.pump(line.saw(forged, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL))
        assert line.received == []
        assert line.zap.counts["accepted"] == 0

    def test_wrong_server_key_never_connects(self, line: Harness, alice: KeyPair) -> None:
        lost = line.client(zmq.DEALER, alice, server_public=keypair().public)
        lost.send(b"hello?")
        line.pump(line.saw(lost, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL))
        assert line.received == []

    def test_plaintext_client_is_refused(self, line: Harness) -> None:
        plain = line.client(zmq.DEALER, None)
        plain.send(b"no curve")
        line.pump(line.saw(plain, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL))
        assert line.received == []

    def test_without_a_handler_everyone_is_refused(
        self, make_line: Callable[..., Harness], alice: KeyPair
    ) -> None:
        """ZAP_ENFORCE_DOMAIN (set by secure_server): no handler means no entry, not open doors."""
        harness = make_line(Keyring({"alice": alice.public}), start=False)
        known = harness.client(zmq.DEALER, alice)
        known.send(b"hello")
        harness.pump(harness.saw(known, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL))
        assert harness.received == []

    def test_a_second_handler_in_the_context_is_an_error(
        self, line: Harness, ctx: zmq.Context[Any]
    ) -> None:
        with pytest.raises(RuntimeError, match="already bound"):
            ZapHandler(ctx, Keyring()).start()

    def test_socket_before_start_is_an_error(self, ctx: zmq.Context[Any]) -> None:
        with pytest.raises(RuntimeError, match="start"):
            ZapHandler(ctx, Keyring()).socket  # noqa: B018 - the property raises


class TestReload:
    def test_new_keys_apply_to_the_next_handshake(
        self, line: Harness, alice: KeyPair, bob: KeyPair
    ) -> None:
        carol = keypair()
        line.zap.reload(Keyring({"alice": alice.public, "bob": bob.public, "carol": carol.public}))
        c = line.client(zmq.DEALER, carol)
        c.send(b"c")
        line.pump(line.got(b"c"))
        assert line.user_of(b"c") == "carol"

    def test_revoked_key_is_refused_and_reported(
        self, line: Harness, alice: KeyPair, bob: KeyPair
    ) -> None:
        a = line.client(zmq.DEALER, alice)
        b = line.client(zmq.DEALER, bob)
        sub = line.client(zmq.SUB, bob)
        sub.subscribe(b"x.")
        a.send(b"a")
        b.send(b"b")
        line.pump(lambda: line.got(b"a")() and line.got(b"b")() and line.got(b"\x01x.")())

        revocation = line.zap.reload(Keyring({"bob": bob.public}))
        assert revocation == Revocation({DOMAIN_COMMAND: frozenset({"alice"})})
        assert revocation
        assert revocation.identities == {"alice"}
        assert revocation.domains == {DOMAIN_COMMAND}
        # The command socket checks User-Id per message: a removed identity needs no drop there.
        assert revocation.domains_to_drop(checked=[DOMAIN_COMMAND]) == set()
        assert revocation.domains_to_drop() == {DOMAIN_COMMAND}

        again = line.client(zmq.DEALER, alice)
        again.send(b"a2")
        line.pump(line.saw(again, zmq.EVENT_HANDSHAKE_FAILED_AUTH))
        assert not line.got(b"a2")()

    def test_a_rotated_key_revokes_the_old_one(self, line: Harness, alice: KeyPair) -> None:
        a = line.client(zmq.DEALER, alice)
        a.send(b"a")
        line.pump(line.got(b"a"))
        revocation = line.zap.reload(
            Keyring({"alice": keypair().public, "bob": line.zap.keyring["bob"]})
        )
        assert revocation.identities == {"alice"}
        assert revocation.rotated == {"alice"}
        # Old and new connections of alice share a User-Id: only a drop tells them apart.
        assert revocation.domains_to_drop(checked=[DOMAIN_COMMAND]) == {DOMAIN_COMMAND}

    def test_same_keys_revoke_nothing(self, line: Harness, alice: KeyPair) -> None:
        a = line.client(zmq.DEALER, alice)
        a.send(b"a")
        line.pump(line.got(b"a"))
        revocation = line.zap.reload(Keyring(dict(line.zap.keyring)))
        assert revocation == Revocation()
        assert not revocation

    def test_forget_clears_a_domain(self, line: Harness, alice: KeyPair) -> None:
        a = line.client(zmq.DEALER, alice)
        a.send(b"a")
        line.pump(line.got(b"a"))
        line.zap.forget(DOMAIN_COMMAND)
        assert line.zap.reload(Keyring()) == Revocation()

    def test_dropping_connections_cuts_off_the_revoked_only(
        self, line: Harness, alice: KeyPair, bob: KeyPair
    ) -> None:
        a = line.client(zmq.DEALER, alice)
        b = line.client(zmq.DEALER, bob)
        a.send(b"a")
        b.send(b"b")
        line.pump(lambda: line.got(b"a")() and line.got(b"b")())

        revocation = line.zap.reload(Keyring({"bob": bob.public}))
        for domain in revocation.domains_to_drop():
            drop_connections(line.router, line.endpoint(line.router))
            line.zap.forget(domain)

        # Bob reconnects by himself; his first message after the drop may be lost, so he retries.
        sent = 0

        def bob_back() -> bool:
            nonlocal sent
            if any(p.startswith(b"again") for _, p, _ in line.received):
                return True
            b.send(b"again%d" % sent)
            sent += 1
            return False

        def alice_out() -> bool:
            return zmq.EVENT_HANDSHAKE_FAILED_AUTH in line.events[id(a)]

        line.pump(bob_back)
        line.pump(alice_out)
        with contextlib.suppress(zmq.Again):  # refused for good: libzmq does not retry
            a.send(b"after", zmq.NOBLOCK)
        b.send(b"marker")
        line.pump(line.got(b"marker"))
        assert not line.got(b"after")()
        assert {user for _, p, user in line.received if p.startswith(b"again")} == {"bob"}
        assert line.zap.accepted(DOMAIN_COMMAND) == {"bob": 1}

    def test_revoked_subscriber_loses_its_events(
        self, line: Harness, alice: KeyPair, bob: KeyPair
    ) -> None:
        a = line.client(zmq.SUB, alice)
        b = line.client(zmq.SUB, bob)
        a.subscribe(b"t.")
        b.subscribe(b"t.")
        line.pump(lambda: sum(p == b"\x01t." for _, p, _ in line.received) == 2)

        revocation = line.zap.reload(Keyring({"bob": bob.public}))
        assert revocation.domains_to_drop(checked=[DOMAIN_COMMAND]) == {DOMAIN_SUBSCRIBE}
        drop_connections(line.xpub, line.endpoint(line.xpub))
        line.zap.forget(DOMAIN_SUBSCRIBE)
        line.pump(lambda: zmq.EVENT_HANDSHAKE_FAILED_AUTH in line.events[id(a)])
        line.pump(lambda: sum(p == b"\x01t." for _, p, _ in line.received) == 3)  # bob again

        line.xpub.send(b"t.after")
        line.pump(lambda: (id(b), b"t.after") in line.delivered)
        assert line.delivered == [(id(b), b"t.after")]


class TestAnswer:
    """The decision itself, without sockets: every refusal path of RFC 27 requests."""

    @pytest.fixture
    def zap(self, ctx: zmq.Context[Any], alice: KeyPair) -> ZapHandler:
        return ZapHandler(ctx, Keyring({"alice": alice.public}), domains=[DOMAIN_PUBLISH])

    def request(
        self,
        key: bytes,
        *,
        domain: str = DOMAIN_PUBLISH,
        mechanism: bytes = b"CURVE",
        version: bytes = b"1.0",
    ) -> list[bytes]:
        return [version, b"7", domain.encode(), b"10.0.0.9", b"", mechanism, key]

    def test_accepts_a_known_key(self, zap: ZapHandler, alice: KeyPair) -> None:
        from zmq.utils import z85

        assert zap.answer(self.request(z85.decode(alice.public))) == [
            b"1.0",
            b"7",
            b"200",
            b"OK",
            b"alice",
            b"",
        ]

    @pytest.mark.parametrize(
        ("changes", "status", "reason"),
        [
            ({"domain": DOMAIN_COMMAND}, b"400", b"unknown domain"),
            ({"mechanism": b"PLAIN"}, b"400", b"not CURVE"),
            ({"version": b"2.0"}, b"500", b"unsupported ZAP version"),
        ],
    )
    def test_refusals(
        self,
        zap: ZapHandler,
        alice: KeyPair,
        changes: dict[str, Any],
        status: bytes,
        reason: bytes,
    ) -> None:
        from zmq.utils import z85

        reply = zap.answer(self.request(z85.decode(alice.public), **changes))
        assert reply == [b"1.0", b"7", status, reason, b"", b""]

    def test_malformed_request(self, zap: ZapHandler) -> None:
        assert zap.answer([b"1.0", b"9"])[:3] == [b"1.0", b"9", b"500"]
        assert zap.answer([])[2] == b"500"
        assert zap.counts["malformed ZAP request"] == 2


class TestSocketOptions:
    def test_server_and_client_need_a_secret(self, ctx: zmq.Context[Any]) -> None:
        public_only = KeyPair(keypair().public)
        with ctx.socket(zmq.ROUTER) as sock:
            with pytest.raises(ValueError, match="secret"):
                secure_server(sock, public_only, DOMAIN_COMMAND)
            with pytest.raises(ValueError, match="ZAP domain"):
                secure_server(sock, keypair(), "")
            with pytest.raises(ValueError, match="secret"):
                secure_client(sock, public_only, keypair().public)

    def test_server_options(self, ctx: zmq.Context[Any]) -> None:
        with ctx.socket(zmq.XSUB) as sock:
            secure_server(sock, keypair(), DOMAIN_PUBLISH)
            assert sock.curve_server
            assert sock.zap_domain == DOMAIN_PUBLISH.encode()
            assert sock.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) == 1
