"""Actors publish through XPUB and follow the subscriptions the broker forwards: real broker and
``EchoActor`` processes, subscribers through ``bus.client``.

What is proved: a subscriber gets every event published after its subscription reached the
actor, with per-topic sequence numbers increasing by one; events nobody subscribes to are not
delivered but use up their numbers (a later subscriber starts above 1, and a subscriber that
resubscribes is told how many it missed); when one of two subscribers leaves, the other keeps
receiving; after a broker restart, new and old subscribers receive events again.

Subscriptions propagate asynchronously (subscriber -> broker -> actor), and ``wait_ready`` only
proves the broker has one. So every test publishes one event at a time until the first one
arrives (bounded by a timeout) and reasons from the sequence numbers. Each test starts its own
actor process, so the numbers of a topic are exactly the count of events emitted on it.
"""

from __future__ import annotations

import signal
import time

import pytest
import zmq

from bus._calls import GapTracker, TrackedEvent
from bus.client import Client, Subscription
from bus.errors import DeadlineExceeded, Unavailable, UnknownService
from tests.conftest import Line, scaled, secure_socket, wait_until

pytestmark = pytest.mark.integration

ACTOR = "echo1"
TOPIC = f"{ACTOR}.tick"


class Emitter:
    """Emits ``echo1.tick`` events through the broker and counts them: on a fresh actor, the
    count is the sequence number of the last event emitted."""

    def __init__(self, bus: Client, event: str = "tick") -> None:
        self.bus = bus
        self.event = event
        self.emitted = 0

    def emit(self, count: int = 1) -> int:
        """Emit ``count`` events; returns the sequence number of the last one."""
        assert (
            self.bus.call(
                ACTOR, "emit", event=self.event, count=count, data={"batch": self.emitted}
            )
            == count
        )
        self.emitted += count
        return self.emitted

    def until_received(
        self, *subs: Subscription, topic: str = TOPIC, timeout: float = 5.0
    ) -> list[TrackedEvent]:
        """Emit one event at a time until every subscription has received one of ``topic``;
        returns the first event each received."""
        firsts: list[TrackedEvent | None] = [None] * len(subs)
        end = time.monotonic() + scaled(timeout)
        while time.monotonic() < end:
            self.emit()
            for i, sub in enumerate(subs):
                if firsts[i] is None:
                    firsts[i] = next_on(sub, topic, 0.02)
            if all(firsts):
                return firsts  # type: ignore[return-value]
        pytest.fail(
            f"after {self.emitted} events, not every subscription received one of {topic}: {firsts}"
        )


def next_on(sub: Subscription, topic: str, timeout: float) -> TrackedEvent | None:
    """The next event of ``topic`` within ``timeout`` seconds (events of other topics are skipped)."""
    end = time.monotonic() + timeout
    while True:
        event = sub.next(max(0.0, end - time.monotonic()))
        if event is None or event.topic == topic:
            return event
        if time.monotonic() >= end:
            return None


def drain_to(
    sub: Subscription, last_seq: int, topic: str = TOPIC, timeout: float = 5.0
) -> list[TrackedEvent]:
    """Events of ``topic`` up to and including sequence number ``last_seq``."""
    events: list[TrackedEvent] = []
    end = time.monotonic() + scaled(timeout)
    while not events or events[-1].seq < last_seq:
        event = next_on(sub, topic, max(0.0, end - time.monotonic()))
        assert event is not None, f"waited for seq {last_seq}; got {[e.seq for e in events]}"
        events.append(event)
    return events


def assert_consecutive(events: list[TrackedEvent], first_seq: int, last_seq: int) -> None:
    """Exactly the sequence numbers first_seq..last_seq, each one more than the one before, none missed."""
    assert [e.seq for e in events] == list(range(first_seq, last_seq + 1))
    assert [e.missed for e in events] == [0] * len(events)
    assert len({e.epoch for e in events}) == 1


