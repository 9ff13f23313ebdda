"""The C client library (clients/c), written from docs/PROTOCOL.md, against a real line.

One line (broker + ``echo1``) serves the whole module. ``test-live`` (clients/c/tests/live.c)
runs the call cases in one process and prints one JSON line per case; ``linebus-watch`` and
``linebus-call`` are the library's example programs. In the secured pass the line has CURVE and
the C programs take the tester's keys from the environment (LINEBUS_KEY_FILE,
LINEBUS_BROKER_KEY_FILE), as the Python clients of the test do.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import ipc, protocol
from bus.security.keys import KeyPair, generate_keypair, load_keypair, load_public_key
from bus.testing import free_port
from tests.conftest import (
    ECHO,
    KEY_VARIABLES,
    SECURE,
    Endpoints,
    Line,
    Processes,
    scaled,
    secure_socket,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.interop]


@pytest.fixture(scope="module")
def c_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """A broker and ``echo1`` for the whole module (starting a line costs seconds)."""
    folder = tmp_path_factory.mktemp("c-line")
    endpoints = Endpoints.fresh()
    config = write_config(
        folder / "line.toml",
        endpoints,
        [{"name": "echo1", **ECHO}],
        broker={"ipc_dir": str(folder / "run")},  # its Unix sockets too: the last test's
    )
    processes = Processes()
    try:
        line = Line(config, endpoints, processes)
        line.start_broker()
        line.start_actor("echo1")
        yield line
    finally:
        processes.cleanup()


@pytest.fixture(scope="module")
def live_cases(c_client_build: Path, c_line: Line) -> dict[str, dict[str, Any]]:
    """The cases of test-live, by name."""
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    run = subprocess.run(
        [str(c_client_build / "test-live"), c_line.endpoints.command, nowhere],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    cases = [json.loads(line) for line in run.stdout.splitlines()]
    by_name = {case["case"]: case for case in cases}
    by_name["unreachable"]["endpoint"] = nowhere
    return by_name


def test_c_call_reports_progress_in_order(live_cases: dict[str, dict[str, Any]]) -> None:
    """Each PROGRESS reaches the callback, in order, before the result."""
    case = live_cases["progress"]
    assert (case["code"], case["result"], case["progress"]) == ("ok", {"steps": 3}, [1, 2, 3])


def test_c_call_gets_typed_errors(live_cases: dict[str, dict[str, Any]]) -> None:
    """Errors arrive as §10's codes with their details and retryable flag: from the actor's
    argument check, from a device error, and from the broker."""
    invalid = live_cases["invalid_arguments"]
    assert (invalid["code"], invalid["retryable"]) == ("invalid_arguments", False)
    assert invalid["details"]["argument"] == "a"
    device = live_cases["device_unavailable"]
    assert (device["code"], device["wire_code"], device["retryable"]) == (
        "device_unavailable",
        "device_unavailable",
        True,
    )
    too_old = live_cases["too_old"]  # a code §10 gained with gap repair: known, not remote
    assert (too_old["code"], too_old["wire_code"]) == ("too_old", "too_old")
    assert live_cases["unknown_service"]["code"] == "unknown_service"


def test_c_call_deadline(live_cases: dict[str, dict[str, Any]]) -> None:
    """A command that outlives the call's 0.3 s deadline ends with deadline_exceeded near the
    deadline (the broker's answer), not when the command would end (2 s); a timeout of 0
    fails at once, before anything is sent."""
    case = live_cases["deadline"]
    assert case["code"] == "deadline_exceeded"
    assert 0.25 <= case["elapsed"] < scaled(1.5)
    assert len(case["progress"]) < 40  # the command did not run to its end
    no_time = live_cases["no_time"]
    assert no_time["code"] == "deadline_exceeded" and no_time["elapsed"] < 0.05


@pytest.mark.parametrize("how", ["cancel_from_progress", "cancel_from_flag"])
def test_c_call_cancel(live_cases: dict[str, dict[str, Any]], how: str) -> None:
    """Cancelling (the progress callback returns non-zero, or a signal handler sets the flag)
    sends CANCEL; the actor stops the 5 s command and the call ends with cancelled."""
    case = live_cases[how]
    assert case["code"] == "cancelled", case
    assert case["elapsed"] < scaled(3)
    assert len(case["progress"]) < 100  # the command did not run to its end
    if how == "cancel_from_progress":
        assert case["progress"][0] == 1


def test_c_call_bulk_frames(live_cases: dict[str, dict[str, Any]]) -> None:
    """100 000 bytes go up as a bulk frame and arrive whole; 70 000 bytes come back through a
    bulk frame, every byte as the actor made it."""
    assert live_cases["bulk_frames_sent"]["count"] == 1
    up = live_cases["bulk_up"]
    assert (up["code"], up["result"]) == ("ok", 100000)
    down = live_cases["bulk_down"]
    assert (down["code"], down["size"], down["pattern"]) == ("ok", 70000, True)


def test_c_call_broker_unreachable(live_cases: dict[str, dict[str, Any]]) -> None:
    """With no broker at the endpoint the call fails at its deadline with broker_unreachable
    (retryable), naming the endpoint."""
    case = live_cases["unreachable"]
    assert (case["code"], case["retryable"]) == ("broker_unreachable", True)
    assert case["details"]["endpoint"] == case["endpoint"]
    assert case["elapsed"] < scaled(2)


class _Lines:
    """Lines of a child's pipe, each wait bounded."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.selector = selectors.DefaultSelector()
        self.selector.register(pipe, selectors.EVENT_READ)
        self.buffered = b""

    def next(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while b"\n" not in self.buffered:
            remaining = end - time.monotonic()
            if remaining <= 0 or not self.selector.select(remaining):
                raise AssertionError(f"no line within {timeout} s; have {self.buffered!r}")
            chunk = os.read(self.pipe.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"the pipe closed; have {self.buffered!r}")
            self.buffered += chunk
        line, self.buffered = self.buffered.split(b"\n", 1)
        return line.decode()


def test_c_subscriber_detects_gaps(c_client_build: Path, c_line: Line) -> None:
    """linebus-watch gets events by prefix once its subscription is ready: echo1's in order
    (missed 0), and on a topic whose publisher skips seq 3 and 4, missed 2; a late event misses
    nothing and does not lower the count; a new epoch starts the count afresh (missed 0)."""
    endpoints = c_line.endpoints
    watch = subprocess.Popen(
        [
            str(c_client_build / "linebus-watch"),
            "--ready",
            endpoints.command,
            endpoints.subscribe,
            "echo1.",
            "ctest.",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    context = zmq.Context()
    publisher = secure_socket(context.socket(zmq.PUB))
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.connect(endpoints.publish)
    try:
        assert watch.stdout is not None and watch.stderr is not None
        assert _Lines(watch.stderr).next(scaled(15)) == "subscribed"
        out = _Lines(watch.stdout)
        with c_line.client() as bus:
            # The actor learns of the subscription asynchronously: emit until one arrives.
            _emit_until_seen(bus, out)
            bus.call("echo1", "emit", event="tick", count=3, data={"n": 2})
            first = json.loads(out.next(scaled(5)))
            while first["data"] == {"n": 1}:  # more of the first emits, still on their way
                first = json.loads(out.next(scaled(5)))
            ticks = [first, *(json.loads(out.next(scaled(5))) for _ in range(2))]
        assert [(e["seq"] - first["seq"], e["missed"], e["data"]) for e in ticks] == [
            (0, 0, {"n": 2}),
            (1, 0, {"n": 2}),
            (2, 0, {"n": 2}),
        ]
        assert {e["topic"] for e in ticks} == {"echo1.tick"} and ticks[0]["src"] == "echo1"

        # A raw publisher: seq 1 until the watcher has it (our PUB connects asynchronously),
        # then 2, 5 (3 and 4 lost) and seq 9 of a new epoch.
        epoch = protocol.new_epoch()
        seen = _publish_until_seen(publisher, out, epoch)
        sent = ((epoch, 2), (epoch, 5), (epoch, 4), (epoch, 6), (epoch + 1, 9))
        for event_epoch, seq in sent:
            publisher.send(protocol.encode_event("ctest.gap", "ctest", event_epoch, seq, 1.5, seq))
        rest = [json.loads(out.next(scaled(5))) for _ in sent]
        while rest[0]["seq"] == 1:  # further copies of seq 1 sent before the first arrived
            rest = [*rest[1:], json.loads(out.next(scaled(5)))]
        assert seen["missed"] == 0
        # 3 and 4 missing before 5; 4 then arrives late (missed 0, and the last seen stays 5, so
        # 6 is in order); a new epoch counts afresh.
        assert [(e["epoch"], e["seq"], e["missed"], e["data"]) for e in rest] == [
            (epoch, 2, 0, 2),
            (epoch, 5, 2, 5),
            (epoch, 4, 0, 4),
            (epoch, 6, 0, 6),
            (epoch + 1, 9, 0, 9),
        ]
    finally:
        publisher.close()
        context.term()
        watch.kill()
        watch.wait()
        for pipe in (watch.stdout, watch.stderr):
            if pipe is not None:
                pipe.close()


def _emit_until_seen(bus: Any, out: _Lines) -> dict[str, Any]:
    for _ in range(100):
        bus.call("echo1", "emit", event="tick", count=1, data={"n": 1})
        try:
            return dict(json.loads(out.next(0.1)))
        except AssertionError:
            continue
    raise AssertionError("no echo1.tick reached the C subscriber")


def _publish_until_seen(publisher: Any, out: _Lines, epoch: int) -> dict[str, Any]:
    for _ in range(100):
        publisher.send(protocol.encode_event("ctest.gap", "ctest", epoch, 1, 1.5, 1))
        try:
            return dict(json.loads(out.next(0.1)))
        except AssertionError:
            continue
    raise AssertionError("no ctest.gap event reached the C subscriber")


def _call(
    build: Path, endpoint: str, env: dict[str, str], *args: str
) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    run = subprocess.run(
        [str(build / "linebus-call"), endpoint, "echo1", "add", *args],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env={**os.environ, **env},
        check=False,
    )
    return run.returncode, json.loads(run.stdout), time.monotonic() - started


def test_c_call_example(c_client_build: Path, c_line: Line) -> None:
    """The example program calls with NAME=VALUE arguments, keys from the environment."""
    status, answer, _ = _call(c_client_build, c_line.endpoints.command, {}, "a=2", "b=40")
    assert (status, answer) == (0, {"result": 42})


def test_c_call_over_the_broker_s_unix_sockets(c_client_build: Path, c_line: Line) -> None:
    """A C program on the broker's host may take its ``ipc_dir`` sockets (docs/PROTOCOL.md §2):
    the same protocol over another transport, which libzmq opens from the endpoint alone."""
    local = ipc.endpoints(Path(c_line.config).parent / "run")
    status, answer, _ = _call(c_client_build, local["command"], {}, "a=2", "b=3")
    assert (status, answer) == (0, {"result": 5})


def test_c_client_refuses_half_a_key_configuration(c_client_build: Path, tmp_path: Path) -> None:
    """Our key without the broker's is a config_error naming the missing variable, before any
    connection (never a fall-back to plaintext)."""
    files = generate_keypair(tmp_path, "half")
    env = dict.fromkeys(KEY_VARIABLES, "") | {"LINEBUS_KEY_FILE": str(files.secret_path)}
    status, answer, _ = _call(c_client_build, "tcp://127.0.0.1:9", env, "a=1")
    assert (status, answer["error"]["code"]) == (1, "config_error")
    assert "LINEBUS_BROKER_KEY_FILE" in answer["error"]["message"]


def test_c_client_refuses_a_secret_key_others_can_read(
    c_client_build: Path, tmp_path: Path
) -> None:
    """A secret key file readable by its group is a config_error that says how to fix it."""
    files = generate_keypair(tmp_path, "open")
    files.secret_path.chmod(0o640)
    broker = generate_keypair(tmp_path, "broker")
    env = dict.fromkeys(KEY_VARIABLES, "") | {
        "LINEBUS_KEY_FILE": str(files.secret_path),
        "LINEBUS_BROKER_KEY_FILE": str(broker.public_path),
    }
    status, answer, _ = _call(c_client_build, "tcp://127.0.0.1:9", env, "a=1")
    assert (status, answer["error"]["code"]) == (1, "config_error")
    assert "chmod 600" in answer["error"]["message"]


def test_c_client_takes_z85_keys(c_client_build: Path, c_line: Line) -> None:
    """LINEBUS_KEY and LINEBUS_BROKER_KEY (Z85 text) work as the files do, the public key
    derived from the secret: on the secured line the tester's keys call; on the plain line a
    Z85 key pair is used (the handshake fails, naming the derived public key)."""
    if SECURE:
        own = load_keypair(file=os.environ["LINEBUS_KEY_FILE"])
        broker = load_public_key(file=os.environ["LINEBUS_BROKER_KEY_FILE"])
    else:
        public, secret = zmq.curve_keypair()
        own, broker = KeyPair(public, secret), zmq.curve_keypair()[0]
    assert own.secret is not None
    env = dict.fromkeys(KEY_VARIABLES, "") | {
        "LINEBUS_KEY": own.secret.decode(),
        "LINEBUS_BROKER_KEY": broker.decode(),
    }
    status, answer, _ = _call(c_client_build, c_line.endpoints.command, env, "a=1", "b=2")
    if SECURE:
        assert (status, answer) == (0, {"result": 3})
    else:
        assert (status, answer["error"]["code"]) == (1, "unauthenticated")
        assert answer["error"]["details"]["key"] == own.public.decode()


def test_c_client_key_refused_at_once(c_client_build: Path, c_line: Line, tmp_path: Path) -> None:
    """A key the broker does not accept fails the call with unauthenticated at once, not at its
    10 s deadline, and ends a subscriber's wait for events: on the secured line an unknown key
    (the message names it), on the plain line any key (the broker speaks no CURVE)."""
    stranger = generate_keypair(tmp_path, "mallory")
    env = dict.fromkeys(KEY_VARIABLES, "") | {"LINEBUS_KEY_FILE": str(stranger.secret_path)}
    if SECURE:
        env["LINEBUS_BROKER_KEY_FILE"] = os.environ["LINEBUS_BROKER_KEY_FILE"]
    else:
        env["LINEBUS_BROKER_KEY_FILE"] = str(generate_keypair(tmp_path, "broker").public_path)
    status, answer, elapsed = _call(c_client_build, c_line.endpoints.command, env, "a=1")
    assert (status, answer["error"]["code"]) == (1, "unauthenticated"), answer
    assert elapsed < scaled(5)
    details = answer["error"]["details"]
    assert details["endpoint"] == c_line.endpoints.command
    if SECURE:
        assert details["reason"] == "refused_key"
        assert stranger.public_key.decode() in answer["error"]["message"]
    # A subscriber with that key stops waiting for events at once too.
    started = time.monotonic()
    watch = subprocess.run(
        [str(c_client_build / "linebus-watch"), c_line.endpoints.subscribe, "echo1."],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env={**os.environ, **env},
        check=False,
    )
    assert watch.returncode == 1 and "unauthenticated" in watch.stderr, watch.stderr
    assert time.monotonic() - started < scaled(5)


def test_c_call_routes_answers_by_msg_id(c_client_build: Path) -> None:
    """Against a stand-in broker (a ROUTER in this test): answers with msg_id "" or another
    request's id are dropped, and an ERROR for our call that carries a bulk frame ends the
    call with bad_request (§3), not at its deadline."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    env = dict.fromkeys(KEY_VARIABLES, "")  # the stand-in speaks plaintext in both passes
    call = subprocess.Popen(
        [str(c_client_build / "linebus-call"), f"tcp://127.0.0.1:{port}", "echo1", "add", "a=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        assert router.poll(scaled(10) * 1000), "no request from the C client"
        identity, header = router.recv_multipart()
        message = protocol.decode([header])
        assert (message.kind, message.service, message.command) == (
            protocol.Kind.REQUEST,
            "echo1",
            "add",
        )
        assert message.value() == {"a": 1}
        ours = message.msg_id
        for frames in (
            protocol.encode_error("", "bad_request", "about some READY", {}),
            protocol.encode_reply(ours + "0", 7),  # another request's answer
            [*protocol.encode_error(ours, "busy", "with a bulk frame", {}), b"stray"],
        ):
            router.send_multipart([identity, *frames])
        out, err = call.communicate(timeout=scaled(5))  # the call's own deadline is 10 s
    finally:
        if call.poll() is None:
            call.kill()
            call.communicate()
        router.close()
        context.term()
    assert call.returncode == 1, err
    error = json.loads(out)["error"]
    assert error["code"] == "bad_request" and "bulk" in error["message"], error
