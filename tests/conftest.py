"""Shared fixtures: free loopback ports, child processes that are always cleaned up, and a
running line (broker + actors as real processes) built from a generated config.

Timing knob: ``LINEBUS_TEST_TIME_FACTOR`` scales every timeout (not sleeps) for slow machines.

The secured pass: with ``LINEBUS_TEST_SECURE=1`` the integration and contract tiers run with
CURVE on (``make test`` runs them a second time so). A session keys directory holds the broker's
key pair and one for the identity ``tester`` (an operator, who may also publish on any topic but
the broker's, as the raw publishers of some tests do); ``write_config`` adds a ``[security]``
table naming them and makes a key pair for each actor the config names (its identity is its
name, as under ``linebus up``). The test process holds the tester's key in ``LINEBUS_KEY_FILE``
and ``LINEBUS_BROKER_KEY_FILE`` for the whole session, so every Client, AsyncClient, facade and
CLI child takes it from there; ``Line.start_actor`` gives each actor its own key file in its
environment (``actor_environment``), and raw pyzmq sockets go through ``secure_socket``. The
unit tier is deselected: it is in-process and plaintext by design.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus.client import ENV_BROKER_KEY, ENV_BROKER_KEY_FILE, ENV_KEY, ENV_KEY_FILE
from bus.errors import BrokerUnreachable, DeadlineExceeded
from bus.logs import STACK_DUMP_SIGNAL
from bus.mosquitto import Mosquitto, find_mosquitto
from bus.security.curve import secure_client
from bus.security.keys import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    generate_keypair,
    load_keypair,
    load_public_key,
)
from bus.supervisor import SUPERVISOR_IDENTITY
from bus.testing import DemoConfig, WaitTimeout, free_port, wait_until

__all__ = ["DemoConfig", "free_port", "wait_until"]  # re-exported: tests import them from here

ROOT = Path(__file__).resolve().parent.parent
FACTOR = float(os.environ.get("LINEBUS_TEST_TIME_FACTOR", "1"))
#: The secured pass: the integration and contract tiers with CURVE on (see the module docstring).
SECURE = os.environ.get("LINEBUS_TEST_SECURE", "").strip() not in ("", "0")
#: The identity of the test process itself (its clients, CLI runs and raw sockets).
TESTER = "tester"
KEY_VARIABLES = (ENV_KEY_FILE, ENV_KEY, ENV_BROKER_KEY_FILE, ENV_BROKER_KEY)


def scaled(seconds: float) -> float:
    """A timeout scaled for slow machines."""
    return seconds * FACTOR


# --- the secured pass ---------------------------------------------------------------------


@dataclass
class SessionKeys:
    """The keys directory of the secured pass: the broker's key pair and one per identity."""

    folder: Path

    @classmethod
    def create(cls, folder: Path) -> SessionKeys:
        keys = cls(folder)
        for name in ("broker", TESTER, SUPERVISOR_IDENTITY):
            keys.ensure(name)
        return keys

    @property
    def broker_secret(self) -> Path:
        return self.folder / f"broker{SECRET_SUFFIX}"

    @property
    def broker_public(self) -> Path:
        return self.folder / f"broker{PUBLIC_SUFFIX}"

    def secret(self, name: str) -> Path:
        """The secret key file of identity ``name``."""
        return self.folder / f"{name}{SECRET_SUFFIX}"

    def ensure(self, name: str) -> Path:
        """Identity ``name``'s secret key file, its key pair made if missing."""
        if not (self.folder / f"{name}{PUBLIC_SUFFIX}").exists():
            generate_keypair(self.folder, name)
        return self.secret(name)

    def environment(self, name: str) -> dict[str, str]:
        """The key variables of a process connecting as identity ``name``."""
        return {ENV_KEY_FILE: str(self.ensure(name)), ENV_BROKER_KEY_FILE: str(self.broker_public)}

    def security_table(self, config_dir: Path) -> str:
        """The ``[security]`` table of a test line: CURVE with these keys, ``tester`` an
        operator who may also publish on any topic (presence and probes stay the broker's)."""
        return f"""
[security]
key = "{self.broker_secret}"
keys = "{self.folder}"
audit_log = "{config_dir / "audit.jsonl"}"

[security.acl]
operators = ["{TESTER}"]

[security.acl.identity.{TESTER}]
publish = [""]
"""


