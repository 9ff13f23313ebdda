"""A subscriber that loses events under a burst repairs them (PROTOCOL.md §9, "Repairing a gap"):
real broker and actor processes, in both passes (the replay answer is a large reply, which
CURVE encrypts too).

The loss is real, not simulated: the broker holds at most ``subscriber_queue`` events for a
subscriber that does not keep up, and the subscription ``max_queue`` events with a fixed kernel
buffer, so a burst of BURST events of 1 KiB (12 MiB, several times every buffer on the way),
published while the test does not read, overflows the broker's queue for it. The actor's ring
holds the whole burst, so every event is delivered, in order, exactly once; the subscription
reports what it repaired to the broker, which shows it in ``stats`` (``linebus stats``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bus._calls import TrackedEvent
from bus.client import Client, Subscription
from tests.conftest import ECHO, Endpoints, Line, Processes, scaled, wait_until, write_config

pytestmark = pytest.mark.integration

ACTOR = "burst1"
EVENT = "tick"
BURST = 12_000
CHUNK = 3_000  # events per emit call: one call runs inline in the actor's loop
DATA = b"x" * 1024


@pytest.fixture
def burst_line(tmp_path: Path, processes: Processes) -> Line:
    endpoints = Endpoints.fresh()
    config = write_config(
        tmp_path / "line.toml",
        endpoints,
        [{"name": ACTOR, **ECHO, "event_ring": BURST + 1000}],
        broker={"subscriber_queue": 100},
    )
    line = Line(config, endpoints, processes)
    line.start_broker()
    line.start_actor(ACTOR)
    return line


def _first(client: Client, sub: Subscription) -> TrackedEvent:
    sub.wait_ready(scaled(10))

    def received() -> TrackedEvent | None:
        client.call(ACTOR, "emit", event=EVENT)
        return sub.next(0.1)

    return wait_until(received, scaled(10), "a first event")


def test_a_subscriber_that_loses_a_burst_repairs_it(burst_line: Line) -> None:
    with (
        burst_line.client(timeout=30) as client,
        client.subscribe(
            f"{ACTOR}.{EVENT}", repair=True, repair_timeout=scaled(20), max_queue=100
        ) as sub,
    ):
        first = _first(client, sub)
        for _ in range(BURST // CHUNK):  # not reading meanwhile: the queues overflow
            client.call(ACTOR, "emit", event=EVENT, count=CHUNK, data=DATA)
        last = first.seq + BURST
        seqs: list[int] = []
        end = time.monotonic() + scaled(60)
        while not seqs or seqs[-1] < last:
            assert time.monotonic() < end, f"stuck at {seqs[-1:]} of {last}"
            event = sub.next(0.5)
            if event is None:
                # The burst's end was dropped: only a later event reveals that gap.
                client.call(ACTOR, "emit", event=EVENT, data=DATA)
                last += 1
                continue
            assert event.data == DATA
            seqs.append(event.seq)

        def reported() -> dict[str, Any] | None:  # the subscription told the broker (stats)
            rows = client.stats()["subscribers"]
            mine = [r for r in rows if r["subscriber"] == sub._loss.subscriber]
            return mine[0] if mine else None

        row = wait_until(reported, scaled(10), "this subscription's report in stats")
    assert (row["missed"], row["prefixes"]) == (0, [f"{ACTOR}.{EVENT}"])
    assert 0 < row["repaired"] <= sub.repaired_total  # reports come at most once a second
    assert seqs == list(range(first.seq + 1, last + 1))
    assert sub.repaired_total > 0, "nothing was lost: the burst did not overflow the queues"
    assert sub.missed_total == 0
