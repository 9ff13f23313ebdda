"""``linebus bench``'s NATS rows (bus.bench.nats_rows) with tiny counts, so they keep working:
Debian's nats-server started on a free port, a responder process answering nats-py requests,
and events through it to a subscriber process. The figures are what ``linebus bench`` is for;
here every reply and every event must arrive."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from bus import bench
from bus.bench import nats_rows
from tests.conftest import scaled

pytestmark = [pytest.mark.integration, pytest.mark.interop]


@pytest.fixture(scope="module")
def responding() -> Iterator[str]:
    """A nats-server with the bench's responder subscribed; yields the server's URL."""
    if nats_rows.find_nats_server() is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    ctx = mp.get_context("spawn")
    with nats_rows.NatsServer() as server:
        ready = ctx.Event()
        responder = ctx.Process(target=nats_rows.responder, args=(server.url, ready), daemon=True)
        responder.start()
        try:
            assert ready.wait(scaled(30)), "the responder did not subscribe"
            yield server.url
        finally:
            responder.terminate()
            responder.join(5)


def test_round_trips(responding: str) -> None:
    sequential = nats_rows.round_trips(responding, 20, 1, bench.SMALL)
    window = nats_rows.round_trips(responding, 21, 4, bench.SMALL)
    assert sequential["replied"] == window["replied"] == 1.0  # every answer was the echo
    assert 0 < sequential["p50_ms"] <= sequential["p99_ms"]
    assert window.keys() == {"per_s", "replied"} and window["per_s"] > 0


def test_bulk_sized_body_is_answered_with_its_length(responding: str) -> None:
    assert nats_rows.round_trips(responding, 3, 1, b"x" * 70_000)["replied"] == 1.0


def test_events_all_delivered(responding: str) -> None:
    figures = nats_rows.events(responding, 500, 2, bench.EVENT_4KIB)
    assert figures["delivered"] == 1.0
    assert figures["data_bytes"] == len(msgpack.packb({**bench.EVENT_4KIB, "i": 0}))
    assert figures["per_s"] > 0


def test_missing_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nats_rows, "find_nats_server", lambda: None)
    with pytest.raises(nats_rows.NatsMissing, match=r"apt-get install nats-server"):
        nats_rows.NatsServer()
    results: dict[str, Any] = {}
    assert bench._start_nats(mp.get_context("spawn"), results) is None
    assert results["nats"].startswith("NATS rows left out: nats-server is not installed")
