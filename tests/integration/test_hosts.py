"""A line spread over four hosts: network namespaces joined by veth links to one bridge.

    broker     10.X.Y.1   the broker (CURVE: it binds beyond loopback, so it must be secured)
    device     10.X.Y.2   the FlashRunner actor ``fr1`` with its simulator on the host's own
                          loopback, and the plant's ingest service (the telemetry upstream)
    telemetry  10.X.Y.3   the telemetry actor, forwarding to the ingest service on ``device``
    client     10.X.Y.4   the CLI: calls, and a watch of presence and telemetry events

Each host finds the others by name in its own /etc/hosts (the config names ``broker``,
``device``), as on a plant network. The test checks commands and events across the hosts, then
cuts the device's link for a few seconds: callers of ``fr1`` get ``unavailable`` once the broker
notices (not a hang until their timeout), readings enqueued on the telemetry host meanwhile are
stored but cannot reach the ingest service; once the link is back, ``fr1`` registers again by
itself (the same process), and the stored readings reach the ingest service exactly once.

Needs root and network namespaces (``tests/netns.py``); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bus.client import ENV_BROKER_KEY_FILE, ENV_KEY_FILE
from bus.security.keys import generate_keypair
from tests import netns
from tests.conftest import KEY_VARIABLES, Processes, scaled, wait_ready_line, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.interop]

HOSTS = ("broker", "device", "telemetry", "client")
TOKEN = "plant-token"
DEVICE_ID = "line3-controller"
#: Heartbeats: the broker declares a silent actor down after 1.5 s.
HEARTBEAT_S, HEARTBEAT_TIMEOUT_S = 0.5, 1.5

CONFIG = """
[broker]
command = "tcp://broker:7750"
publish = "tcp://broker:7751"
subscribe = "tcp://broker:7752"
heartbeat_s = {heartbeat_s}
heartbeat_timeout_s = {heartbeat_timeout_s}

[security]
key = "keys/broker.key_secret"
keys = "keys"

[security.acl]
operators = ["tester"]

[[actor]]
name = "fr1"
kind = "flashrunner"
[actor.options]
port = "LAN"
settings = "127.0.0.1:21234"
logger_address = "127.0.0.1:21235"
backoff_max_s = 0.5

[[actor]]
name = "telemetry"
kind = "telemetry"
[actor.options]
db = "{tmp}/telemetry.db"
instance_url = "http://device:18080"
provisioning_token = "{token}"
device_id = "{device_id}"
linger_s = 0.02
request_timeout_s = 1.0
backoff_initial_s = 0.1
backoff_max_s = 0.5
"""


@dataclass
class Site:
    """The four hosts, the device's link, and what runs on them."""

    hosts: dict[str, netns.Namespace]
    device_link: str
    config: Path
    keys: Path
    processes: Processes

    def env(self, identity: str | None) -> dict[str, str]:
        """Our environment without key variables, then ``identity``'s keys (None: none)."""
        env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
        # Clients find the broker by name, as the config's actors do.
        env["LINEBUS_ENDPOINT"] = "tcp://broker:7750"
        env["LINEBUS_SUBSCRIBE"] = "tcp://broker:7752"
        if identity is not None:
            env[ENV_KEY_FILE] = str(self.keys / f"{identity}.key_secret")
            env[ENV_BROKER_KEY_FILE] = str(self.keys / "broker.key")
        return env

    def start(
        self, host: str, *argv: str, identity: str | None = None, pipe: bool = False
    ) -> subprocess.Popen[bytes]:
        """``python argv...`` on ``host`` with ``identity``'s keys; its output in a log file
        beside the config (stdout in a pipe instead with ``pipe``: a simulator's ready line)."""
        with (self.config.parent / f"{host}-{argv[1]}.log").open("ab") as log:
            return self.processes.start(
                *argv,
                env=self.env(identity),
                stdout=subprocess.PIPE if pipe else log,
                stderr=log,
                prefix=tuple(self.hosts[host].argv()),
            )

    def cli(self, *argv: str, timeout: float = 10.0) -> tuple[int, Any, float]:
        """``linebus argv... --json`` on the client host: exit code, last JSON line, seconds."""
        started = time.monotonic()
        result = subprocess.run(
            self.hosts["client"].argv(
                sys.executable, "-m", "bus.cli", *argv, "--json", "--timeout", str(timeout)
            ),
            env=self.env("tester"),
            capture_output=True,
            text=True,
            timeout=scaled(timeout + 30),
        )
        elapsed = time.monotonic() - started
        lines = result.stdout.strip().splitlines()
        return result.returncode, json.loads(lines[-1]) if lines else result.stderr, elapsed

    def ingest_messages(self) -> list[dict[str, Any]]:
        """What the ingest service stored, asked from the client host over the network."""
        url = f"http://device:18080/v1/operator/devices/{DEVICE_ID}/messages"
        code = f"import requests; print(requests.get({url!r}, timeout=10).text)"
        result = subprocess.run(
            self.hosts["client"].argv(sys.executable, "-c", code),
            capture_output=True,
            text=True,
            timeout=scaled(30),
            check=True,
        )
        return list(json.loads(result.stdout)["messages"])


