"""A secured broker as a real process (``linebus broker --config`` with ``[security]``), an
echo actor process with its own key, and peers in the test with keys of their own.

Refused on each of the three sockets: no key, a wrong key (the broker's key is not the one the
peer expects), a key the broker does not know, and a key revoked by a reload (SIGHUP). A service
hijack, a forged presence event and a forbidden privileged call are refused; a reload takes
effect on open connections; the audit log records privileged calls.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from bus import protocol
from bus.client import Client, ClientKeys
from bus.errors import Forbidden, PermissionDenied, Unauthenticated
from bus.security.audit import query
from bus.security.curve import secure_client
from bus.security.keys import KeyPair, generate_keypair, load_keypair, load_public_key
from tests.conftest import Endpoints, Processes, scaled, wait_until

pytestmark = pytest.mark.integration

ROLES = ("command", "publish", "subscribe")
KINDS = {"command": zmq.DEALER, "publish": zmq.PUB, "subscribe": zmq.SUB}


def config_text(endpoints: Endpoints, operators: list[str]) -> str:
    return f"""
[broker]
command = "{endpoints.command}"
publish = "{endpoints.publish}"
subscribe = "{endpoints.subscribe}"
heartbeat_s = 0.5
heartbeat_timeout_s = 1.25

[security]
key = "keys/broker.key_secret"
keys = "peers"
audit_log = "var/audit.jsonl"
audit_fsync = "never"

[security.acl]
operators = {operators!r}
privileged = ["echo1.add"]

[security.acl.identity.bob]
register = ["bob", "echo*"]

