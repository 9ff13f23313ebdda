"""``linebus bench --head-of-line`` (bus.bench.headofline) with a small transfer and a gentle
event rate, so it keeps working: the real broker, three actors, a transfer sender, an event
pacer and a subscriber. The latency figures are what the benchmark is for; here every timed
call must be answered, the transfers made, and the events counted on both sides."""

from __future__ import annotations

import os

import pytest

from bus.bench import headofline

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("nice", "transport"), [(None, "tcp"), (5, "tcp"), (5, "ipc")])
def test_commands_timed_idle_and_under_load(nice: int | None, transport: str) -> None:
    """Also with ``--nice`` (a lower priority here, which needs no privilege): the broker reads
    it from a config, the bench actor and the timing client apply it themselves; and with
    ``--transport ipc``, where every process reaches the broker through its ``ipc_dir`` (the
    same config), so nothing would answer if the broker did not listen there."""
    figures = headofline.run(
        seconds=0.5, event_rate=5_000, bulk_size=1 << 20, nice=nice, transport=transport
    )
    for phase in ("idle", "loaded"):
        timed = figures[phase]
        assert timed["calls"] > 0
        assert 0 < timed["p50_ms"] <= timed["p99_ms"] <= timed["max_ms"]
    assert figures["bulk_transfers"] >= 1 and figures["bulk_MB_per_s"] > 0
    assert figures["events_published"] >= 2_000  # at least one emit batch
    # Every event is either received or seen missing by the subscriber's gap tracking (the
    # tail after the last received one cannot be seen missing, hence <=).
    assert 0 < figures["events_received"] + figures["events_missed"] <= figures["events_published"]
    text = headofline.report(figures)
    assert "| loaded |" in text and "target < 5 ms" in text
    # The nice values read back from the running processes, not the one asked for.
    inherited = os.getpriority(os.PRIO_PROCESS, 0)
    assert set(figures["nice_seen"].values()) == {inherited + (nice or 0)}
    read_back = "ran with nice = 5 (read back: broker 5, bench actor 5, timing client 5)"
    assert (read_back in text) == (nice == 5)
    assert f"reached the broker over {transport}" in text