class TestSubscribing:
    @pytest.mark.parametrize("prefix", [TOPIC, f"{ACTOR}.t", f"{ACTOR}.", ""])
    def test_subscriber_gets_every_event_after_its_subscription(
        self, running_line: Line, prefix: str
    ) -> None:
        """Once the first event arrives, every later event arrives, numbered one more than the one before."""
        with running_line.client() as bus, bus.subscribe(prefix) as sub:
            sub.wait_ready(scaled(5))
            emitter = Emitter(bus)
            (first,) = emitter.until_received(sub)
            assert (first.src, first.missed) == (ACTOR, 0)
            for count in (1, 50, 1, 7):
                emitter.emit(count)
            events = [first, *drain_to(sub, emitter.emitted)]
            assert_consecutive(events, first.seq, emitter.emitted)
            assert sub.missed_total == 0

    def test_longer_subscription_than_the_topic_gets_nothing_of_it(
        self, running_line: Line
    ) -> None:
        """A subscription to 'echo1.tick.more' does not receive echo1.tick events (matching is by frame
        prefix).
        """
        with running_line.client() as bus, bus.subscribe(f"{TOPIC}.more", f"{ACTOR}.tock") as sub:
            sub.wait_ready(scaled(5))
            tock = Emitter(bus, "tock")
            tock.until_received(sub, topic=f"{ACTOR}.tock")  # the actor has the subscriptions now
            Emitter(bus).emit(20)
            last = tock.emit()
            # One publisher's events reach a subscriber in order: a tick would arrive before the last tock.
            events: list[TrackedEvent] = []
            while not events or events[-1].seq < last:
                event = sub.next(scaled(5))
                assert event is not None, f"waited for tock {last}; got {events}"
                events.append(event)
            assert {e.topic for e in events} == {f"{ACTOR}.tock"}


class TestUnsubscribedEvents:
    def test_events_nobody_subscribed_to_use_up_their_numbers(self, running_line: Line) -> None:
        """Events published before anyone subscribed never arrive, and a later subscriber's first event
        is numbered after them.
        """
        with running_line.client() as bus:
            emitter = Emitter(bus)
            emitter.emit(100)
            emitter.emit(1)
            with bus.subscribe(TOPIC) as sub:
                sub.wait_ready(scaled(5))
                (first,) = emitter.until_received(sub)
                # The first event of a topic starts the count: nothing is reported missed before it.
                assert first.seq > 101 and first.missed == 0
                emitter.emit(30)
                events = [first, *drain_to(sub, emitter.emitted)]
                assert_consecutive(events, first.seq, emitter.emitted)
                assert sub.missed_total == 0

    def test_resubscriber_is_told_what_it_missed(self, running_line: Line) -> None:
        """A subscriber that unsubscribes and subscribes again sees a gap whose size the tracker
        reports as missed.
        """
        with running_line.client() as bus:
            emitter = Emitter(bus)
            ctx = zmq.Context.instance()
            sock = secure_socket(ctx.socket(zmq.SUB))
            sock.linger = 0
            tracker = GapTracker()

            def receive(timeout: float) -> TrackedEvent | None:
                if not sock.poll(timeout * 1000):
                    return None
                return tracker.decode(sock.recv())

            def emit_and_receive() -> TrackedEvent | None:
                emitter.emit()
                return receive(0.02)

            try:
                sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
                sock.connect(running_line.endpoints.subscribe)
                before = wait_until(
                    emit_and_receive, scaled(5), "an event on the raw subscription", interval=0
                )
                received = [before]
                while received[-1].seq < emitter.emitted:
                    event = receive(scaled(5))
                    assert event is not None
                    received.append(event)
                sock.setsockopt(zmq.UNSUBSCRIBE, TOPIC.encode())
                emitter.emit(
                    40
                )  # nobody subscribed (or, if the unsubscription is slow, filtered out here)
                sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
                after = wait_until(
                    emit_and_receive, scaled(5), "an event after resubscribing", interval=0
                )
                last_before = received[-1].seq
                assert after.seq > last_before
                assert after.missed == after.seq - last_before - 1  # the gap, reported exactly
                assert after.epoch == before.epoch
                assert tracker.missed_total == after.missed
            finally:
                sock.close(linger=0)


