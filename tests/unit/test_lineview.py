"""``bus.web.lineview.LineView`` against a small real line in this process: a broker thread and
actor threads (an echo actor, and stand-ins of the telemetry and discovery kinds that answer
``history`` and ``list`` as those actors do), followed through a real ``AsyncClient``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bus.actor import command
from bus.aio import AsyncClient
from bus.errors import BusError
from bus.testing import EchoActor, async_wait_until
from bus.web.lineview import LineView, ViewLimits, numeric_fields, plain
from tests.unit.inproc_line import WAIT_S, ActorThread, BrokerThread

#: The readings the telemetry stand-in has stored before the view starts (its ``history``).
STORED = [
    {
        "stream_group": "default",
        "stream": "default",
        "timestamp": time.time() - 60 + i,
        "payload": json.dumps({"temperature": 20.0 + i, "label": "x"}).encode(),
        "state": "forwarded",
    }
    for i in range(5)
]


class TelemetryStandIn(EchoActor):
    """Answers ``history`` like the telemetry actor (rows with ``timestamp`` and ``payload``)."""

    kind = "telemetry"

    @command(concurrent=True)
    def history(
        self,
        stream_group: str | None = None,
        stream: str | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Stored rows of the stream."""
        return [r for r in STORED if r["stream"] == (stream or "default")][:limit]


class DiscoveryStandIn(EchoActor):
    """Answers ``list`` like the discovery actor."""

    kind = "discovery"

    @command
    def list(self) -> list[dict[str, Any]]:
        """Devices seen now."""
        return [{"uuid": "aa" * 16, "name": "p1", "st_label": "IDLE"}]


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerThread]:
    thread = BrokerThread()
    thread.start()
    actors = [
        ActorThread("echo", thread),
        ActorThread("telemetry", thread, TelemetryStandIn),
        ActorThread("discovery", thread, DiscoveryStandIn),
    ]
    for actor in actors:
        actor.start()
    try:
        yield thread
    finally:
        for actor in actors:
            actor.close()
        thread.close()


@pytest.fixture
async def view(broker: BrokerThread) -> AsyncIterator[LineView]:
    async with AsyncClient(broker.command, subscribe_endpoint=broker.subscribe) as bus:
        line = LineView(bus, ViewLimits(services_s=0.2, stats_s=0.2))
        task = asyncio.create_task(line.run())
        try:
            await asyncio.wait_for(line.ready.wait(), WAIT_S)
            await async_wait_until(
                lambda: {"echo", "telemetry", "discovery"} <= set(line.actors), WAIT_S, "actors"
            )
            yield line
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_actors_devices_and_backfilled_readings(view: LineView) -> None:
    snap = view.snapshot()
    echo = next(a for a in snap["actors"] if a["name"] == "echo")
    assert echo["kind"] == "echo" and echo["state"] == "up" and echo["restarts"] == 0
    assert echo["since"] <= snap["now"]
    # The discovery actor's list, and the telemetry actor's history (numeric fields only).
    await async_wait_until(lambda: view.devices, WAIT_S, "devices from list")
    (device,) = view.devices.values()
    assert device["name"] == "p1" and device["status"] == "seen"
    await async_wait_until(lambda: view.streams, WAIT_S, "history backfilled")
    stream = view.streams["telemetry/default/default"]
    assert [p[1] for p in stream["points"]] == [{"temperature": 20.0 + i} for i in range(5)]
    json.dumps(view.snapshot())  # the whole snapshot is JSON


async def test_events_readings_and_devices_reach_a_watcher(view: LineView) -> None:
    watcher = view.watch()
    try:
        async with AsyncClient(view.bus.endpoint) as bus:
            await bus.call("echo", "emit", event="note", data={"blob": b"\x00" * 10})
            commit = {  # a commit event: the stored messages as columns
                "stream_group": "g",
                "stream": "s",
                "timestamp": [time.time()] * 2,
                "payload": [b'{"rpm": 1200, "temp": {"in": 40.5}, "ok": true}', b"not json"],
            }
            await bus.call("telemetry", "emit", event="commit.g.s", data=commit)
            gone = {"event": "gone", "uuid": "aa" * 16, "name": "p1"}
            await bus.call("discovery", "emit", event=f"device.{'aa' * 16}", data=gone)
        seen: list[dict[str, Any]] = []

        async def types() -> bool:
            batch = await watcher.next_batch(0.2)
            assert batch is not None
            seen.extend(batch)
            return {c["type"] for c in seen} >= {"event", "readings", "device"}

        end = time.monotonic() + WAIT_S
        while not await types():
            assert time.monotonic() < end, f"changes seen: {seen}"
        event = next(c["event"] for c in seen if c["type"] == "event")
        assert event["topic"] == "echo.note" and event["data"] == {"blob": {"bytes": 10}}
        (point,) = next(c["points"] for c in seen if c["type"] == "readings")
        assert point[1] == {"rpm": 1200.0, "temp.in": 40.5}
        device = [c["device"] for c in seen if c["type"] == "device"][-1]
        assert device["status"] == "gone"
        assert not any(e["topic"].endswith("commit.g.s") for e in view.events)  # plotted only
    finally:
        watcher.close()


