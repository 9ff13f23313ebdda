"""The shortest end-to-end path: broker and actor processes, a client call, an event."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_call_round_trip_through_broker_process(running_line):
    """A call reaches the actor process through the broker process and its result comes back."""
    with running_line.client() as bus:
        assert bus.call("echo1", "echo", value={"a": [1, 2.5, "x", None, b"\x00"]}) == {
            "a": [1, 2.5, "x", None, b"\x00"]
        }


def test_event_reaches_subscriber(running_line):
    """An event published by the actor arrives with topic, source and sequence number."""
    with running_line.client() as bus, bus.subscribe("echo1.") as sub:
        sub.wait_ready()
        bus.call("echo1", "emit", event="tick", count=2, data=7)
        first, second = sub.next(5), sub.next(5)
        assert (first.topic, first.src, first.data, second.seq - first.seq) == (
            "echo1.tick",
            "echo1",
            7,
            1,
        )