#: Where the secured pass's keys are, for the whole session. An environment variable and not a
#: module global: this file is loaded twice, as pytest's ``conftest`` and as ``tests.conftest``
#: (which the test modules import), and both must see the same keys.
_KEYS_DIR_VARIABLE = "LINEBUS_TEST_KEYS_DIR"


def session_keys() -> SessionKeys:
    """The keys of the secured pass (only there: a plain pass has none)."""
    folder = os.environ.get(_KEYS_DIR_VARIABLE)
    assert SECURE and folder, "session_keys() is for the secured pass only"
    return SessionKeys(Path(folder))


def key_environment() -> dict[str, str]:
    """The test process's own key variables: the tester's in the secured pass, none otherwise.

    For children started with a cleaned environment (the CLI tests) that must still connect.
    """
    return session_keys().environment(TESTER) if SECURE else {}


def actor_environment(name: str) -> dict[str, str]:
    """What a line's actor ``name`` needs in its environment: its own key in the secured pass
    (the path of the file, never the key, as ``linebus up`` does), nothing otherwise."""
    return session_keys().environment(name) if SECURE else {}


def secure_socket(sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """``sock`` (not yet connected) as a peer of the test line: a CURVE client with the
    tester's key in the secured pass, unchanged otherwise."""
    if SECURE:
        keys = session_keys()
        own = load_keypair(file=keys.secret(TESTER))
        secure_client(sock, own, load_public_key(file=keys.broker_public))
    return sock


@pytest.fixture(scope="session", autouse=True)
def _secured_pass(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """In the secured pass: the session's keys, and the tester's in the environment."""
    if not SECURE:
        yield
        return
    keys = SessionKeys.create(tmp_path_factory.mktemp("keys"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(_KEYS_DIR_VARIABLE, str(keys.folder))
        for variable in KEY_VARIABLES:
            patch.delenv(variable, raising=False)
        for variable, value in keys.environment(TESTER).items():
            patch.setenv(variable, value)
        yield


#: What the secured pass leaves to the plain one, besides the unit tier (in-process, plaintext by
#: design): tests in which nothing changes with the switch, so that a second run would repeat the
#: first exactly. Node id prefixes, each with why. A new test file runs in both passes unless
#: listed here.
SAME_IN_BOTH_PASSES = {
    "tests/integration/test_flux_driver.py": "no broker: the FLUX driver against its simulator",
    "tests/integration/test_flux_extras.py": "no broker: the FLUX camera and extras, driver and sim",
    "tests/integration/test_flashrunner_driver.py": "no broker: the driver against its simulator",
    "tests/integration/test_discovery_driver.py": "no broker: discovery against simulators",
    "tests/integration/test_discovery_v2.py": "no broker: discovery v2 and the beacon",
    "tests/integration/test_flux_tls.py": "no broker: robot protocol 3 against its simulator",
    "tests/integration/test_telemetry_forwarding.py": "no broker: the forwarder against ingest",
    "tests/integration/test_telemetry_mqtt.py": "no linebus broker: the forwarder and Mosquitto",
    "tests/integration/test_remotelab_driver.py": "no broker: the driver against its simulator",
    "tests/integration/test_remotelab_published_client.py": "no broker: rerobots' client and sim",
    "tests/integration/test_telemetry_disk_full.py::test_store_": "no broker: the store alone",
    "tests/integration/test_security_broker.py": "its own secured line, keys and clients",
    "tests/integration/test_security_line.py": "its own secured line, keys and clients",
    "tests/integration/test_seeds.py": "vendor scripts via linebus compat: the import hook and the "
    "vendor constructors are the same with CURVE, whose facade paths their own bus tests run",
    "tests/integration/test_compose.py": "runs the compose files' own configs, plain and secured",
    "tests/integration/test_c_client_vectors.py": "no broker: the C codec against the vectors",
    "tests/integration/test_c_client.py::test_c_call_routes": "a plaintext stand-in broker",
    "tests/integration/test_node_client.py::test_node_codec": "no line: Node codec, vectors, keys",
    "tests/integration/test_node_client.py::test_node_keys": "its own secured line, keys and clients",
    "tests/integration/test_node_client.py::test_npm_pack": "no line: npm pack and install",
    "tests/integration/test_hosts.py": "its own secured line (CURVE) across network namespaces",
    "tests/integration/test_mosquitto_fixture.py": "no line: Mosquitto and a paho client only",
    "tests/integration/test_bench_nats.py": "no line: the bench's NATS rows (nats-server, nats-py)",
    "tests/integration/test_terminal.py": "what the CLI draws is the same with CURVE; job events "
    "are ordinary events (test_bus_smoke and test_security_line cover events under CURVE)",
    "tests/integration/test_mqtt_sparkplug.py": "the Sparkplug side is the same with CURVE; "
    "test_mqtt_bridge runs a bridge under CURVE",
    "tests/integration/test_mqtt_link.py": "no line: the bridge's MQTT connection and Mosquitto",
    "tests/integration/test_mqtt_demo.py": "the MQTT demo config is plaintext (like demo.toml)",
    "tests/integration/test_mqtt_plant.py": "three lines' bridges on one Mosquitto: the MQTT "
    "side is the same with CURVE, and test_mqtt_bridge runs a bridge under CURVE",
    "tests/integration/test_web_gateway.py": "its own secured line (CURVE, access list, tokens)",
    "tests/faults/": "its own secured line: the demo line with CURVE (configs/demo-secure.toml)",
}


#: Under CI=true (set by .ci/run) a skipped ``interop`` test fails the run: CI installs every
#: tool these tests need (.ci/run), so a skip there means an install step is missing and the
#: interop is not tested at all, which must not pass for green.
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _standard_logging_restored() -> Iterator[None]:
    """``configure_logging`` (which tests of entry points run in-process) gives the root
    ``logging`` logger a handler and a level; put back what it had, for the next test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Turn the skip of an ``interop`` test into a failure under CI=true, reason kept."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if CI and report.skipped and item.get_closest_marker("interop") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"interop test skipped under CI=true (install what it needs in .ci/run): {reason}"
        )


def pytest_report_header(config: pytest.Config) -> str:
    if SECURE:
        return (
            "secured pass (LINEBUS_TEST_SECURE=1): CURVE, keys and access lists on every test line;"
            " the unit tier and SAME_IN_BOTH_PASSES (tests/conftest.py) are deselected"
        )
    return "plain pass: test lines without [security] (LINEBUS_TEST_SECURE=1 for the secured pass)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The secured pass runs the integration and contract tiers, less SAME_IN_BOTH_PASSES."""
    if not SECURE:
        return
    unit = ROOT / "tests" / "unit"
    same = tuple(SAME_IN_BOTH_PASSES)

    def plain_only(item: pytest.Item) -> bool:
        return item.path.is_relative_to(unit) or item.nodeid.startswith(same)

    deselected = [item for item in items if plain_only(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not plain_only(item)]


@dataclass
class Endpoints:
    """The three broker endpoints of one test line."""

    command: str
    publish: str
    subscribe: str

    @classmethod
    def fresh(cls) -> Endpoints:
        """Three free ports on loopback."""
        return cls(*(f"tcp://127.0.0.1:{free_port()}" for _ in range(3)))


class Processes:
    """Starts child processes and guarantees they are gone at teardown (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        stdout: Any = None,
        stderr: Any = None,
        prefix: tuple[str, ...] = (),
    ) -> subprocess.Popen[bytes]:
        """Run ``python argv...`` from the repository root (after ``prefix``, e.g. the
        ``ip netns exec NS`` of another network namespace, which execs it: same pid)."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(
            [*prefix, sys.executable, *argv], cwd=ROOT, env=full_env, stdout=stdout, stderr=stderr
        )
        self.children.append(proc)
        return proc

    def cleanup(self) -> None:
        """Stop every child still running."""
        for proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.children:
            try:
                proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for proc in self.children:
            # Pipes a test asked for are closed here, not left to the garbage collector
            # (which would raise ResourceWarning: warnings are errors in this suite).
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """A process launcher whose children cannot outlive the test."""
    launcher = Processes()
    try:
        yield launcher
    finally:
        launcher.cleanup()


def write_config(
    path: Path,
    endpoints: Endpoints,
    actors: list[dict[str, Any]],
    *,
    heartbeat_s: float = 0.5,
    extra: str = "",
    broker: dict[str, Any] | None = None,
) -> Path:
    """Write a line config: the given endpoints, fast supervisor back-off, and ``actors``;
    ``broker`` adds keys to the ``[broker]`` table.

    In the secured pass, unless ``extra`` has a ``[security]`` table of its own, the config gets
    the session's (``SessionKeys.security_table``) and every actor it names a key pair.
    """
    lines = [
        "[broker]",
        f'command = "{endpoints.command}"',
        f'publish = "{endpoints.publish}"',
        f'subscribe = "{endpoints.subscribe}"',
        f"heartbeat_s = {heartbeat_s}",
        f"heartbeat_timeout_s = {heartbeat_s * 2.5}",
        *(f"{key} = {json.dumps(value)}" for key, value in (broker or {}).items()),
        "",
        "[supervisor]",
        "backoff_initial_s = 0.1",
        "backoff_max_s = 0.5",
        "flap_window_s = 30.0",
        "flap_max_restarts = 3",
        "stop_timeout_s = 5.0",
        "",
    ]
    for actor in actors:
        lines.append("[[actor]]")
        for key, value in actor.items():
            if key != "options":
                lines.append(f"{key} = {json.dumps(value)}")
        if actor.get("options"):
            lines.append("[actor.options]")
            for key, value in actor["options"].items():
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    if SECURE and "[security]" not in extra:
        keys = session_keys()
        for actor in actors:
            keys.ensure(str(actor["name"]))
        extra += keys.security_table(path.parent)
    path.write_text("\n".join(lines) + extra)
    return path


ECHO = {"kind": "echo", "class": "bus.testing:EchoActor"}


@dataclass
class Line:
    """A running test line: its config, endpoints and processes."""

    config: Path
    endpoints: Endpoints
    processes: Processes
    broker: subprocess.Popen[bytes] | None = None
    actors: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self, timeout: float = 5.0) -> Any:
        """A sync client of this line."""
        from bus.client import Client

        return Client(
            self.endpoints.command,
            subscribe_endpoint=self.endpoints.subscribe,
            timeout=scaled(timeout),
        )

    def start_broker(self) -> subprocess.Popen[bytes]:
        """Start (or restart) the broker process and wait until it answers."""
        if SECURE:  # a line left plaintext would pass the secured pass without testing CURVE
            from bus.config import load

            assert load(self.config).security.curve, f"{self.config} has no broker key"
        self.broker = self.processes.start("-m", "bus.cli", "broker", "--config", str(self.config))
        self.wait_broker()
        return self.broker

    def wait_broker(self, timeout: float = 15.0) -> None:
        """Wait until the line's broker answers a ping."""
        with self.client(timeout=0.5) as client, self.stacks_dumped_on_timeout():
            wait_until(lambda: _pings(client), scaled(timeout), "broker to answer")

    @contextmanager
    def stacks_dumped_on_timeout(self) -> Iterator[None]:
        """On a ``WaitTimeout``, have the line's processes write their threads' stacks into the
        test's captured stderr (``bus.logs.dump_stacks_on_signal``), then let it propagate."""
        try:
            yield
        except WaitTimeout:
            running = [p for p in (self.broker, *self.actors.values()) if p and p.poll() is None]
            for proc in running:
                proc.send_signal(STACK_DUMP_SIGNAL)
            if running:
                # Only on the way to a failure: give the handlers a moment to write.
                time.sleep(1.0)
            raise

    def start_actor(self, name: str) -> subprocess.Popen[bytes]:
        """Start the actor ``name`` of the config as its own process and wait until it is up."""
        proc = self.processes.start(
            "-m", "bus.cli", "actor", str(self.config), name, env=actor_environment(name)
        )
        self.actors[name] = proc
        self.wait_up(name, pid=proc.pid)
        return proc

    def wait_up(self, name: str, pid: int | None = None, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until ``name`` is up (and, if given, served by process ``pid``)."""
        with self.client(timeout=1.0) as client:

            def up() -> dict[str, Any] | None:
                try:
                    rows = client.services()
                except (BrokerUnreachable, DeadlineExceeded):
                    return None  # a broker still starting on a loaded machine: ask again
                for row in rows:
                    if (
                        row["name"] == name
                        and row["state"] == "up"
                        and (pid is None or row["pid"] == pid)
                    ):
                        return dict(row)
                return None

            with self.stacks_dumped_on_timeout():
                return wait_until(up, scaled(timeout), f"{name} up")


def _pings(client: Any) -> bool:
    try:
        client.ping(timeout=0.5)
        return True
    except Exception:  # not up yet
        return False


def wait_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Read a child's stdout until its ``{"event": "ready", ...}`` line (simulators print one)."""
    import selectors

    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < end:
        if not selector.select(timeout=max(0.0, end - time.monotonic())):
            break
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buffered += chunk
        for line in buffered.split(b"\n"):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("event") == "ready":
                return message
    pytest.fail(f"no ready line from {proc.args} within {timeout:.1f} s; got {buffered[-500:]!r}")


@pytest.fixture
def line(tmp_path: Path, processes: Processes) -> Line:
    """A line config with two echo actors (``echo1``, ``echo2``); nothing started yet."""
    endpoints = Endpoints.fresh()
    config = write_config(
        tmp_path / "line.toml", endpoints, [{"name": "echo1", **ECHO}, {"name": "echo2", **ECHO}]
    )
    return Line(config, endpoints, processes)


@pytest.fixture
def running_line(line: Line) -> Line:
    """The ``line`` with its broker and ``echo1`` running as separate processes."""
    line.start_broker()
    line.start_actor("echo1")
    return line


# --- the demo line (configs/demo.toml) on free ports ----------------------------------------

#: The demo line's actors (configs/demo.toml).
DEMO_SERVICES = ("echo", "fr1", "p1", "p2", "discovery", "telemetry", "lab")


@dataclass
class DemoLine:
    """The demo line running under ``linebus up`` (``start_demo_line``)."""

    config: DemoConfig
    line: Line
    #: The uuid (hex) of each demo printer by name (p1, p2), as discovery sees it.
    uuids: dict[str, str]


def start_demo_line(folder: Path, processes: Processes) -> DemoLine:
    """configs/demo.toml relocated into ``folder`` and run with ``linebus up``; returns once
    every actor is up, discovery sees both printers and each flux actor answers its printer.

    The printers move to loopback addresses of their own and keep FLUX's fixed ports (vendor
    code writes 23811 as a number), so this line never collides with another demo line.
    """
    from actors.flux.testing import random_loopback
    from bus.errors import BusError

    printers = {"127.0.0.2": random_loopback(), "127.0.0.3": random_loopback()}
    config = DemoConfig.write("demo.toml", folder, hosts=printers)
    endpoints = Endpoints(
        *(
            config.relocate(address)
            for address in ("tcp://127.0.0.1:7750", "tcp://127.0.0.1:7751", "tcp://127.0.0.1:7752")
        )
    )
    line = Line(config.path, endpoints, processes)
    processes.start("-m", "bus.cli", "up", str(config.path))
    line.wait_broker(timeout=30)
    for name in DEMO_SERVICES:
        line.wait_up(name, timeout=30)
    uuids: dict[str, str] = {}
    with line.client(timeout=5) as bus:

        def printers_seen() -> bool:
            uuids.update({row["name"]: row["uuid"] for row in bus.call("discovery", "list")})
            return {"p1", "p2"} <= set(uuids)

        def answers(printer: str) -> Callable[[], bool]:
            def check() -> bool:
                try:
                    bus.call(printer, "deviceinfo", timeout=2)
                    return True
                except BusError:  # not signed in to the printer yet
                    return False

            return check

        wait_until(printers_seen, scaled(30), "discovery to see p1 and p2")
        for printer in ("p1", "p2"):  # each actor signs in to its printer in the background
            wait_until(answers(printer), scaled(30), f"{printer} connected")
    return DemoLine(config, line, uuids)


# --- a real MQTT broker (the plant uplink's tests) -----------------------------------------


class MosquittoBrokers:
    """Starts Mosquitto brokers (``bus.mosquitto.Mosquitto``) that are stopped at teardown."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.brokers: list[Mosquitto] = []

    def start(self, name: str = "mosquitto", **options: Any) -> Mosquitto:
        """A broker in ``<tmp>/<name>`` with ``Mosquitto``'s options, started and accepting."""
        broker = Mosquitto(self.folder / name, **options)
        self.brokers.append(broker)
        return broker.start(timeout=scaled(10))

    def stop_all(self) -> None:
        for broker in self.brokers:
            broker.stop()


def require_mosquitto() -> None:
    """Skip (an ``interop`` test: under CI=true, fail) when Mosquitto is not installed."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; see .ci/run)")


@pytest.fixture
def mosquittos(tmp_path: Path) -> Iterator[MosquittoBrokers]:
    """Start real Mosquitto brokers on free loopback ports (``mosquittos.start(users=...,
    tls=True)``); all stopped at teardown. Mark the test ``interop``: it skips without
    mosquitto, and under CI=true that skip fails."""
    require_mosquitto()
    brokers = MosquittoBrokers(tmp_path)
    try:
        yield brokers
    finally:
        brokers.stop_all()


@pytest.fixture
def mosquitto(mosquittos: MosquittoBrokers) -> Mosquitto:
    """One running Mosquitto (anonymous, plain TCP, no persistence) on a free loopback port."""
    return mosquittos.start()
