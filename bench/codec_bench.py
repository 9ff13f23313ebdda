"""Per-message costs of the codec hot paths, in-process (no sockets): best of three runs.

python bench/codec_bench.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack

from bus import protocol
from bus._calls import GapTracker

SMALL = {"channel": 3, "value": 21.5, "unit": "C", "ok": True}
N = 300_000


def best_us(fn: Callable[[Any], Any], items: list[Any]) -> float:
    """Best of three passes over ``items``, in microseconds per item."""
    return best_us_fresh(lambda: fn, items)


def best_us_fresh(make: Callable[[], Callable[[Any], Any]], items: list[Any]) -> float:
    """``best_us`` of a new ``make()`` for each pass (a ``GapTracker`` must not see the same
    sequence numbers twice: the second pass would take its path for repeated events)."""
    best = float("inf")
    for _ in range(3):
        fn = make()
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items) * 1e6)
    return best


def main() -> None:
    """Print the table docs/BENCHMARKS.md quotes."""
    events = [
        protocol.encode_event("bench.reading", "bench", 12345678901234, i + 1, 1.5, SMALL)
        for i in range(N)
    ]
    raws = [msgpack.packb({**SMALL, "i": i}) for i in range(N)]
    rows = [
        ("msgpack.unpackb of the raw bench payload", best_us(msgpack.unpackb, raws)),
        (
            "split topic + unpack of a linebus event frame",
            best_us(lambda f: msgpack.unpackb(f[f.find(b"\0") + 1 :]), events),
        ),
        (
            "GapTracker.decode (+ gap tracking + typed event)",
            best_us_fresh(lambda: GapTracker().decode, events),
        ),
        (
            "protocol.encode_request (small args)",
            best_us(
                lambda _: protocol.encode_request("abc-1", "svc", "echo", 10.0, {"value": SMALL}),
                raws[:100_000],
            ),
        ),
        (
            "protocol.encode_reply (small result)",
            best_us(lambda _: protocol.encode_reply("abc-1", SMALL), raws[:100_000]),
        ),
    ]
    print("| operation | µs |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.2f} |")


if __name__ == "__main__":
    main()
