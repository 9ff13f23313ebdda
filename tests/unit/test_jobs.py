"""Job events (bus._jobs), in process: the throttle with a fake clock, and the events of real
commands run by ``bus._requests.Requests`` (ok, error, cancel, a command that is no job).

The over-the-wire case (a subscriber on a real line) is in tests/integration/test_terminal.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from bus import protocol
from bus._jobs import JOB_EVENT, JobEvents
from bus._requests import Requests
from bus.commands import CommandContext, command, command_table
from bus.errors import DeviceFault
from bus.testing import async_wait_until

WAIT_S = 3.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Published:
    """Collects what a JobEvents publishes (as ``Publisher.publish`` would get it)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: str, data: Any) -> None:
        assert event == JOB_EVENT
        self.events.append(data)

    def states(self) -> list[str]:
        return [e["state"] for e in self.events]


async def test_progress_is_throttled_and_the_last_update_is_sent_before_ended() -> None:
    clock, published = FakeClock(), Published()
    job = JobEvents(published, min_interval_s=0.25, clock=clock).start("m-1", "flash")
    assert published.events == [
        {"job": "m-1", "command": "flash", "state": "started", "elapsed_s": 0.0}
    ]
    for done in range(1, 101):  # a fast loop: 100 updates within 0.1 s
        job.progress({"done": done, "total": 100})
        clock.now += 0.001
    # The first went out at once; the rest are held (the newest replaces the older ones).
    assert [e.get("progress") for e in published.events[1:]] == [{"done": 1, "total": 100}]
    clock.now += 1.0
    job.end(None)
    assert published.states() == ["started", "progress", "progress", "ended"]
    assert published.events[2]["progress"] == {"done": 100, "total": 100}
    assert published.events[3] == {
        "job": "m-1",
        "command": "flash",
        "state": "ended",
        "elapsed_s": 1.1,
        "outcome": "ok",
        "duration_s": 1.1,
    }


async def test_a_held_update_goes_out_when_the_interval_has_passed() -> None:
    published = Published()
    job = JobEvents(published, min_interval_s=0.05).start("m-2", "run")
    job.progress({"done": 1, "total": 3})
    job.progress({"done": 2, "total": 3})  # held: the command then stays quiet
    await async_wait_until(lambda: len(published.events) == 3, WAIT_S, "the held update")
    assert published.events[2]["progress"] == {"done": 2, "total": 3}
    job.end(DeviceFault("jammed"))
    assert published.events[3]["outcome"] == "error"
    assert published.events[3]["code"] == "device_fault"
    assert published.events[3]["message"] == "jammed"
    assert len(published.events) == 4  # nothing held, so nothing sent twice


class Worker:
    """A target for ``Requests``: one job that reports progress, and a plain command."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    @command
    async def run(self, steps: int, ctx: CommandContext, fail: bool = False) -> int:
        for i in range(steps):
            ctx.progress({"done": i + 1, "total": steps})
        if fail:
            raise DeviceFault("channel 3 failed")
        await self.release.wait()
        return steps

    @command
    def plain(self) -> str:
        return "ok"

    @command
    async def unencodable(self, ctx: CommandContext) -> Any:
        return object()  # msgpack cannot encode it: the caller gets internal


class Harness:
    def __init__(self) -> None:
        self.worker = Worker()
        self.published = Published()
        self.answers: list[tuple[int, str]] = []
        self.requests = Requests(
            self.worker,
            command_table(Worker),
            service="w1",
            kind="worker",
            log=structlog.get_logger(),
            jobs=JobEvents(self.published),
        )
        self.requests.start(asyncio.get_running_loop(), self._send, max_queue=10)

    def _send(self, frames: list[Any]) -> None:
        kind, header = protocol.split(frames[0])
        self.answers.append((kind, header[2]))

    def request(self, msg_id: str, name: str, args: dict[str, Any]) -> None:
        frames = protocol.encode_request(msg_id, "w1", name, 5.0, args)
        _, header = protocol.split(frames[0])
        self.requests.on_request(protocol.request_header(header, frames[0]), frames)

    def final(self, msg_id: str) -> int | None:
        kinds = [k for k, m in self.answers if m == msg_id and k != protocol.Kind.PROGRESS]
        return kinds[-1] if kinds else None


async def test_a_job_ends_ok_error_or_cancelled_and_a_plain_command_publishes_nothing() -> None:
    h = Harness()
    h.request("p-1", "plain", {})
    assert h.final("p-1") == protocol.Kind.REPLY
    assert h.published.events == []  # not a job: no events at all

    h.request("ok-1", "run", {"steps": 3})
    await async_wait_until(lambda: len(h.published.events) >= 2, WAIT_S, "started, progress")
    h.worker.release.set()
    await async_wait_until(lambda: h.final("ok-1") == protocol.Kind.REPLY, WAIT_S, "the reply")
    ok = [e for e in h.published.events if e["job"] == "ok-1"]
    assert [e["state"] for e in ok] == ["started", "progress", "progress", "ended"]
    assert ok[1]["progress"] == {"done": 1, "total": 3}
    assert ok[2]["progress"] == {"done": 3, "total": 3}  # the last update, sent before ended
    assert ok[-1]["outcome"] == "ok" and ok[-1]["command"] == "run"

    h.request("err-1", "run", {"steps": 1, "fail": True})
    await async_wait_until(lambda: h.final("err-1") == protocol.Kind.ERROR, WAIT_S, "the error")
    err = [e for e in h.published.events if e["job"] == "err-1"]
    assert [e["state"] for e in err] == ["started", "progress", "ended"]
    assert (err[-1]["outcome"], err[-1]["code"]) == ("error", "device_fault")

    h.worker.release.clear()
    h.request("c-1", "run", {"steps": 2})
    await async_wait_until(
        lambda: any(e["job"] == "c-1" and e["state"] == "progress" for e in h.published.events),
        WAIT_S,
        "the first progress",
    )
    h.requests.cancel("c-1")
    await async_wait_until(lambda: h.final("c-1") == protocol.Kind.ERROR, WAIT_S, "cancelled")
    cancelled = [e for e in h.published.events if e["job"] == "c-1"]
    assert [e["state"] for e in cancelled] == ["started", "progress", "progress", "ended"]
    assert (cancelled[-1]["outcome"], cancelled[-1]["code"]) == ("cancelled", "cancelled")
    assert cancelled[-1]["duration_s"] >= 0


async def test_a_job_whose_result_cannot_be_encoded_ends_in_error() -> None:
    h = Harness()
    h.request("u-1", "unencodable", {})
    await async_wait_until(lambda: h.final("u-1") == protocol.Kind.ERROR, WAIT_S, "the error")
    assert h.published.states() == ["started", "ended"]
    assert (h.published.events[-1]["outcome"], h.published.events[-1]["code"]) == (
        "error",
        "internal",
    )