[[actor]]
name = "echo1"
kind = "echo"
class = "bus.testing:EchoActor"
""".replace("'", '"')


@dataclass
class SecuredLine:
    tmp: Path
    config: Path
    endpoints: Endpoints
    processes: Processes
    broker: subprocess.Popen[bytes] | None = None
    actor: subprocess.Popen[bytes] | None = None

    @property
    def broker_public(self) -> bytes:
        return load_public_key(file=self.tmp / "keys" / "broker.key")

    def keys(self, name: str) -> KeyPair:
        folder = "strangers" if name == "mallory" else "peers"
        return load_keypair(file=self.tmp / folder / f"{name}.key_secret")

    def client(self, name: str, timeout: float = 5.0) -> Client:
        return Client(
            self.endpoints.command,
            subscribe_endpoint=self.endpoints.subscribe,
            timeout=scaled(timeout),
            keys=ClientKeys(self.keys(name), self.broker_public),
        )

    def start(self) -> None:
        self.broker = self.processes.start("-m", "bus.cli", "broker", "--config", str(self.config))
        with self.client("alice", timeout=0.5) as client:
            wait_until(lambda: _pings(client), scaled(15), "the secured broker to answer")

    def start_actor(self) -> None:
        env = {
            "LINEBUS_KEY_FILE": str(self.tmp / "peers" / "echo1.key_secret"),
            "LINEBUS_BROKER_KEY_FILE": str(self.tmp / "keys" / "broker.key"),
        }
        self.actor = self.processes.start(
            "-m", "bus.cli", "actor", str(self.config), "echo1", env=env
        )
        with self.client("alice") as client:
            wait_until(
                lambda: any(
                    r["name"] == "echo1" and r["state"] == "up" and r["pid"] == self.actor.pid
                    for r in client.services()
                    if self.actor is not None
                ),
                scaled(15),
                "echo1 up",
            )

    def reload(self) -> None:
        """SIGHUP the broker and wait until the reload shows in its audit log."""
        assert self.broker is not None
        before = len(list(query(self.audit_path)))
        self.broker.send_signal(signal.SIGHUP)
        wait_until(
            lambda: any(r.command == "reload" for r in list(query(self.audit_path))[before:]),
            scaled(10),
            "the reload",
        )

    @property
    def audit_path(self) -> Path:
        return self.tmp / "var" / "audit.jsonl"


def _pings(client: Client) -> bool:
    try:
        client.ping(timeout=0.5)
        return True
    except Exception:  # not up yet
        return False


@pytest.fixture
def line(tmp_path: Path, processes: Processes) -> Iterator[SecuredLine]:
    generate_keypair(tmp_path / "keys", "broker")
    for name in ("alice", "bob", "echo1"):
        generate_keypair(tmp_path / "peers", name)
    generate_keypair(tmp_path / "strangers", "mallory")
    endpoints = Endpoints.fresh()
    config = tmp_path / "line.toml"
    config.write_text(config_text(endpoints, ["alice"]))
    built = SecuredLine(tmp_path, config, endpoints, processes)
    built.start()
    yield built


class Peer:
    """A raw socket with its monitor, for watching handshakes."""

    def __init__(
        self, ctx: zmq.Context[Any], kind: int, endpoint: str, keys: KeyPair | None, server: bytes
    ) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(kind)
        self.sock.linger = 0
        if keys is not None:
            secure_client(self.sock, keys, server)
        self.monitor: zmq.Socket[bytes] = self.sock.get_monitor_socket()
        self.events: list[int] = []
        self.sock.connect(endpoint)

    def wait_event(self, *wanted: int, timeout: float = 5.0) -> int:
        end = time.monotonic() + scaled(timeout)
        while time.monotonic() < end:
            if self.monitor.poll(50):
                event = int(parse_monitor_message(self.monitor.recv_multipart())["event"])
                self.events.append(event)
                if event in wanted:
                    return event
        raise AssertionError(f"none of {wanted} seen; saw {self.events}")

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    ctx: zmq.Context[Any] = zmq.Context()
    made: list[Peer] = []

    def make(kind: int, endpoint: str, keys: KeyPair | None, server: bytes) -> Peer:
        made.append(Peer(ctx, kind, endpoint, keys, server))
        return made[-1]

    yield make
    for peer in made:
        peer.close()
    ctx.term()


def endpoint_of(line: SecuredLine, role: str) -> str:
    return str(getattr(line.endpoints, role))


class TestRefusedKeys:
    @pytest.mark.parametrize("role", ROLES)
    def test_no_key(self, line: SecuredLine, peers: Callable[..., Peer], role: str) -> None:
        """A plaintext peer fails the greeting on every socket."""
        peer = peers(KINDS[role], endpoint_of(line, role), None, b"")
        peer.wait_event(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)

    @pytest.mark.parametrize("role", ROLES)
    def test_unknown_key(self, line: SecuredLine, peers: Callable[..., Peer], role: str) -> None:
        """A key the broker does not know is refused by its ZAP handler on every socket."""
        peer = peers(KINDS[role], endpoint_of(line, role), line.keys("mallory"), line.broker_public)
        peer.wait_event(zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    @pytest.mark.parametrize("role", ROLES)
    def test_wrong_broker_key(
        self, line: SecuredLine, peers: Callable[..., Peer], role: str
    ) -> None:
        """A peer expecting another broker key never completes a handshake."""
        other = zmq.curve_keypair()[0]
        peer = peers(KINDS[role], endpoint_of(line, role), line.keys("alice"), other)
        peer.wait_event(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in peer.events

    @pytest.mark.parametrize("role", ROLES)
    def test_revoked_key(self, line: SecuredLine, peers: Callable[..., Peer], role: str) -> None:
        """A key removed from the keys directory and reloaded (SIGHUP) is refused."""
        before = peers(KINDS[role], endpoint_of(line, role), line.keys("bob"), line.broker_public)
        before.wait_event(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        (line.tmp / "peers" / "bob.key").unlink()
        line.reload()
        after = peers(KINDS[role], endpoint_of(line, role), line.keys("bob"), line.broker_public)
        after.wait_event(zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    def test_client_with_an_unknown_key_gets_a_clear_error(self, line: SecuredLine) -> None:
        """The client core turns the refusal into Unauthenticated, quickly, not a timeout."""
        started = time.monotonic()
        with line.client("mallory", timeout=10.0) as client, pytest.raises(Unauthenticated):
            client.ping()
        assert time.monotonic() - started < scaled(5.0)


class TestAccess:
    def test_forbidden_privileged_call_reaches_no_actor(self, line: SecuredLine) -> None:
        """bob is not an operator: echo1.add (privileged by the config) is refused by the
        broker with forbidden, the actor never sees it, and the refusal is audited; alice's
        call goes through and is audited with its outcome."""
        line.start_actor()
        with line.client("bob") as bob, line.client("alice") as alice:
            routed = alice.stats()["routed"].get("request", 0)
            with pytest.raises(Forbidden) as refused:
                bob.call("echo1", "add", {"a": 1, "b": 2})
            assert isinstance(refused.value, PermissionDenied)
            assert refused.value.details == {
                "identity": "bob",
                "service": "echo1",
                "command": "add",
                "rule": "privileged",
            }
            assert "'bob'" in refused.value.message and "echo1.add" in refused.value.message
            assert alice.stats()["routed"].get("request", 0) == routed
            assert bob.call("echo1", "echo", {"value": 5}) == 5  # reading is everyone's
            assert alice.call("echo1", "add", {"a": 1, "b": 2}) == 3
        records = [(r.identity, r.command, r.outcome) for r in query(line.audit_path)]
        assert records == [("bob", "add", "forbidden"), ("alice", "add", "ok")]

    def test_hijack_is_refused_and_the_live_actor_keeps_the_name(
        self, line: SecuredLine, peers: Callable[..., Peer]
    ) -> None:
        """bob may register echo* names, but not one that is live under echo1's identity."""
        line.start_actor()
        impostor = peers(zmq.DEALER, line.endpoints.command, line.keys("bob"), line.broker_public)
        impostor.sock.send_multipart(protocol.encode_ready("echo1", {"kind": "echo"}))
        assert impostor.sock.poll(int(scaled(5) * 1000))
        header = msgpack.unpackb(impostor.sock.recv_multipart()[0])
        assert header[:4] == [1, 4, "", "forbidden"]
        assert "up under identity 'echo1'" in header[4]
        with line.client("alice") as alice:
            assert alice.call("echo1", "echo", {"value": "still me"}) == "still me"
            (row,) = [r for r in alice.services() if r["name"] == "echo1"]
            assert line.actor is not None
            assert row["pid"] == line.actor.pid and row["registrations"] == 1
        assert line.actor.poll() is None

    def test_forged_presence_is_dropped(
        self, line: SecuredLine, peers: Callable[..., Peer]
    ) -> None:
        """A peer with echo1's key cannot publish presence.* (nor another actor's topics);
        its own topics pass."""
        with line.client("alice") as alice, alice.subscribe("presence.", "echo1.") as sub:
            sub.wait_ready(timeout=scaled(5))
            pub = peers(zmq.PUB, line.endpoints.publish, line.keys("echo1"), line.broker_public)
            pub.wait_event(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            forged = protocol.encode_event(
                "presence.echo1", "broker", 1, 1, time.time(), {"service": "echo1", "state": "down"}
            )

            def marker_arrives() -> bool:
                pub.sock.send(forged)
                pub.sock.send(protocol.encode_event("echo1.marker", "echo1", 1, 1, time.time(), 1))
                event = sub.next(timeout=0.2)
                assert event is None or event.topic == "echo1.marker", event
                return event is not None

            wait_until(marker_arrives, scaled(10), "the marker event")
            assert alice.stats()["events"]["forbidden_publish"] >= 1


class TestReload:
    def test_reload_command_applies_new_operators(self, line: SecuredLine) -> None:
        """After the config names bob an operator, alice's reload command lets bob call the
        privileged command on his open connection; bob himself may not reload."""
        line.start_actor()
        with line.client("bob") as bob, line.client("alice") as alice:
            with pytest.raises(Forbidden):
                bob.call("echo1", "add", {"a": 1})
            line.config.write_text(config_text(line.endpoints, ["alice", "bob"]))
            with pytest.raises(Forbidden):
                bob.call("broker", "reload")  # not yet an operator
            result = alice.call("broker", "reload")
            assert result["revoked"] == [] and result["dropped"] == []
            assert bob.call("echo1", "add", {"a": 1}) == 1
        outcomes = [(r.identity, r.command, r.outcome) for r in query(line.audit_path)]
        assert ("alice", "reload", "ok") in outcomes and ("bob", "reload", "forbidden") in outcomes

    def test_revoked_subscriber_stops_receiving(
        self, line: SecuredLine, peers: Callable[..., Peer]
    ) -> None:
        """An open subscription of a revoked identity is cut off by the reload."""
        line.start_actor()
        sub = peers(zmq.SUB, line.endpoints.subscribe, line.keys("bob"), line.broker_public)
        sub.sock.subscribe(b"presence.")
        sub.wait_event(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        (line.tmp / "peers" / "bob.key").unlink()
        line.reload()
        sub.wait_event(zmq.EVENT_DISCONNECTED)
        sub.wait_event(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