async def test_presence_down_and_up(broker: BrokerThread, view: LineView) -> None:
    extra = ActorThread("echo9", broker)
    extra.start()
    try:
        await async_wait_until(
            lambda: view.actors.get("echo9", {}).get("state") == "up", WAIT_S, "echo9 up"
        )
    finally:
        extra.close()  # an orderly stop: the broker publishes presence down at once
    await async_wait_until(lambda: view.actors["echo9"]["state"] == "down", WAIT_S, "echo9 down")
    again = ActorThread("echo9", broker)
    again.start()
    try:
        await async_wait_until(
            lambda: view.actors["echo9"]["state"] == "up" and view.actors["echo9"]["restarts"] == 1,
            WAIT_S,
            "echo9 up again, counted",
        )
    finally:
        again.close()


async def test_counters_follow_stats(view: LineView) -> None:
    before = sum(view.counters["routed"].values())
    async with AsyncClient(view.bus.endpoint) as bus:
        for _ in range(3):
            await bus.call("echo", "echo", value=1)
    await async_wait_until(
        lambda: sum(view.counters["routed"].values()) >= before + 3, WAIT_S, "routed counted"
    )


async def test_job_events_from_a_running_command(view: LineView) -> None:
    """echo's ``work`` reports progress: the runtime's job events make it a job with a bar."""
    async with AsyncClient(view.bus.endpoint) as bus:
        await bus.call("echo", "work", steps=3, step_s=0.05)
        with pytest.raises(BusError):
            await bus.call("echo", "work", steps=1, step_s=5.0, timeout=0.2)

    def ended() -> list[dict[str, Any]]:
        jobs = [j for j in view.jobs_of("echo") if j["state"] != "running"]
        return jobs if len(jobs) == 2 else []

    ok, late = sorted(
        await async_wait_until(ended, WAIT_S, "two echo jobs ended"), key=lambda j: j["updated"]
    )
    assert ok["command"] == "work" and (ok["done"], ok["total"]) == (3, 3)
    assert ok["state"] == "done" and ok["outcome"] == "done"
    # The deadline ends it in the actor (deadline_exceeded), or the broker's CANCEL first.
    code = late["outcome"].split(":")[0]
    assert (late["state"], code) in {("failed", "deadline_exceeded"), ("cancelled", "cancelled")}


async def test_flashrunner_project_events_merge_into_the_run(view: LineView) -> None:
    # The FlashRunner actor's events as it publishes them, fed by hand (tests/web runs the
    # real one): job started, the channels as they finish, project.done, job ended ok.
    job = {"job": "m1", "command": "FR_RunProject", "elapsed_s": 0.0}
    view.apply_event("fr1.job", "fr1", 1, 0.0, {**job, "state": "started"})
    view.apply_event(
        "fr1.job", "fr1", 2, 0.0, {**job, "state": "progress", "progress": {"done": 0, "total": 4}}
    )
    for channel in (1, 2, 3, 4):
        view.apply_event(
            "fr1.project.channel",
            "fr1",
            channel,
            0.0,
            {"project": "demo.prj", "channel": channel, "passed": channel != 3},
        )
    (run,) = view.jobs_of("fr1")
    assert run["channels"] == {"1": True, "2": True, "3": False, "4": True}
    assert run["state"] == "running" and run["project"] == "demo.prj"
    view.apply_event(
        "fr1.project.done",
        "fr1",
        1,
        0.0,
        {
            "project": "demo.prj",
            "results": {"1": True, "2": True, "3": False, "4": True},
            "errors": {"3": "VERIFY"},
        },
    )
    view.apply_event(
        "fr1.job", "fr1", 3, 0.0, {**job, "state": "ended", "outcome": "ok", "duration_s": 2.0}
    )
    (run,) = view.jobs_of("fr1")
    assert run["state"] == "failed" and run["outcome"] == "failed: channel 3"


async def test_flux_print_status_is_a_job(view: LineView) -> None:
    # The FLUX actor's status events while a print runs (fed by hand).
    for label, prog in [("IDLE", 0.0), ("RUNNING", 0.25), ("PAUSED", 0.5), ("COMPLETED", 1.0)]:
        status = {"st_id": 0, "st_label": label, "label": label, "prog": prog, "error": []}
        view.apply_event("p1.status", "p1", 1, 0.0, status)
        if label == "PAUSED":
            (job,) = view.jobs_of("p1")
            assert (job["state"], job["done"], job["detail"]) == ("running", 50, "PAUSED")
    (job,) = view.jobs_of("p1")
    assert (job["state"], job["done"], job["outcome"]) == ("done", 100, "done")
    view.apply_event("p1.status", "p1", 2, 0.0, {**status, "label": "ABORTED"})  # no new print
    assert len(list(view.jobs_of("p1"))) == 1


async def test_a_flood_of_events_is_counted_not_listed(broker: BrokerThread) -> None:
    async with AsyncClient(broker.command) as bus:
        view = LineView(bus, ViewLimits(listed_per_s=3))
        for seq in range(10):
            view.apply_event("echo.tick", "echo", seq, 0.0, {"n": seq})
    # 3 a second: all but 3 (6 if the clock's second turned meanwhile) counted instead.
    assert view.unlisted >= 4 and len(view.events) + view.unlisted == 10


def test_numeric_fields_and_plain() -> None:
    assert numeric_fields(b'{"a": 1, "b": "x", "c": false, "d": {"e": 2.5}}') == {
        "a": 1.0,
        "d.e": 2.5,
    }
    assert numeric_fields(b"\xff") == {} and numeric_fields("[1, 2]") == {}
    assert numeric_fields(b"not json") == {}
    assert plain({"x": b"abc", "y": float("nan"), "z": list(range(60))})["x"] == {"bytes": 3}
    assert plain(float("inf")) == "inf"
    assert plain("a" * 600).endswith("…")
