"""How the bus fails: dead actors, a restarted broker, malformed and oversized input, deadlines,
missing services, replacement, presence, event gaps, and the asyncio client's errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from bus import protocol
from bus.aio import AsyncClient
from bus.errors import (
    BadRequest,
    BusError,
    Cancelled,
    DeadlineExceeded,
    DeviceFault,
    InvalidArguments,
    Unavailable,
    UnknownService,
)
from tests.conftest import (
    ECHO,
    Endpoints,
    Line,
    Processes,
    scaled,
    secure_socket,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------


def make_line(
    tmp_path: Path,
    processes: Processes,
    *,
    broker: dict[str, Any] | None = None,
    heartbeat_s: float = 0.5,
) -> Line:
    """A line config with echo1 and echo2 and extra ``[broker]`` keys; nothing started."""
    endpoints = Endpoints.fresh()
    config = write_config(
        tmp_path / "line.toml",
        endpoints,
        [{"name": "echo1", **ECHO}, {"name": "echo2", **ECHO}],
        heartbeat_s=heartbeat_s,
    )
    if broker:
        extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in broker.items())
        config.write_text(config.read_text().replace("[broker]\n", "[broker]\n" + extra, 1))
    return Line(config, endpoints, processes)


@contextmanager
def raw_socket(kind: int, endpoint: str) -> Iterator[zmq.Socket[Any]]:
    """A bare pyzmq socket connected to ``endpoint`` (with the tester's key in the secured
    pass), closed afterwards."""
    sock = secure_socket(zmq.Context.instance().socket(kind))
    sock.linger = 0
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(linger=0)


def recv_header(sock: zmq.Socket[Any], timeout: float) -> list[Any]:
    """The decoded header of the next message on ``sock``; fails the test after ``timeout``."""
    if not sock.poll(timeout * 1000):
        pytest.fail(f"no answer within {timeout:.1f} s")
    return msgpack.unpackb(sock.recv_multipart()[0], strict_map_key=False)  # type: ignore[no-any-return]


def service_row(bus: Any, name: str) -> dict[str, Any] | None:
    """The broker's ``services`` row of ``name``, if it has one."""
    return next((row for row in bus.services() if row["name"] == name), None)


