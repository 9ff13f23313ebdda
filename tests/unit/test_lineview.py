"""``bus.web.lineview.LineView`` against a small real line in this process: a broker thread and
actor threads (an echo actor, and stand-ins of the telemetry and discovery kinds that answer
``history`` and ``list`` as those actors do), followed through a real ``AsyncClient``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

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
            # echo.note reaches the log through the sampling subscription, possibly after
            # the device event (followed event by event) is listed. The echo actor may learn
            # of that subscription a moment after the broker does (it encodes nothing nobody
            # asked for), so the note is emitted again until it shows.
            noted = any(c["type"] == "event" and c["event"]["topic"] == "echo.note" for c in seen)
            if not noted:
                async with AsyncClient(view.bus.endpoint) as bus:
                    await bus.call("echo", "emit", event="note", data={"blob": b"\x00" * 10})
            return noted and {c["type"] for c in seen} >= {"readings", "device"}

        end = time.monotonic() + WAIT_S
        while not await types():
            assert time.monotonic() < end, f"changes seen: {seen}"
        event = next(
            c["event"] for c in seen if c["type"] == "event" and c["event"]["topic"] == "echo.note"
        )
        assert event["data"] == {"blob": {"bytes": 10}}
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


async def test_latest_only_subscription_holds_the_newest_event(
    broker: BrokerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZMQ_CONFLATE: read after a burst, the subscription gives the burst's last event, and
    the events that went by unread are counted as missed (nothing reported as lost)."""
    async with AsyncClient(broker.command, subscribe_endpoint=broker.subscribe) as bus:
        sampled = bus.subscribe("echo.burst", latest_only=True)
        try:
            # No wait_ready for a latest_only subscription (it would subscribe twice): emit
            # until the first event arrives.
            first = None
            end = time.monotonic() + WAIT_S
            while first is None:
                assert time.monotonic() < end, "no echo.burst event arrived"
                await bus.call("echo", "emit", event="burst")
                first = await sampled.next(0.2)
            await bus.call("echo", "emit", event="burst", count=500)
            reads, missed, last = 0, 0, first.seq
            while last < first.seq + 500:
                event = await sampled.next(WAIT_S)
                assert event is not None, f"read up to seq {last} of {first.seq + 500}"
                reads, missed, last = reads + 1, missed + event.missed, event.seq
            assert reads + missed == 500  # every event read or counted, none twice
            assert reads < 500  # conflated: the reader did not see each one
            assert sampled._loss.args(sampled.missed_total, 0) is not None  # would report...
            notified: list[Any] = []
            monkeypatch.setattr(bus, "notify", lambda *args: notified.append(args) or True)
            sampled.report(now=True)
            assert notified == []  # ...but a sampler reports nothing to the broker
            with pytest.raises(ValueError, match="cannot take more prefixes"):
                sampled.add_prefixes("echo.other")
            with pytest.raises(ValueError, match="wait_ready"):
                await sampled.wait_ready(0.1)
        finally:
            sampled.close()
        with pytest.raises(ValueError, match="one prefix at most"):
            bus.subscribe("a.", "b.", latest_only=True)


async def test_state_topics_of_a_new_service_are_followed(
    broker: BrokerThread, view: LineView
) -> None:
    """The state subscription follows presence and the state topics of every service, those
    of a service that registers later included; a flood elsewhere is only sampled."""
    assert view._state_sub is not None
    assert {"presence.", "echo.job", "echo.commit."} <= set(view._state_sub.prefixes)
    assert not any(p.startswith("echo.tick") for p in view._state_sub.prefixes)
    extra = ActorThread("echo8", broker)
    extra.start()
    try:
        await async_wait_until(
            lambda: "echo8.job" in view._state_sub.prefixes if view._state_sub else False,
            WAIT_S,
            "echo8's state topics followed",
        )
        async with AsyncClient(view.bus.endpoint) as bus:
            # The subscription takes effect at the broker a moment after it is made: call again
            # until the job shows (each call is a new job of echo8).
            async def job_seen() -> bool:
                await bus.call("echo8", "work", steps=1, step_s=0.0)
                return any(j["state"] == "done" for j in view.jobs_of("echo8"))

            end = time.monotonic() + WAIT_S
            while not await job_seen():
                assert time.monotonic() < end, "no job of echo8 in the view"
    finally:
        extra.close()


async def test_a_flood_on_other_topics_is_sampled_for_the_log(view: LineView) -> None:
    before = view.unlisted
    async with AsyncClient(view.bus.endpoint) as bus:
        await bus.call("echo", "emit", event="tick", count=2000, data={"n": 1})
        await bus.call("echo", "emit", event="tock", data={"n": 2})  # the newest, after them
    await async_wait_until(
        lambda: any(e["topic"] == "echo.tock" for e in view.events), WAIT_S, "echo.tock listed"
    )
    ticks = sum(e["topic"] == "echo.tick" for e in view.events)
    assert ticks < 2000
    assert ticks + (view.unlisted - before) <= 2000  # counted at most once each


async def test_a_device_event_during_the_list_call_is_not_overwritten_by_the_list() -> None:
    """The discovery actor's list answers what it saw when asked; a device event applied while
    the answer was on its way is newer and stays (the CI failure of 2026-12-06)."""
    gone_uuid, other_uuid = "bb" * 16, "cc" * 16

    class ListWithAnEventMeanwhile:
        async def call(self, service: str, command: str, timeout: float) -> Any:
            gone = {"event": "gone", "uuid": gone_uuid, "name": "p9"}
            view.apply_event(f"discovery.device.{gone_uuid}", "discovery", 1, 0.0, gone)
            return [{"uuid": gone_uuid, "name": "p9"}, {"uuid": other_uuid, "name": "p8"}]

    view = LineView(cast(AsyncClient, ListWithAnEventMeanwhile()))
    await view._load_devices("discovery")
    assert view.devices[f"discovery/{gone_uuid}"]["status"] == "gone"
    assert view.devices[f"discovery/{other_uuid}"]["status"] == "seen"


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
