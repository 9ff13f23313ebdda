"""One command at a time per device: queued commands run in order after the running one, and a
full queue answers busy instead of growing without bound."""

from __future__ import annotations

import pytest

from bus.errors import Busy

pytestmark = pytest.mark.integration


def test_long_queue_of_plain_commands_behind_a_coroutine(running_line):
    """990 plain commands queued behind a running coroutine command all complete, in order
    (regression: the queue was drained recursively and overflowed the stack)."""
    with running_line.client(timeout=30) as bus:
        slow = bus.start("echo1", "work", steps=1, step_s=0.5)
        queued = [bus.start("echo1", "add", a=i) for i in range(990)]
        assert slow.result() == {"steps": 1}
        assert [call.result() for call in queued] == list(range(990))


def test_full_queue_answers_busy(running_line):
    """Past max_queue (1000) waiting requests, new ones get busy; the queued ones still run."""
    with running_line.client(timeout=30) as bus:
        slow = bus.start("echo1", "work", steps=1, step_s=3.0)  # ample time to queue 1010
        calls = [bus.start("echo1", "add", a=i) for i in range(1010)]
        slow.result()
        outcomes = []
        for call in calls:
            try:
                outcomes.append(call.result())
            except Busy:
                outcomes.append("busy")
        assert outcomes[:1000] == list(range(1000))
        assert outcomes[1000:] == ["busy"] * 10


def test_queued_command_past_its_deadline_is_not_run(running_line):
    """A command whose deadline passes while it waits behind another is answered
    deadline_exceeded and never runs."""
    from bus.errors import DeadlineExceeded

    with running_line.client(timeout=30) as bus:
        slow = bus.start("echo1", "work", steps=1, step_s=1.5)
        stale = bus.start("echo1", "emit", event="should_not_happen", timeout=0.3)
        with bus.subscribe("echo1.should_not_happen") as sub:
            sub.wait_ready()
            with pytest.raises(DeadlineExceeded):
                stale.result()
            slow.result()
            bus.call("echo1", "emit", event="after")  # the actor has drained its queue by now
            assert sub.next(timeout=0.5) is None