def next_matching(sub: Any, predicate: Callable[[Any], bool], timeout: float) -> Any:
    """The next event of ``sub`` that satisfies ``predicate``; fails the test after ``timeout``."""
    end = time.monotonic() + timeout
    while (remaining := end - time.monotonic()) > 0:
        event = sub.next(timeout=remaining)
        if event is not None and predicate(event):
            return event
    pytest.fail(f"no matching event within {timeout:.1f} s")


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Which ``dropped`` counters changed between two ``stats`` calls, and by how much."""
    return {
        key: after.get(key, 0) - before.get(key, 0)
        for key in set(before) | set(after)
        if after.get(key, 0) != before.get(key, 0)
    }


# --- dead actors --------------------------------------------------------------------------


class TestActorKilledUnderSupervisor:
    def test_kill_9_mid_command_fails_the_caller_and_the_actor_comes_back(
        self, tmp_path: Path, processes: Processes
    ) -> None:
        """kill -9 of an actor mid-command fails its caller with unavailable well within two
        heartbeat timeouts, the supervisor starts a new process, and the next call succeeds."""
        endpoints = Endpoints.fresh()
        config = write_config(
            tmp_path / "line.toml", endpoints, [{"name": "echo1", **ECHO}], heartbeat_s=0.5
        )
        line = Line(config, endpoints, processes)
        processes.start("-m", "bus.cli", "up", str(config))
        old_pid = line.wait_up("echo1", timeout=30)["pid"]
        with line.client(timeout=30) as bus:
            call = bus.start("echo1", "work", steps=2000, step_s=0.05, timeout=scaled(120))
            first = next(iter(call.updates(timeout=scaled(10))), None)
            assert first == {"done": 1, "total": 2000}, "the command never started"
            killed_at = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            with pytest.raises(Unavailable) as failure:
                call.result()
            elapsed = time.monotonic() - killed_at
            assert failure.value.code == "unavailable"
            # Heartbeat silence alone would take heartbeat_timeout_s (1.25 s) + one tick (0.5 s).
            assert elapsed < scaled(2.5), f"caller failed only after {elapsed:.2f} s"

            restarted = wait_until(
                lambda: (
                    (row := service_row(bus, "echo1"))
                    and row["state"] == "up"
                    and row["pid"] not in (None, old_pid)
                    and row
                ),
                scaled(30),
                "echo1 restarted under a new pid",
            )
            assert bus.call("echo1", "add", a=2, b=3) == 5
            assert bus.call("echo1", "ping")["pid"] == restarted["pid"]


# --- broker restart -----------------------------------------------------------------------


class TestBrokerNotYetUp:
    def test_call_made_before_the_broker_is_up_is_sent_once_it_is(self, line: Line) -> None:
        """A sync call started before the broker runs waits for the connection and succeeds."""
        from bus.client import Client

        outcome: dict[str, Any] = {}
        calling = threading.Event()

        def call() -> None:
            with Client(line.endpoints.command, timeout=scaled(20)) as bus:
                calling.set()
                try:
                    outcome["value"] = bus.call("broker", "ping")
                except BusError as exc:
                    outcome["error"] = exc

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        assert calling.wait(scaled(10))
        line.start_broker()
        thread.join(scaled(30))
        assert not thread.is_alive()
        assert "error" not in outcome, outcome
        assert outcome["value"]["pong"] is True


class TestBrokerRestart:
    def test_a_client_retrying_as_documented_rides_out_a_broker_restart(self, line: Line) -> None:
        """kill -9 of the broker, then a new one on the same endpoints, under a client that keeps
        calling and retries what is retryable (PROTOCOL.md §8): the actor registers again by
        itself, the same Client object gets its answers again, and every error it saw on the
        way was retryable: never unknown_service, never deadline_exceeded."""
        line.start_broker()
        actor = line.start_actor("echo1")
        answers: list[float] = []
        errors: list[BusError] = []
        stop = threading.Event()

        def follow_the_advice() -> None:
            with line.client(timeout=2) as bus:
                while not stop.is_set():
                    try:
                        if bus.call("echo1", "add", a=2, b=3) == 5:
                            answers.append(time.monotonic())
                    except BusError as exc:
                        errors.append(exc)
                        if not exc.retryable:
                            return
                        time.sleep(0.01)

        caller = threading.Thread(target=follow_the_advice, daemon=True)
        caller.start()
        try:
            wait_until(lambda: len(answers) > 10, scaled(10), "answers before the restart")
            assert line.broker is not None
            line.broker.kill()
            line.broker.wait(timeout=scaled(10))
            killed = time.monotonic()
            line.start_broker()
            wait_until(
                lambda: answers[-1] > killed or not caller.is_alive(),
                scaled(20),
                "an answer through the restarted broker",
            )
        finally:
            stop.set()
            caller.join(scaled(10))
        assert answers[-1] > killed, f"the caller gave up: {errors[-1]!r}"
        assert all(exc.retryable for exc in errors), [exc.code for exc in errors]
        assert "unknown_service" not in {exc.code for exc in errors}
        with line.client() as bus:
            row = service_row(bus, "echo1")
        assert row is not None and (row["state"], row["pid"]) == ("up", actor.pid)
        assert actor.poll() is None


# --- malformed and oversized input ----------------------------------------------------------


def _pack(value: Any) -> bytes:
    return msgpack.packb(value)  # type: ignore[no-any-return]


MALFORMED = {
    "not msgpack": ([b"\xc1\xc1 garbage"], "bad_request", ""),
    "non-array header": ([_pack({"version": 1, "kind": 1})], "bad_request", ""),
    "unknown kind": ([_pack([1, 42, "m-kind"])], "bad_request", ""),
    "version 99": (
        [_pack([99, 1, "m-v99", "echo1", "add", 5.0, _pack({"a": 1})])],
        "unsupported_version",
        "m-v99",
    ),
    "ttl of the wrong type": (
        [_pack([1, 1, "m-ttl", "echo1", "add", "soon", _pack({"a": 1})])],
        "bad_request",
        "m-ttl",
    ),
    "msg_id of the wrong type": (
        [_pack([1, 1, 7, "echo1", "add", 5.0, _pack({"a": 1})])],
        "bad_request",
        "",
    ),
}


class TestMalformedInput:
    @pytest.mark.parametrize("frames, code, msg_id", MALFORMED.values(), ids=MALFORMED.keys())
    def test_is_answered_with_an_error_counted_and_survived(
        self, running_line: Line, frames: list[bytes], code: str, msg_id: str
    ) -> None:
        """A malformed message gets an ERROR with its code, is counted once among the drops
        under a fixed key (never free text), and the broker keeps serving."""
        with (
            running_line.client() as bus,
            raw_socket(zmq.DEALER, running_line.endpoints.command) as sock,
        ):
            before = bus.stats()["dropped"]
            sock.send_multipart(frames)
            header = recv_header(sock, scaled(5))
            assert header[:4] == [1, 4, msg_id, code]
            details = header[5]
            stable = {
                "too_large",
                "header_too_large",
                "duplicate_id",
                "unhandled",
            }  # docs/PROTOCOL.md §10
            reason = details.get("reason")
            expected_key = (
                reason if reason in stable else ("malformed" if code == "bad_request" else code)
            )
            assert stats_delta(before, bus.stats()["dropped"]) == {expected_key: 1}
            assert bus.call("echo1", "add", a=2, b=3) == 5

    def test_all_kinds_from_one_connection_in_a_row(self, running_line: Line) -> None:
        """Every malformed message sent back to back on one connection gets its own ERROR, in
        order, and the same connection can then make a normal request."""
        with (
            running_line.client() as bus,
            raw_socket(zmq.DEALER, running_line.endpoints.command) as sock,
        ):
            before = bus.stats()["dropped"]
            for frames, _, _ in MALFORMED.values():
                sock.send_multipart(frames)
            answers = [recv_header(sock, scaled(5)) for _ in MALFORMED]
            assert [(h[1], h[2], h[3]) for h in answers] == [
                (4, msg_id, code) for _, code, msg_id in MALFORMED.values()
            ]
            assert sum(stats_delta(before, bus.stats()["dropped"]).values()) == len(MALFORMED)
            sock.send_multipart(
                protocol.encode_request("m-good", "echo1", "add", 5.0, {"a": 2, "b": 3})
            )
            reply = recv_header(sock, scaled(5))
            assert reply[:3] == [1, 3, "m-good"] and msgpack.unpackb(reply[3]) == 5

    def test_hello_with_a_common_version_is_answered_with_broker_info(
        self, running_line: Line
    ) -> None:
        """HELLO listing version 1 is answered with version 1 and the broker's pid and endpoints."""
        with raw_socket(zmq.DEALER, running_line.endpoints.command) as sock:
            sock.send_multipart(protocol.encode_hello([1, 7], {"client": "test"}))
            header = recv_header(sock, scaled(5))
            assert header[:3] == [1, 10, [1]]
            assert (
                header[3]["command"] == running_line.endpoints.command
                and header[3]["pid"] == running_line.broker.pid
            )  # type: ignore[union-attr]

    def test_hello_without_a_common_version_is_unsupported_version(
        self, running_line: Line
    ) -> None:
        """HELLO with no common version gets ERROR unsupported_version naming what is supported (§12)."""
        with raw_socket(zmq.DEALER, running_line.endpoints.command) as sock:
            sock.send_multipart(protocol.encode_hello([99], {}))
            header = recv_header(sock, scaled(5))
            assert header[:4] == [1, 4, "", "unsupported_version"]
            assert header[5] == {"supported": [1]}


