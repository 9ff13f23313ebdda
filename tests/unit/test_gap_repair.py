"""Gap repair (PROTOCOL.md §9): the ring of recent events an actor keeps per topic, its built-in
``replay`` command with the ``too_old`` error, and ``Subscription(repair=True)`` in both clients.

The ring and the repair steps are tested without I/O; the end-to-end cases run one broker and
two echo actors in threads of this process (``inproc_line``), shared by the module. There a loss
is made on purpose, by reading frames off the subscription's socket past its gap tracker: the
only way to lose chosen events without a timed burst (tests/integration has the burst).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from bus._calls import GapRepair, TrackedEvent
from bus._eventring import EventRing
from bus._publisher import Publisher
from bus.aio import AsyncClient
from bus.client import Client, Subscription
from bus.errors import BusError, InvalidArguments, TooOld, Unavailable
from bus.testing import wait_until
from tests.unit.inproc_line import WAIT_S, ActorThread, BrokerThread, service_up

EPOCH = 77


# --- the ring ---------------------------------------------------------------------------------


class TestEventRing:
    def test_keeps_the_last_size_events(self) -> None:
        ring = EventRing(3, 60.0)
        ring.extend((seq, 1e12, seq * 10, None) for seq in range(1, 8))
        assert len(ring) == 3
        assert ring.replay("t", 4, 8) == [[5, 1e12, 50], [6, 1e12, 60], [7, 1e12, 70]]

    def test_too_old_names_the_oldest_kept(self) -> None:
        ring = EventRing(3, 60.0)
        ring.extend((seq, 1e12, None, None) for seq in range(1, 8))
        with pytest.raises(TooOld) as caught:
            ring.replay("svc.t", 2, 8)
        assert caught.value.details == {"topic": "svc.t", "oldest": 5}
        assert "seq 3" in caught.value.message

    def test_events_past_their_age_are_not_replayed(self) -> None:
        ring = EventRing(10, 5.0)
        ring.append((1, 100.0, "old", None))
        ring.append((2, 1e12, "new", None))  # far in the future: never expires here
        assert ring.oldest() == 2
        with pytest.raises(TooOld):
            ring.replay("t", 0, 3)

    def test_an_empty_ring_is_too_old_with_no_oldest(self) -> None:
        with pytest.raises(TooOld) as caught:
            EventRing(0, 1.0).replay("t", 0, 2)
        assert caught.value.details["oldest"] is None

    def test_common_entries_are_merged_when_replayed(self) -> None:
        ring = EventRing(4, 60.0)
        ring.append((1, 1e12, {"v": 1}, {"unit": "C"}))
        assert ring.replay("t", 0, 2) == [[1, 1e12, {"unit": "C", "v": 1}]]

    @pytest.mark.parametrize(("after", "before", "argument"), [(-1, 3, "after"), (5, 5, "before")])
    def test_a_range_that_is_none_is_invalid(self, after: int, before: int, argument: str) -> None:
        with pytest.raises(InvalidArguments) as caught:
            EventRing(4, 60.0).replay("t", after, before)
        assert caught.value.details["argument"] == argument

    @pytest.mark.parametrize(("size", "age_s"), [(-1, 1.0), (1, 0.0)])
    def test_bad_bounds_are_refused(self, size: int, age_s: float) -> None:
        with pytest.raises(ValueError, match="event ring"):
            EventRing(size, age_s)


class TestPublisherRing:
    """A publisher never opened: every event is dropped on the wire, and kept all the same."""

    def test_publish_keeps_events_nobody_heard(self) -> None:
        pub = Publisher("svc", EPOCH, ring_size=2)
        for value in "abc":
            pub.publish("t", value)
        assert pub.events_dropped == 3
        assert [e[2] for e in pub.replay("svc.t", EPOCH, 1, 4)] == ["b", "c"]

    def test_publish_many_keeps_what_the_ring_holds(self) -> None:
        pub = Publisher("svc", EPOCH, ring_size=3)
        pub.publish_many("t", [{"i": i} for i in range(10)], common={"k": 1})
        assert [(seq, data) for seq, _, data in pub.replay("svc.t", EPOCH, 7, 11)] == [
            (8, {"k": 1, "i": 7}),
            (9, {"k": 1, "i": 8}),
            (10, {"k": 1, "i": 9}),
        ]

    def test_a_lazy_burst_nobody_hears_is_not_kept(self) -> None:
        pub = Publisher("svc", EPOCH)
        pub.publish_many("t", iter(range(5)), count=5)
        pub.publish("t", "after")
        with pytest.raises(TooOld) as caught:
            pub.replay("svc.t", EPOCH, 0, 7)
        assert caught.value.details["oldest"] == 6

    @pytest.mark.parametrize(
        ("topic", "epoch"), [("svc.t", EPOCH + 1), ("svc.other", EPOCH), ("other.t", EPOCH)]
    )
    def test_another_incarnation_or_topic_is_too_old(self, topic: str, epoch: int) -> None:
        pub = Publisher("svc", EPOCH)
        pub.publish("t")
        with pytest.raises(TooOld):
            pub.replay(topic, epoch, 0, 2)

    def test_set_ring_keeps_what_fits(self) -> None:
        pub = Publisher("svc", EPOCH)
        for i in range(5):
            pub.publish("t", i)
        pub.set_ring(2, 30.0)
        assert [e[0] for e in pub.replay("svc.t", EPOCH, 3, 6)] == [4, 5]
        with pytest.raises(ValueError):
            pub.set_ring(-1, 30.0)

    def test_limit_ring_keeps_fewer_of_its_topics_only(self) -> None:
        pub = Publisher("svc", EPOCH, ring_size=4)
        pub.publish("big.a", 0)
        pub.limit_ring("big.", 2)  # a topic that exists, one that comes later, and set_ring after
        pub.set_ring(5, 30.0)
        for i in range(1, 6):
            for event in ("big.a", "big.b", "small"):
                pub.publish(event, i)
        assert [e[2] for e in pub.replay("svc.big.a", EPOCH, 4, 7)] == [4, 5]
        assert [e[2] for e in pub.replay("svc.big.b", EPOCH, 3, 6)] == [4, 5]
        assert [e[2] for e in pub.replay("svc.small", EPOCH, 0, 6)] == [1, 2, 3, 4, 5]
        with pytest.raises(ValueError):
            pub.limit_ring("big.", -1)


# --- the repair steps -------------------------------------------------------------------------


def _event(seq: int, missed: int, src: str = "svc") -> TrackedEvent:
    return TrackedEvent(f"{src}.t", src, seq, 1.5, "live", missed, EPOCH)


class TestGapRepair:
    def test_everything_recovered(self) -> None:
        repair = GapRepair(_event(6, 3))
        assert repair.args() == {"topic": "svc.t", "epoch": EPOCH, "after": 2, "before": 6}
        repair.take([[3, 1.0, "a"], [4, 1.0, "b"], [5, 1.0, "c"]])
        assert repair.args() is None
        got = repair.events()
        assert [(e.seq, e.data, e.missed) for e in got] == [
            (3, "a", 0),
            (4, "b", 0),
            (5, "c", 0),
            (6, "live", 0),
        ]

    def test_too_old_asks_again_from_the_oldest_kept(self) -> None:
        repair = GapRepair(_event(10, 8))
        repair.take(error=TooOld("gone", details={"topic": "svc.t", "oldest": 7}))
        assert repair.args() == {"topic": "svc.t", "epoch": EPOCH, "after": 6, "before": 10}
        repair.take([[7, 1.0, "x"], [9, 1.0, "z"]])  # 8 was never kept
        assert [(e.seq, e.missed) for e in repair.events()] == [(7, 5), (9, 1), (10, 0)]
        assert repair.recovered == 2

    @pytest.mark.parametrize(
        "error",
        [
            TooOld("gone", details={"oldest": None}),
            TooOld("gone", details={"oldest": 10}),  # nothing of the gap left
            Unavailable("publisher down"),
        ],
    )
    def test_what_cannot_be_had_stays_lost(self, error: BusError) -> None:
        repair = GapRepair(_event(10, 4))
        repair.take(error=error)
        assert repair.args() is None
        assert [(e.seq, e.missed) for e in repair.events()] == [(10, 4)]

    def test_answers_outside_the_gap_or_malformed_are_ignored(self) -> None:
        repair = GapRepair(_event(6, 2))
        repair.take([[2, 1.0, "dup"], "junk", [4, 1.0, "b"], [3, 1.0, "late"], [6, 1.0, "no"]])
        assert [(e.seq, e.missed) for e in repair.events()] == [(4, 0), (6, 1)]

    def test_the_broker_keeps_no_events(self) -> None:
        assert GapRepair(_event(5, 1, src="broker")).args() is None


# --- end to end, in process -------------------------------------------------------------------


class Bus:
    """A broker with two echo actors: ``echo`` (default ring) and ``tiny`` (a ring of 4)."""

    def __init__(self) -> None:
        self.broker = BrokerThread()
        self.broker.start()
        self.actors = [ActorThread("echo", self.broker), ActorThread("tiny", self.broker)]
        self.actors[1].settings.event_ring = 4
        for actor in self.actors:
            actor.start()
        for name in ("echo", "tiny"):
            wait_until(service_up(self.broker.command, name), WAIT_S, f"{name} up")

    def client(self) -> Client:
        return Client(self.broker.command, subscribe_endpoint=self.broker.subscribe, timeout=WAIT_S)

    def close(self) -> None:
        for actor in self.actors:
            actor.close()
        self.broker.close()


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    line = Bus()
    yield line
    line.close()


_topics = iter(range(1_000_000))


def _first_event(client: Client, sub: Subscription, service: str, event: str) -> TrackedEvent:
    """Emit one event at a time on a fresh topic until the subscription (which must still reach
    the actor) receives one, then take every event emitted so far that still comes: returns the
    last, whose seq is the count emitted, so the test starts with nothing in flight."""
    sub.wait_ready(WAIT_S)
    emitted = 0

    def received() -> TrackedEvent | None:
        nonlocal emitted
        client.call(service, "emit", event=event)
        emitted += 1
        return sub.next(0.1)

    last = wait_until(received, WAIT_S, f"a first {service}.{event}")
    while last.seq < emitted:
        following = sub.next(WAIT_S)
        assert following is not None, f"event {last.seq + 1} of {emitted} never came"
        last = following
    return last


def _lose(sub: Subscription, count: int) -> None:
    """Take ``count`` frames off the socket without the subscription seeing them."""
    for _ in range(count):
        assert sub._sock.poll(WAIT_S * 1000), "no frame to lose"
        sub._sock.recv(zmq.NOBLOCK)


class TestSubscriptionRepair:
    def test_missed_events_come_first_in_order(self, bus: Bus) -> None:
        event = f"gap{next(_topics)}"
        with bus.client() as client, client.subscribe(f"echo.{event}", repair=True) as sub:
            first = _first_event(client, sub, "echo", event)
            client.call("echo", "emit", event=event, count=6, data={"n": 1})
            _lose(sub, 3)
            got = [sub.next(WAIT_S) for _ in range(6)]
        assert [(e.seq, e.missed, e.data) for e in got if e is not None] == [
            (first.seq + i, 0, {"n": 1}) for i in range(1, 7)
        ]
        assert (sub.repaired_total, sub.missed_total) == (3, 0)

    def test_past_the_ring_the_loss_is_counted(self, bus: Bus) -> None:
        event = f"gap{next(_topics)}"
        with bus.client() as client, client.subscribe(f"tiny.{event}", repair=True) as sub:
            first = _first_event(client, sub, "tiny", event)
            client.call("tiny", "emit", event=event, count=10)
            _lose(sub, 8)  # first+1 .. first+8; the ring keeps first+7 .. first+10
            got = []
            for item in sub:  # the iterator repairs too
                got.append((item.seq - first.seq, item.missed))
                if len(got) == 4:
                    break
            assert got == [(7, 6), (8, 0), (9, 0), (10, 0)]
            assert (sub.repaired_total, sub.missed_total) == (2, 6)

            def reported() -> dict[str, Any] | None:
                rows = client.stats()["subscribers"]
                return next((r for r in rows if r["subscriber"] == sub._loss.subscriber), None)

            row = wait_until(reported, WAIT_S, "the subscription's report in stats")
        assert (row["prefixes"], row["missed"], row["repaired"]) == ([f"tiny.{event}"], 6, 2)

    def test_replay_is_a_built_in_command(self, bus: Bus) -> None:
        with bus.client() as client:
            assert "replay" in client.call("tiny", "describe")["commands"]
            with pytest.raises(TooOld) as caught:
                client.call("tiny", "replay", topic="tiny.never", epoch=1, after=0, before=2)
        assert caught.value.details == {"topic": "tiny.never", "oldest": None}

    async def test_the_asyncio_subscription_repairs(self, bus: Bus) -> None:
        event = f"gap{next(_topics)}"
        async with AsyncClient(
            bus.broker.command, subscribe_endpoint=bus.broker.subscribe, timeout=WAIT_S
        ) as client:
            sub = client.subscribe(f"echo.{event}", repair=True)
            try:
                await sub.wait_ready(WAIT_S)
                first: Any = None
                emitted = 0
                while first is None and emitted < 50:
                    await client.call("echo", "emit", event=event)
                    emitted += 1
                    first = await sub.next(0.1)
                assert first is not None, "no first event"
                while first.seq < emitted:  # nothing of the probing left in flight
                    first = await sub.next(WAIT_S)
                    assert first is not None
                await client.call("echo", "emit", event=event, count=4)
                assert await sub._sock.poll(WAIT_S * 1000)
                await sub._sock.recv()  # lost
                got = [await sub.next(WAIT_S) for _ in range(4)]
            finally:
                sub.close()
        assert [(e.seq - first.seq, e.missed) for e in got if e is not None] == [
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 0),
        ]
        assert sub.repaired_total == 1


class TestSubscriptionQueue:
    def test_max_queue_bounds_the_socket(self, bus: Bus) -> None:
        with bus.client() as client, client.subscribe("echo.", max_queue=50) as sub:
            assert (sub._sock.rcvhwm, sub._sock.rcvbuf) == (50, 256 * 1024)
            with pytest.raises(ValueError, match="max_queue"):
                client.subscribe("echo.", max_queue=0)