class TestTwoSubscribers:
    @pytest.mark.parametrize(
        ("leaving", "staying"),
        [(TOPIC, f"{ACTOR}."), (f"{ACTOR}.", TOPIC), (TOPIC, TOPIC), (f"{ACTOR}.t", TOPIC)],
        ids=["narrow-leaves", "wide-leaves", "same-prefix", "shorter-leaves"],
    )
    def test_remaining_subscriber_keeps_receiving(
        self, running_line: Line, leaving: str, staying: str
    ) -> None:
        """When one of two subscribers leaves, the actor keeps publishing to the prefix the other still
        holds.
        """
        with running_line.client() as bus, running_line.client() as other_bus:
            emitter = Emitter(bus)
            stays = bus.subscribe(staying)
            leaves = other_bus.subscribe(leaving)
            try:
                stays.wait_ready(scaled(5))
                leaves.wait_ready(scaled(5))
                first, _ = emitter.until_received(stays, leaves)
                emitter.emit(10)
                leaves.close()
                # A subscription made after the close reaching the actor: the broker passed the
                # leaving subscriber's withdrawal on before it (or never, if it was not the last).
                with other_bus.subscribe(f"{ACTOR}.sentinel") as sentinel:
                    sentinel.wait_ready(scaled(5))
                    Emitter(bus, "sentinel").until_received(sentinel, topic=f"{ACTOR}.sentinel")
                for count in (1, 25, 1):
                    emitter.emit(count)
                events = [first, *drain_to(stays, emitter.emitted)]
                assert_consecutive(events, first.seq, emitter.emitted)
            finally:
                stays.close()
                leaves.close()


class TestBrokerRestart:
    def test_subscribers_receive_again_after_a_broker_restart(self, running_line: Line) -> None:
        """After a broker kill and restart, new and kept subscribers receive the same actor's events
        again, numbered on.
        """
        actor = running_line.actors[ACTOR]
        with running_line.client(timeout=2) as bus, bus.subscribe(TOPIC) as old:
            old.wait_ready(scaled(5))
            emitter = Emitter(bus)
            (before,) = emitter.until_received(old)
            emitter.emit(5)
            last_before = drain_to(old, emitter.emitted)[-1]

            assert running_line.broker is not None
            running_line.broker.send_signal(signal.SIGKILL)
            running_line.broker.wait(timeout=scaled(10))
            running_line.start_broker()
            running_line.wait_up(ACTOR, pid=actor.pid)

            def emitted() -> bool:
                try:
                    emitter.emit()
                    return True
                except (
                    Unavailable,
                    UnknownService,
                    DeadlineExceeded,
                ):  # the broker is still learning the actor
                    return False

            wait_until(emitted, scaled(10), "an emit through the restarted broker")
            with running_line.client() as fresh_bus, fresh_bus.subscribe(TOPIC) as new:
                new.wait_ready(scaled(5))
                first_new, first_old = emitter.until_received(new, old)
                emitter.emit(20)
                new_events = [first_new, *drain_to(new, emitter.emitted)]
                old_events = [first_old, *drain_to(old, emitter.emitted)]
            assert actor.poll() is None
            assert first_new.epoch == before.epoch and first_new.seq > last_before.seq
            assert first_new.missed == 0
            assert_consecutive(new_events, first_new.seq, emitter.emitted)
            # The kept subscriber is told exactly how many it missed during the outage.
            assert (
                first_old.seq > last_before.seq
                and first_old.missed == first_old.seq - last_before.seq - 1
            )
            assert_consecutive(old_events[1:], first_old.seq + 1, emitter.emitted)
            assert old.missed_total == first_old.missed