class TestOversized:
    def test_request_over_max_message_bytes_is_bad_request(
        self, tmp_path: Path, processes: Processes
    ) -> None:
        """A 2 MiB argument against max_message_bytes = 1 MiB is refused with bad_request
        (reason too_large); smaller requests still pass and the broker keeps running."""
        line = make_line(tmp_path, processes, broker={"max_message_bytes": MiB})
        line.start_broker()
        line.start_actor("echo1")
        with line.client() as bus:
            with pytest.raises(BadRequest) as refused:
                bus.call("echo1", "length", data=bytes(2 * MiB))
            assert refused.value.code == "bad_request"
            assert refused.value.details["reason"] == "too_large"
            assert refused.value.details["size"] > 2 * MiB
            assert bus.call("echo1", "length", data=bytes(MiB // 2)) == MiB // 2
            assert bus.stats()["dropped"]["too_large"] == 1
        assert line.broker is not None and line.broker.poll() is None


# --- deadlines ----------------------------------------------------------------------------


class TestBrokerDeadline:
    def test_broker_expires_the_request_and_cancels_it_at_the_actor(
        self, tmp_path: Path, processes: Processes
    ) -> None:
        """A request with no ttl of its own expires at the broker's default_timeout_s: the caller
        gets deadline_exceeded from the broker and the actor gets a CANCEL that frees it."""
        line = make_line(tmp_path, processes, broker={"default_timeout_s": 0.5})
        line.start_broker()
        line.start_actor("echo1")
        with (
            line.client(timeout=scaled(5)) as bus,
            raw_socket(zmq.DEALER, line.endpoints.command) as sock,
        ):
            sent_at = time.monotonic()
            # ttl nil: the actor sets no deadline of its own, so only the broker's CANCEL can stop it.
            sock.send_multipart(
                protocol.encode_request(
                    "dl-1", "echo1", "work", None, {"steps": 1, "step_s": 600.0}
                )
            )
            header = recv_header(sock, scaled(10))
            elapsed = time.monotonic() - sent_at
            assert header[:4] == [1, 4, "dl-1", "deadline_exceeded"]
            assert header[4] == "no answer from 'echo1' before the deadline"
            assert elapsed >= 0.45, f"expired after {elapsed:.2f} s, before its deadline"
            # Without the CANCEL the actor would be busy for 600 s and this call would time out.
            assert bus.call("echo1", "add", a=1, b=2) == 3
            dropped = bus.stats()["dropped"]
            assert dropped["deadline"] == 1
            assert dropped["late_reply"] == 1  # the actor's `cancelled` answer, after the deadline

    def test_client_timeout_fails_with_deadline_exceeded_and_frees_the_actor(
        self, running_line: Line
    ) -> None:
        """A call whose timeout passes while the command runs raises DeadlineExceeded, and the
        actor is free for the next call soon after."""
        with running_line.client(timeout=scaled(5)) as bus:
            with pytest.raises(DeadlineExceeded):
                bus.call("echo1", "work", steps=1, step_s=600.0, timeout=0.3)
            assert bus.call("echo1", "add", a=1, b=2) == 3


class TestCancel:
    def test_cancel_of_a_running_command(self, running_line: Line) -> None:
        """Cancelling a running coroutine command ends it with Cancelled and frees the actor."""
        with running_line.client(timeout=scaled(10)) as bus:
            call = bus.start("echo1", "work", steps=6000, step_s=0.05)
            assert next(iter(call.updates(timeout=scaled(10))), None) == {"done": 1, "total": 6000}
            call.cancel()
            with pytest.raises(Cancelled):
                call.result()
            assert bus.call("echo1", "add", a=1, b=2) == 3

    def test_cancel_arriving_with_its_request(self, tmp_path: Path, processes: Processes) -> None:
        """A CANCEL that reaches the actor together with its REQUEST is answered with cancelled,
        and the actor stays free for the next command."""
        line = make_line(tmp_path, processes, heartbeat_s=1.0)
        line.start_broker()
        actor = line.start_actor("echo1")
        with line.client(timeout=scaled(3)) as bus:
            # Freeze the actor so that the broker's forwards of both messages wait in its socket
            # and are read in one batch when it resumes.
            os.kill(actor.pid, signal.SIGSTOP)
            try:
                call = bus.start("echo1", "work", steps=1, step_s=600.0)
                call.cancel()
                wait_until(
                    lambda: bus.stats()["routed"].get("cancel") == 1,
                    scaled(1),
                    "the CANCEL forwarded to the actor",
                )
            finally:
                os.kill(actor.pid, signal.SIGCONT)
            with pytest.raises(Cancelled):
                call.result()
            assert bus.call("echo1", "add", a=1, b=2) == 3


# --- service lookup -----------------------------------------------------------------------


class TestServiceLookup:
    def test_unknown_service(self, running_line: Line) -> None:
        """A service that never registered is unknown_service."""
        with running_line.client() as bus, pytest.raises(UnknownService) as failure:
            bus.call("nosuch", "echo")
        assert failure.value.code == "unknown_service"

    def test_known_but_down_is_unavailable(self, running_line: Line) -> None:
        """A service that registered once and is now down is unavailable, not unknown_service."""
        actor = running_line.actors["echo1"]
        actor.terminate()
        actor.wait(timeout=scaled(10))
        with running_line.client() as bus:
            wait_until(
                lambda: (row := service_row(bus, "echo1")) and row["state"] == "down",
                scaled(10),
                "echo1 down",
            )
            with pytest.raises(Unavailable) as failure:
                bus.call("echo1", "echo")
            assert failure.value.code == "unavailable"


class TestReplacement:
    def test_second_registration_of_a_name_replaces_the_first(self, running_line: Line) -> None:
        """A second process registering the same name takes it over; the first one stops."""
        first = running_line.actors["echo1"]
        second = running_line.start_actor("echo1")  # waits until the broker lists the new pid
        with running_line.client() as bus:
            row = service_row(bus, "echo1")
            assert row is not None and (row["state"], row["pid"], row["registrations"]) == (
                "up",
                second.pid,
                2,
            )
            assert bus.call("echo1", "ping")["pid"] == second.pid
        assert first.wait(timeout=scaled(15)) == 0, "the replaced actor should stop by itself"
        assert second.poll() is None


# --- events -------------------------------------------------------------------------------


class TestPresence:
    def test_up_and_down_events(self, running_line: Line) -> None:
        """Subscribers to presence. see `up` when an actor registers and `down` when it stops."""
        with running_line.client() as bus, bus.subscribe("presence.") as sub:
            sub.wait_ready(timeout=scaled(5))
            actor = running_line.start_actor("echo2")
            up = next_matching(sub, lambda e: e.topic == "presence.echo2", scaled(10))
            assert (up.src, up.data["service"], up.data["kind"], up.data["state"]) == (
                "broker",
                "echo2",
                "echo",
                "up",
            )
            actor.terminate()
            actor.wait(timeout=scaled(10))
            down = next_matching(sub, lambda e: e.topic == "presence.echo2", scaled(10))
            assert down.data["state"] == "down" and down.data["reason"]
            assert down.seq == up.seq + 1


class TestGapDetection:
    def test_missing_sequence_numbers_are_reported_and_new_epochs_are_not_gaps(
        self, line: Line
    ) -> None:
        """Events with seq 1, 2, 5 show missed == 2 on the third; a new epoch from seq 1 is no gap."""
        line.start_broker()
        with (
            line.client() as bus,
            bus.subscribe("gap.") as sub,
            raw_socket(zmq.PUB, line.endpoints.publish) as pub,
        ):
            sub.wait_ready(timeout=scaled(5))
            warm_epoch, epoch, new_epoch = (
                protocol.new_epoch(),
                protocol.new_epoch(),
                protocol.new_epoch(),
            )
            # The broker's XSUB passes the subscription on to this PUB asynchronously: publish a
            # warm-up topic until one arrives, after which nothing on this connection is dropped.
            seqs = itertools.count(1)

            def warmed_up() -> bool:
                seq = next(seqs)
                pub.send(
                    protocol.encode_event("gap.warm", "raw", warm_epoch, seq, time.time(), None)
                )
                event = sub.next(timeout=0.05)
                return event is not None and event.topic == "gap.warm"

            wait_until(
                warmed_up, scaled(10), "the publisher's events to reach the subscriber", interval=0
            )
            sent = [(epoch, 1), (epoch, 2), (epoch, 5), (new_epoch, 1), (new_epoch, 2)]
            for ep, n in sent:
                pub.send(protocol.encode_event("gap.t", "raw", ep, n, time.time(), {"n": n}))
            got = [next_matching(sub, lambda e: e.topic == "gap.t", scaled(5)) for _ in sent]
            assert [(e.epoch, e.seq, e.missed) for e in got] == [
                (epoch, 1, 0),
                (epoch, 2, 0),
                (epoch, 5, 2),
                (new_epoch, 1, 0),
                (new_epoch, 2, 0),
            ]
            assert sub.missed_total == 2


# --- asyncio client -----------------------------------------------------------------------


def async_client(line: Line, timeout: float = 10.0) -> AsyncClient:
    """An asyncio client of ``line`` (use with ``async with``)."""
    return AsyncClient(
        line.endpoints.command, subscribe_endpoint=line.endpoints.subscribe, timeout=scaled(timeout)
    )


class TestAsyncClient:
    async def test_call_made_before_the_broker_is_up_is_sent_once_it_is(self, line: Line) -> None:
        """A call started before the broker runs is sent when the connection comes up, as the
        sync client does, instead of being lost."""
        async with AsyncClient(line.endpoints.command, timeout=scaled(8)) as bus:
            call = asyncio.create_task(bus.call("broker", "ping"))
            await asyncio.sleep(0)  # let the task try its send while nothing listens yet
            await asyncio.to_thread(line.start_broker)
            assert (await call)["pong"] is True

    async def test_call(self, running_line: Line) -> None:
        """A call returns the actor's result."""
        async with async_client(running_line) as bus:
            assert await bus.call("echo1", "add", a=2, b=3) == 5
            assert (await bus.ping())["pong"] is True

    async def test_progress_then_result(self, running_line: Line) -> None:
        """start() yields each progress update through updates(), then the result."""
        async with async_client(running_line) as bus:
            call = await bus.start("echo1", "work", steps=3, step_s=0.01)
            updates = [update async for update in call.updates()]
            assert updates == [{"done": i, "total": 3} for i in (1, 2, 3)]
            assert await call == {"steps": 3}

    async def test_cancel(self, running_line: Line) -> None:
        """cancel() stops a running command: awaiting the call raises Cancelled and the actor is free."""
        async with async_client(running_line) as bus:
            call = await bus.start("echo1", "work", steps=6000, step_s=0.05)
            updates = call.updates()
            assert await anext(updates) == {"done": 1, "total": 6000}  # running, not just received
            await call.cancel()
            with pytest.raises(Cancelled):
                await call
            assert await bus.call("echo1", "add", a=1) == 1

    async def test_cancelling_the_awaiting_task_cancels_the_command(
        self, running_line: Line
    ) -> None:
        """Cancelling the task that awaits a call sends CANCEL, so the actor stops the command."""
        async with async_client(running_line) as bus:
            task = asyncio.create_task(bus.call("echo1", "work", steps=1, step_s=600.0))
            end = time.monotonic() + scaled(10)
            while not any(
                row["name"] == "echo1" and row["inflight"] == 1 for row in await bus.services()
            ):
                assert time.monotonic() < end, "the call never reached the actor"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await bus.call("echo1", "add", a=1, timeout=scaled(5)) == 1

    @pytest.mark.parametrize(
        "service, command, args, error",
        [
            ("nosuch", "echo", {}, UnknownService),
            ("echo1", "add", {"a": "x"}, InvalidArguments),
            ("echo1", "fail", {}, DeviceFault),
        ],
        ids=["unknown_service", "invalid_arguments", "device_fault"],
    )
    async def test_typed_errors(
        self,
        running_line: Line,
        service: str,
        command: str,
        args: dict[str, Any],
        error: type[BusError],
    ) -> None:
        """Failures arrive as the typed error of their wire code."""
        async with async_client(running_line) as bus:
            with pytest.raises(error) as failure:
                await bus.call(service, command, args)
            assert type(failure.value) is error

    async def test_subscription(self, running_line: Line) -> None:
        """A subscription receives the actor's events in order, with no gap."""
        async with async_client(running_line) as bus:
            sub = bus.subscribe("echo1.")
            try:
                await sub.wait_ready(timeout=scaled(5))
                assert await bus.call("echo1", "emit", event="tick", count=2, data=7) == 2
                first = await sub.next(timeout=scaled(5))
                second = await sub.next(timeout=scaled(5))
                assert first is not None and second is not None
                assert (first.topic, first.src, first.data, first.missed) == (
                    "echo1.tick",
                    "echo1",
                    7,
                    0,
                )
                assert (second.seq - first.seq, second.missed, sub.missed_total) == (1, 0, 0)
            finally:
                sub.close()
