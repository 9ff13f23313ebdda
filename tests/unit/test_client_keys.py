"""CURVE on the client side (issue 10): where ``Client``, ``AsyncClient`` and their subscriptions
take their keys from, and how a broker's refusal reaches the caller: at once, as a typed
``Unauthenticated`` that says what to do, never as a timeout and never as a plaintext fallback.

The broker is a thread with its own context, a ZAP handler from ``bus.security.zap`` and CURVE
ROUTER and XPUB sockets on loopback TCP. It answers every request with the caller's identity
(the User-Id the ZAP handler gave the connection), and can hold a request unanswered.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import protocol
from bus.actor import Actor, ActorSettings
from bus.aio import AsyncClient
from bus.client import Client, ClientKeys
from bus.errors import BrokerUnreachable, PermissionDenied, Unauthenticated
from bus.protocol import Kind
from bus.security.curve import DOMAIN_COMMAND, DOMAIN_PUBLISH, DOMAIN_SUBSCRIBE, secure_server
from bus.security.errors import KeyFileError
from bus.security.keyring import Keyring
from bus.security.keys import KeyPair, generate_keypair, load_keypair
from bus.security.zap import ZapHandler, drop_connections
from bus.testing import free_port, wait_until

WAIT_S = 5.0
#: A refusal must be reported well before the call's own deadline.
FAST_S = 3.0
CALL_TIMEOUT_S = 20.0

KEY_VARS = ("LINEBUS_KEY_FILE", "LINEBUS_KEY", "LINEBUS_BROKER_KEY_FILE", "LINEBUS_BROKER_KEY")


@pytest.fixture(autouse=True)
def no_key_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without keys (a CURVE-on test run sets them)."""
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """A keys directory with the pairs of the broker, ``alice`` (known) and ``mallory``."""
    folder = tmp_path / "keys"
    for name in ("broker", "alice", "mallory"):
        generate_keypair(folder, name)
    return folder


def pair(keys_dir: Path, name: str) -> KeyPair:
    return load_keypair(file=keys_dir / f"{name}.key_secret")