@pytest.fixture
def site(tmp_path: Path, processes: Processes) -> Iterator[Site]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    network = netns.Network("lbh")
    try:
        subnet = f"10.{100 + os.getpid() % 100}.{os.getpid() % 250}"
        addresses = {host: f"{subnet}.{i}" for i, host in enumerate(HOSTS, start=1)}
        bridge = network.bridge("br")
        hosts, links = {}, {}
        for host in HOSTS:
            hosts[host] = network.namespace(host[:3], addresses)
            links[host] = network.attach(hosts[host], bridge, f"{addresses[host]}/24")
        keys = tmp_path / "keys"
        for identity in ("broker", "fr1", "telemetry", "tester"):
            generate_keypair(keys, identity)
        config = tmp_path / "line.toml"
        config.write_text(
            CONFIG.format(
                heartbeat_s=HEARTBEAT_S,
                heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
                tmp=tmp_path,
                token=TOKEN,
                device_id=DEVICE_ID,
            )
        )
        yield Site(hosts, links["device"], config, keys, processes)
        processes.cleanup()  # before the namespaces go
    finally:
        network.close()


class Watch:
    """``linebus watch`` on the client host: its JSON lines in a queue."""

    def __init__(self, site: Site, *prefixes: str) -> None:
        self.proc = site.processes.start(
            "-m",
            "bus.cli",
            "watch",
            *prefixes,
            "--json",
            env=site.env("tester"),
            stdout=subprocess.PIPE,
            prefix=tuple(site.hosts["client"].argv()),
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, name="watch", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next(self, topic: str, timeout: float) -> dict[str, Any]:
        """The next event whose topic starts with ``topic`` (others are passed over)."""
        end = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {topic} event within {timeout:.1f} s") from None
            if event["topic"].startswith(topic):
                return event


def test_line_across_hosts_survives_a_cut_link(site: Site) -> None:
    site.start(
        "broker",
        "-m",
        "bus.cli",
        "broker",
        "--config",
        str(site.config),
        "--bind",
        "tcp://0.0.0.0:7750",
        "--publish-bind",
        "tcp://0.0.0.0:7751",
        "--subscribe-bind",
        "tcp://0.0.0.0:7752",
    )
    simulator = site.start(
        "device",
        "-m",
        "actors.flashrunner.simulator",
        "--listen",
        "127.0.0.1:21234",
        "--logger-listen",
        "127.0.0.1:21235",
        pipe=True,
    )
    ingest = site.start(
        "device",
        "-m",
        "actors.telemetry.ingest_server",
        "--listen",
        "0.0.0.0:18080",
        "--db",
        str(site.config.parent / "ingest.sqlite"),
        "--provisioning-token",
        TOKEN,
        pipe=True,
    )
    wait_ready_line(simulator, scaled(15))
    wait_ready_line(ingest, scaled(15))
    actor = site.start("device", "-m", "bus.cli", "actor", str(site.config), "fr1", identity="fr1")
    site.start(
        "telemetry", "-m", "bus.cli", "actor", str(site.config), "telemetry", identity="telemetry"
    )
    for service in ("fr1", "telemetry"):
        wait_until(lambda s=service: site.cli("health", s)[0] == 0, scaled(30), f"{service} up")
    watch = Watch(site, "presence.fr1", "telemetry.stream.")

    # Commands and events across the hosts: the client calls fr1 (which asks its unit) and the
    # telemetry actor (which forwards to the ingest service on the device host).
    code, pong, _ = site.cli("call", "fr1", "ping")
    assert code == 0 and pong["result"]["pid"] == actor.pid
    assert site.cli("call", "fr1", "FR_SendCommand", 'command="#GETENGSTATUS"')[0] == 0
    code, answer, _ = site.cli("call", "fr1", "FR_GetAnswer", "timeout=3000")
    assert code == 0 and answer["result"].startswith("55|"), answer
    code, acks, _ = site.cli(
        "call", "telemetry", "enqueue_messages", 'messages=["before"]', "stream=s"
    )
    assert code == 0, acks
    event = watch.next("telemetry.stream.", scaled(10))
    assert event["data"]["stream_seq"] == 1 and event["src"] == "telemetry"
    wait_until(
        lambda: [m["payload"] for m in site.ingest_messages()] == ["before"],
        scaled(15),
        "the first reading upstream",
    )

    # The device host's link goes down.
    netns.Network.cut(site.device_link)
    try:
        # In flight when the broker notices the silence, or sent after: unavailable either way,
        # within the heartbeat timeout (plus the CLI's start), far from the call's own 30 s.
        code, error, elapsed = site.cli("call", "fr1", "ping", timeout=30)
        assert code == 1 and error["error"]["code"] == "unavailable", error
        assert elapsed < 15, f"the caller waited {elapsed:.1f} s: a hang, not unavailable"
        assert watch.next("presence.fr1", scaled(10))["data"]["state"] == "down"
        during = [f"cut-{i}" for i in range(20)]
        code, acks, _ = site.cli(
            "call", "telemetry", "enqueue_messages", f"messages={json.dumps(during)}", "stream=s"
        )
        assert code == 0 and len(acks["result"]["seq"]) == len(during), acks
        # The cut lasts until the forwarder has tried to upload them, and failed.
        wait_until(
            lambda: not site.cli("call", "telemetry", "stats")[1]["result"]["forwarder"]["online"],
            scaled(15),
            "the telemetry forwarder to find the upstream unreachable",
        )
        code, pending, _ = site.cli("call", "telemetry", "pending_messages_count")
        assert (code, pending["result"]) == (0, len(during))
    finally:
        netns.Network.restore(site.device_link)

    # fr1 registers again by itself: the same process, no restart.
    up = watch.next("presence.fr1", scaled(30))
    assert up["data"]["state"] == "up"
    code, pong, _ = site.cli("call", "fr1", "ping")
    assert code == 0 and pong["result"]["pid"] == actor.pid and actor.poll() is None
    # What was stored during the cut reaches the ingest service, exactly once.
    code, result, _ = site.cli("call", "telemetry", "wait_enqueued_messages_sent", timeout=30)
    assert code == 0, result
    upstream = Counter(m["payload"] for m in site.ingest_messages())
    assert upstream == Counter(["before", *during])
