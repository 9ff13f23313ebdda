"""``linebus bench``'s events pattern on its raw and linebus sides, small: every event arrives,
and each side's subscribers receive events of the size the pattern asks for (the raw side once
sent its small events in the 4 KiB row, which made that row's limit five times too high)."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from bus import bench
from bus.testing import free_port

pytestmark = pytest.mark.integration

N = 300


@pytest.fixture(scope="module")
def endpoints() -> Iterator[dict[str, dict[str, str]]]:
    """The raw side's C proxy and a linebus line (the real broker, the bench actor)."""
    loopback = "tcp://127.0.0.1:{}".format
    raw = {"xsub": loopback(free_port()), "xpub": loopback(free_port())}
    line = {name: loopback(free_port()) for name in ("command", "publish", "subscribe")}
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=bench._raw_event_proxy, args=(raw["xsub"], raw["xpub"]), daemon=True),
        ctx.Process(target=bench._actor, args=(line["command"], line["publish"]), daemon=True),
    ]
    broker = bench._broker_process(line)
    for proc in procs:
        proc.start()
    try:
        bench.wait_for_actors(line["command"])
        yield {"raw": raw, "bus": line}
    finally:
        bench._stop(procs, [broker])


@pytest.mark.parametrize("side", ["raw", "bus"])
@pytest.mark.parametrize("data", [bench.SMALL, bench.EVENT_4KIB], ids=["small", "4KiB"])
def test_every_event_arrives_at_the_size_asked_for(
    endpoints: dict[str, dict[str, str]], side: str, data: dict[str, Any]
) -> None:
    figures = bench._events(side, endpoints[side], N, 2, data=data)
    assert figures["delivered"] == 1.0
    assert figures["per_s"] > 0
    # The raw publisher numbers its events ("i"), the bench actor's emit does not.
    numbered = {**data, "i": 0} if side == "raw" else data
    assert figures["data_bytes"] == len(msgpack.packb(numbered))
    assert "B each" in bench._cell(figures, "per_s", None)