class SecureBroker(threading.Thread):
    """A CURVE ROUTER and XPUB on loopback; every REQUEST is answered with the caller's identity,
    except those of command ``hold``, which stay unanswered."""

    def __init__(self, broker: KeyPair, known: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.command = f"tcp://127.0.0.1:{free_port()}"
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        self.subscribe = f"tcp://127.0.0.1:{free_port()}"
        self._broker_keys = broker
        self._ring = Keyring(known)
        self._ready = threading.Event()
        self._halt = threading.Event()
        self._reload: Keyring | None = None
        self.held: list[str] = []
        self.identities: list[str] = []
        self.ready: list[tuple[str, str]] = []  # (service, identity) of each READY

    def __enter__(self) -> SecureBroker:
        self.start()
        assert self._ready.wait(WAIT_S), "the secure broker did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(WAIT_S)
        self.ctx.term()

    def revoke(self, ring: Keyring) -> None:
        """Swap the keyring and drop the command connections (the broker's reload)."""
        self._reload = ring

    def run(self) -> None:
        zap = ZapHandler(self.ctx, self._ring)
        zap.start()
        router = self.ctx.socket(zmq.ROUTER)
        xsub = self.ctx.socket(zmq.XSUB)
        xpub = self.ctx.socket(zmq.XPUB)
        secure_server(router, self._broker_keys, DOMAIN_COMMAND)
        secure_server(xsub, self._broker_keys, DOMAIN_PUBLISH)
        secure_server(xpub, self._broker_keys, DOMAIN_SUBSCRIBE)
        router.bind(self.command)
        xsub.bind(self.publish)
        xpub.bind(self.subscribe)
        poller = zmq.Poller()
        for sock in (zap.socket, router, xpub, xsub):
            poller.register(sock, zmq.POLLIN)
        self._ready.set()
        try:
            while not self._halt.is_set():
                if self._reload is not None:
                    zap.reload(self._reload)
                    self._reload = None
                    drop_connections(router, self.command)
                ready = dict(poller.poll(10))
                if zap.socket in ready:
                    zap.handle_pending()
                if xpub in ready:
                    xpub.recv()
                if xsub in ready:
                    xsub.recv()
                if router in ready:
                    self._serve(router)
        finally:
            for sock in (router, xsub, xpub):
                sock.close(linger=0)
            zap.close()

    def _serve(self, router: zmq.Socket[Any]) -> None:
        ident, *frames = router.recv_multipart(copy=False)
        identity = ident.get("User-Id")
        msg = protocol.decode([bytes(f.bytes) for f in frames])
        if msg.kind is Kind.READY and msg.service is not None:
            self.ready.append((msg.service, identity))
        if msg.kind is not Kind.REQUEST or msg.msg_id is None:
            return
        self.identities.append(identity)
        if msg.command == "hold":
            self.held.append(msg.msg_id)
            return
        router.send_multipart([ident.bytes, *protocol.encode_reply(msg.msg_id, identity)])


@pytest.fixture
def broker(keys_dir: Path) -> Iterator[SecureBroker]:
    with SecureBroker(
        pair(keys_dir, "broker"), {"alice": pair(keys_dir, "alice").public}
    ) as running:
        yield running


def alice(keys_dir: Path) -> ClientKeys:
    keys = ClientKeys.load(
        key_file=keys_dir / "alice.key_secret", broker_key_file=keys_dir / "broker.key"
    )
    assert keys is not None
    return keys


def refusal_of(call: Any) -> tuple[Unauthenticated, float]:
    """The Unauthenticated ``call()`` raises, and how long it took."""
    start = time.monotonic()
    with pytest.raises(Unauthenticated) as info:
        call()
    return info.value, time.monotonic() - start


# --- where keys come from ---------------------------------------------------------------------


class TestLoad:
    def test_no_key_anywhere_is_plaintext(self) -> None:
        """No file given and no variable set: None, a plaintext client."""
        assert ClientKeys.load(environ={}) is None

    def test_files(self, keys_dir: Path) -> None:
        """Our pair from our secret file, the broker's public key from its public file."""
        keys = alice(keys_dir)
        assert keys.own == pair(keys_dir, "alice")
        assert keys.broker == pair(keys_dir, "broker").public
        assert keys.source == str(keys_dir / "alice.key_secret")
        assert keys.public == pair(keys_dir, "alice").public.decode()

    def test_environment_files_and_values(self, keys_dir: Path) -> None:
        """LINEBUS_KEY_FILE / LINEBUS_BROKER_KEY_FILE, or the keys themselves in LINEBUS_KEY /
        LINEBUS_BROKER_KEY."""
        own, broker = pair(keys_dir, "alice"), pair(keys_dir, "broker")
        by_file = ClientKeys.load(
            environ={
                "LINEBUS_KEY_FILE": str(keys_dir / "alice.key_secret"),
                "LINEBUS_BROKER_KEY_FILE": str(keys_dir / "broker.key"),
            }
        )
        assert by_file is not None and (by_file.own, by_file.broker) == (own, broker.public)
        assert own.secret is not None
        by_value = ClientKeys.load(
            environ={
                "LINEBUS_KEY": own.secret.decode(),
                "LINEBUS_BROKER_KEY": broker.public.decode(),
            }
        )
        assert by_value is not None and (by_value.own, by_value.broker) == (own, broker.public)
        assert by_value.source == "$LINEBUS_KEY"

    def test_given_files_win_over_the_environment(self, keys_dir: Path) -> None:
        """--key / --broker-key (the files given) win over the variables."""
        keys = ClientKeys.load(
            key_file=keys_dir / "alice.key_secret",
            broker_key_file=keys_dir / "broker.key",
            environ={"LINEBUS_KEY_FILE": str(keys_dir / "mallory.key_secret")},
        )
        assert keys is not None and keys.own == pair(keys_dir, "alice")

    def test_the_secret_stays_out_of_reprs(self, keys_dir: Path) -> None:
        """Neither the repr of the keys nor of the pair shows the secret key."""
        keys = alice(keys_dir)
        assert keys.own.secret is not None
        assert keys.own.secret.decode() not in repr(keys)

    @pytest.mark.parametrize(
        ("environ", "source", "problem"),
        [
            ({"LINEBUS_KEY_FILE": "{d}/alice.key_secret"}, "$LINEBUS_BROKER_KEY_FILE", "missing"),
            ({"LINEBUS_BROKER_KEY_FILE": "{d}/broker.key"}, "$LINEBUS_KEY_FILE", "missing"),
            (
                {
                    "LINEBUS_KEY_FILE": "{d}/alice.key_secret",
                    "LINEBUS_KEY": "x",
                    "LINEBUS_BROKER_KEY_FILE": "{d}/broker.key",
                },
                "$LINEBUS_KEY_FILE",
                "malformed",
            ),
            (
                {
                    "LINEBUS_KEY_FILE": "{d}/nobody.key_secret",
                    "LINEBUS_BROKER_KEY_FILE": "{d}/broker.key",
                },
                "{d}/nobody.key_secret",
                "missing",
            ),
            (
                {"LINEBUS_KEY": "too short", "LINEBUS_BROKER_KEY_FILE": "{d}/broker.key"},
                "$LINEBUS_KEY",
                "malformed",
            ),
        ],
        ids=[
            "own-without-broker",
            "broker-without-own",
            "file-and-value",
            "missing-file",
            "bad-value",
        ],
    )
    def test_configured_but_unusable_keys_fail(
        self, keys_dir: Path, environ: dict[str, str], source: str, problem: str
    ) -> None:
        """A key configured but unusable (half of the pair, both variables, a missing file, a
        malformed value) is a KeyFileError naming the file or variable: never plaintext."""
        filled = {k: v.format(d=keys_dir) for k, v in environ.items()}
        with pytest.raises(KeyFileError) as info:
            ClientKeys.load(environ=filled)
        assert (info.value.source, info.value.problem) == (source.format(d=keys_dir), problem)

    def test_a_secret_others_can_read_is_refused(self, keys_dir: Path) -> None:
        """A secret key file readable by others is refused (``permissions``), with the fix."""
        secret = keys_dir / "alice.key_secret"
        os.chmod(secret, 0o644)
        with pytest.raises(KeyFileError) as info:
            ClientKeys.load(key_file=secret, broker_key_file=keys_dir / "broker.key")
        assert info.value.problem == "permissions"
        assert "chmod 600" in info.value.message

    def test_client_fails_at_construction(
        self, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Client() with a broken key in the environment fails at once, before any socket."""
        monkeypatch.setenv("LINEBUS_KEY_FILE", str(keys_dir / "nobody.key_secret"))
        monkeypatch.setenv("LINEBUS_BROKER_KEY_FILE", str(keys_dir / "broker.key"))
        with pytest.raises(KeyFileError):
            Client("tcp://127.0.0.1:9")
        with pytest.raises(KeyFileError):
            AsyncClient("tcp://127.0.0.1:9")


# --- the sync client against a secured broker ---------------------------------------------------


class TestClient:
    def test_known_key_is_let_in_under_its_identity(
        self, broker: SecureBroker, keys_dir: Path
    ) -> None:
        """With a known key the call goes through, and the broker sees the identity name."""
        with Client(broker.command, keys=alice(keys_dir), timeout=WAIT_S) as client:
            assert client.call("svc", "whoami") == "alice"

    def test_keys_from_the_environment(
        self, broker: SecureBroker, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Client() with no keys argument takes them from LINEBUS_KEY_FILE and
        LINEBUS_BROKER_KEY_FILE."""
        monkeypatch.setenv("LINEBUS_KEY_FILE", str(keys_dir / "alice.key_secret"))
        monkeypatch.setenv("LINEBUS_BROKER_KEY_FILE", str(keys_dir / "broker.key"))
        with Client(broker.command, timeout=WAIT_S) as client:
            assert client.keys is not None and client.keys.source.endswith("alice.key_secret")
            assert client.call("svc", "whoami") == "alice"

    def test_unknown_key_is_refused_at_once(self, broker: SecureBroker, keys_dir: Path) -> None:
        """An unknown key fails the call with Unauthenticated (a PermissionDenied) long before
        its deadline; the message and details name our public key so it can be added."""
        keys = ClientKeys(pair(keys_dir, "mallory"), pair(keys_dir, "broker").public, "mallory")
        with Client(broker.command, keys=keys, timeout=CALL_TIMEOUT_S) as client:
            error, took = refusal_of(lambda: client.call("svc", "whoami"))
        assert took < FAST_S
        assert isinstance(error, PermissionDenied) and error.code == "unauthenticated"
        assert error.details["reason"] == "refused_key"
        assert error.details["key"] == keys.public
        assert keys.public in error.message and "refused our key" in error.message
        assert broker.identities == []  # nothing was delivered

    def test_plaintext_client_is_told_to_get_a_key(self, broker: SecureBroker) -> None:
        """A client without a key on a secured broker is told so, naming the variables."""
        with Client(broker.command, keys=None, timeout=CALL_TIMEOUT_S) as client:
            assert client.keys is None
            error, took = refusal_of(lambda: client.call("svc", "whoami"))
        assert took < FAST_S
        assert error.details["reason"] == "key_required"
        assert "LINEBUS_KEY_FILE" in error.message and "--key" in error.message

    def test_wrong_broker_key_is_reported(self, broker: SecureBroker, keys_dir: Path) -> None:
        """Our key is known, but the broker's public key we were given is another one."""
        keys = ClientKeys(pair(keys_dir, "alice"), pair(keys_dir, "mallory").public, "alice")
        with Client(broker.command, keys=keys, timeout=CALL_TIMEOUT_S) as client:
            error, took = refusal_of(lambda: client.call("svc", "whoami"))
        assert took < FAST_S
        assert error.details["reason"] == "handshake_failed"
        assert "LINEBUS_BROKER_KEY_FILE" in error.message

    def test_every_call_tries_again(self, keys_dir: Path) -> None:
        """libzmq gives up on a refused connection; the next call connects afresh, so a key
        added to the broker meanwhile is let in without a new client."""
        mallory = pair(keys_dir, "mallory")
        known = {"alice": pair(keys_dir, "alice").public}
        with SecureBroker(pair(keys_dir, "broker"), known) as line:
            keys = ClientKeys(mallory, pair(keys_dir, "broker").public, "mallory")
            with Client(line.command, keys=keys, timeout=CALL_TIMEOUT_S) as client:
                refusal_of(lambda: client.call("svc", "whoami"))
                refusal_of(lambda: client.call("svc", "whoami"))  # still refused, still fast
                line.revoke(Keyring({**known, "mallory": mallory.public}))
                wait_until(lambda: line._reload is None, WAIT_S, "the reload")
                assert client.call("svc", "whoami", timeout=WAIT_S) == "mallory"

    def test_revoked_while_waiting_fails_the_call_in_flight(self, keys_dir: Path) -> None:
        """A call in flight when the broker revokes our key and drops the connection fails with
        Unauthenticated when the reconnection is refused, not at its deadline."""
        with (
            SecureBroker(
                pair(keys_dir, "broker"), {"alice": pair(keys_dir, "alice").public}
            ) as line,
            Client(line.command, keys=alice(keys_dir), timeout=CALL_TIMEOUT_S) as client,
        ):
            call = client.start("svc", "hold")
            wait_until(lambda: line.held, WAIT_S, "the request to reach the broker")
            line.revoke(Keyring({}))
            error, took = refusal_of(call.result)
        assert took < FAST_S
        assert error.details["reason"] == "refused_key"

    def test_plaintext_broker_still_works_with_the_monitor(self) -> None:
        """A plaintext client of a plaintext broker is unchanged: a broker that never answers
        is unreachable, as before (the monitor reports the handshake, not a refusal)."""
        ctx: zmq.Context[Any] = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        try:
            with Client(f"tcp://127.0.0.1:{port}", keys=None, timeout=0.3) as client:
                with pytest.raises(BrokerUnreachable):
                    client.call("svc", "whoami")
                assert client._monitor.refused() is None
        finally:
            router.close(linger=0)
            ctx.term()


def test_a_key_for_a_plaintext_broker_is_reported(keys_dir: Path) -> None:
    """A client with a key never falls back to plaintext: a plaintext broker is a refusal."""
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        with Client(f"tcp://127.0.0.1:{port}", keys=alice(keys_dir), timeout=CALL_TIMEOUT_S) as c:
            error, took = refusal_of(lambda: c.call("svc", "whoami"))
        assert took < FAST_S
        assert error.details["reason"] in ("broker_not_secured", "handshake_failed")
    finally:
        router.close(linger=0)
        ctx.term()


class TestSubscription:
    def test_refused_subscription_raises_instead_of_waiting(
        self, broker: SecureBroker, keys_dir: Path
    ) -> None:
        """A subscription the broker refused raises Unauthenticated from next() and from
        iteration, instead of waiting in silence for events that will never come."""
        keys = ClientKeys(pair(keys_dir, "mallory"), pair(keys_dir, "broker").public, "mallory")
        with (
            Client(broker.command, subscribe_endpoint=broker.subscribe, keys=keys) as client,
            client.subscribe("presence.") as sub,
        ):
            error, took = refusal_of(lambda: sub.next(timeout=CALL_TIMEOUT_S))
            assert took < FAST_S
            assert error.details["endpoint"] == broker.subscribe
            assert "(events)" in error.message
        with (
            Client(broker.command, subscribe_endpoint=broker.subscribe, keys=None) as client,
            client.subscribe("presence.", timeout=CALL_TIMEOUT_S) as sub,
        ):
            error, took = refusal_of(lambda: list(sub))
            assert took < FAST_S
            assert error.details["reason"] == "key_required"

    def test_known_key_subscribes(self, broker: SecureBroker, keys_dir: Path) -> None:
        """With a known key an idle subscription just times out (no event, no error)."""
        with (
            Client(broker.command, subscribe_endpoint=broker.subscribe, keys=alice(keys_dir)) as c,
            c.subscribe("presence.", timeout=0.6) as sub,
        ):
            assert sub.next(timeout=0.6) is None
            assert list(sub) == []


# --- the asyncio client -------------------------------------------------------------------------


class TestAsyncClient:
    async def test_known_key(self, broker: SecureBroker, keys_dir: Path) -> None:
        async with AsyncClient(broker.command, keys=alice(keys_dir), timeout=WAIT_S) as client:
            assert await client.call("svc", "whoami") == "alice"

    async def test_refused_at_once(self, broker: SecureBroker, keys_dir: Path) -> None:
        """Unknown key, no key: Unauthenticated well before the deadline."""
        keys = ClientKeys(pair(keys_dir, "mallory"), pair(keys_dir, "broker").public, "mallory")
        for given, reason in ((keys, "refused_key"), (None, "key_required")):
            async with AsyncClient(broker.command, keys=given, timeout=CALL_TIMEOUT_S) as client:
                start = time.monotonic()
                with pytest.raises(Unauthenticated) as info:
                    await client.call("svc", "whoami")
                assert time.monotonic() - start < FAST_S
                assert info.value.details["reason"] == reason, info.value.message
                # And again: the next call connects afresh and is refused afresh.
                with pytest.raises(Unauthenticated):
                    await client.call("svc", "whoami")

    async def test_revoked_while_waiting(self, keys_dir: Path) -> None:
        """A call in flight fails with Unauthenticated when the reconnection is refused."""
        with SecureBroker(
            pair(keys_dir, "broker"), {"alice": pair(keys_dir, "alice").public}
        ) as line:
            async with AsyncClient(
                line.command, keys=alice(keys_dir), timeout=CALL_TIMEOUT_S
            ) as client:
                task = asyncio.ensure_future(client.call("svc", "hold"))
                deadline = time.monotonic() + WAIT_S
                while not line.held and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                line.revoke(Keyring({}))
                start = time.monotonic()
                with pytest.raises(Unauthenticated):
                    await task
                assert time.monotonic() - start < FAST_S

    async def test_refused_subscription(self, broker: SecureBroker, keys_dir: Path) -> None:
        keys = ClientKeys(pair(keys_dir, "mallory"), pair(keys_dir, "broker").public, "mallory")
        async with AsyncClient(
            broker.command, subscribe_endpoint=broker.subscribe, keys=keys
        ) as client:
            sub = client.subscribe("presence.")
            try:
                start = time.monotonic()
                with pytest.raises(Unauthenticated):
                    await sub.next(timeout=CALL_TIMEOUT_S)
                assert time.monotonic() - start < FAST_S
            finally:
                sub.close()


# --- an actor on a secured line -----------------------------------------------------------------


class Press(Actor):
    kind = "press"


def press_settings(line: SecureBroker, keys: ClientKeys | None) -> ActorSettings:
    return ActorSettings(
        line.command,
        line.publish,
        subscribe_endpoint=line.subscribe,
        heartbeat_s=0.2,
        heartbeat_timeout_s=0.5,
        keys=keys,
    )


class TestActor:
    async def test_known_key_registers_under_its_identity(
        self, broker: SecureBroker, keys_dir: Path
    ) -> None:
        """An actor with a known key registers; the broker sees its READY from that identity."""
        actor = Press("press1")
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            actor.serve(press_settings(broker, alice(keys_dir)), stop=stop)
        )
        try:
            deadline = time.monotonic() + WAIT_S
            while not broker.ready and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert broker.ready[0] == ("press1", "alice")
        finally:
            stop.set()
            await task

    @pytest.mark.parametrize("key", ["unknown", "none"])
    async def test_refused_actor_stops_with_the_error(
        self, broker: SecureBroker, keys_dir: Path, key: str
    ) -> None:
        """An actor whose key the broker refuses (or that has none) stops at once and serve
        raises Unauthenticated: the process exits with the reason instead of heartbeating into
        a connection that never comes."""
        keys = (
            ClientKeys(pair(keys_dir, "mallory"), pair(keys_dir, "broker").public, "mallory")
            if key == "unknown"
            else None
        )
        start = time.monotonic()
        with pytest.raises(Unauthenticated) as info:
            await asyncio.wait_for(Press("press1").serve(press_settings(broker, keys)), 10)
        assert time.monotonic() - start < FAST_S
        assert info.value.details["reason"] == ("refused_key" if keys else "key_required")
        assert "press1" in info.value.message
        assert broker.ready == []
