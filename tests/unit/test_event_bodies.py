"""``protocol.encode_event_bodies``: a batch of event bodies sharing common map entries is byte for
byte what ``encode_event_body`` gives for each merged map, whatever the map sizes (fixmap/map16
headers), value types and sequence numbers; an item that repeats a common key is refused."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from bus import protocol

SRC = "tel"
EPOCH = (1 << 53) - 12345  # a large epoch: multi-byte msgpack integer
TS = 1_700_000_000.123456

# Values of every kind an event carries: bytes, str, None, float, int, bool, nested containers.
VALUES: list[Any] = [
    b"\x00\xffraw",
    "text \u00e9",
    None,
    21.5,
    -3,
    2**40,
    True,
    [1, "a", None],
    {"k": b"v"},
    b"",
    "",
]


def common_map(n: int) -> dict[str, Any]:
    """``n`` common entries named c00.., cycling through VALUES."""
    return {f"c{i:02d}": VALUES[i % len(VALUES)] for i in range(n)}


def item_map(n: int, salt: int) -> dict[str, Any]:
    """``n`` item entries named i00.., with values that differ from item to item."""
    return {
        f"i{j:02d}": VALUES[(j + salt) % len(VALUES)] if j % 3 else salt * 1.25 + j
        for j in range(n)
    }


def reference(
    first_seq: int, items: list[dict[str, Any]], common: dict[str, Any], *, ts: float = TS
) -> list[bytes]:
    """What the one-event encoder gives for every merged map (common entries first)."""
    return [
        protocol.encode_event_body(SRC, EPOCH, first_seq + i, ts, {**common, **item})
        for i, item in enumerate(items)
    ]


@pytest.mark.parametrize("n_common", [0, 1, 15, 16, 20])
@pytest.mark.parametrize("item_sizes", [[0], [1], [0, 1, 2, 3], [14, 15, 16, 17], [1, 30, 0, 5]])
def test_bodies_are_byte_identical_to_single_encodes(n_common: int, item_sizes: list[int]) -> None:
    """For common maps of 0/1/15/16/20 entries and items of many sizes, each body equals
    encode_event_body of the merged map.
    """
    common = common_map(n_common)
    items = [item_map(size, salt) for salt, size in enumerate(item_sizes)]
    bodies = list(protocol.encode_event_bodies(SRC, EPOCH, 7, TS, items, common))
    assert bodies == reference(7, items, common)


@pytest.mark.parametrize(
    ("n_common", "n_item"), [(15, 0), (15, 1), (14, 1), (14, 2), (10, 10), (0, 16), (16, 0)]
)
def test_total_map_size_crossing_fixmap_limit(n_common: int, n_item: int) -> None:
    """A merged map of exactly 15, 16 or more entries gets the right header (fixmap below 16, map16
    from 16).
    """
    common, items = common_map(n_common), [item_map(n_item, 3)]
    (body,) = protocol.encode_event_bodies(SRC, EPOCH, 1, TS, items, common)
    assert body == reference(1, items, common)[0]
    decoded = msgpack.unpackb(body, strict_map_key=False)
    assert decoded[6] == {**common, **items[0]} and len(decoded[6]) == n_common + n_item


def test_decoded_events_have_consecutive_sequences_and_merged_data() -> None:
    """Decoded, event i is [1, 9, src, epoch, first_seq + i, ts, {**common, **item}] with common keys
    first.
    """
    common = {
        "stream_group": "g",
        "stream": "s",
        "kind": "message",
        "batch_id": None,
        "timestamp": 1.5,
    }
    items = [{"seq": 100 + i, "stream_seq": i + 1, "payload": bytes([i]) * i} for i in range(40)]
    bodies = list(protocol.encode_event_bodies(SRC, EPOCH, 2**31, TS, items, common))
    for i, body in enumerate(bodies):
        event = protocol.decode_event(protocol.event_prefix("tel.stream.g.s") + body)
        assert (event.topic, event.src, event.epoch, event.seq, event.ts) == (
            "tel.stream.g.s",
            SRC,
            EPOCH,
            2**31 + i,
            TS,
        )
        assert event.data == {**common, **items[i]}
        assert list(event.data) == [*common, *items[i]]
    assert bodies == reference(2**31, items, common)


@pytest.mark.parametrize("first_seq", [0, 1, 127, 128, 255, 65535, 65536, 2**32 - 1, 2**32])
def test_sequence_numbers_across_msgpack_integer_widths(first_seq: int) -> None:
    """Sequence numbers that change msgpack integer width in the middle of a batch still match."""
    common, items = common_map(2), [item_map(2, salt) for salt in range(3)]
    assert list(
        protocol.encode_event_bodies(SRC, EPOCH, first_seq, TS, items, common)
    ) == reference(first_seq, items, common)


@pytest.mark.parametrize("ts", [0.0, 1.0, TS, 2.5e-300])
def test_timestamps_match(ts: float) -> None:
    """The shared timestamp is encoded as the single encoder does (float64)."""
    common, items = common_map(1), [item_map(1, 0), item_map(1, 1)]
    assert list(protocol.encode_event_bodies(SRC, EPOCH, 5, ts, items, common)) == reference(
        5, items, common, ts=ts
    )


def test_large_values_match() -> None:
    """Values that need str16/str32/bin16/bin32 headers are encoded identically."""
    common = {"big_str": "x" * 70_000, "bin": b"y" * 300}
    items = [{"payload": b"z" * 70_000, "note": "n" * 40}, {"payload": b"", "note": "a" * 256}]
    assert list(protocol.encode_event_bodies(SRC, EPOCH, 1, TS, items, common)) == reference(
        1, items, common
    )


def test_no_items_gives_no_bodies() -> None:
    """An empty batch yields nothing."""
    assert list(protocol.encode_event_bodies(SRC, EPOCH, 1, TS, [], common_map(3))) == []


def test_lazy_items_are_consumed_once_in_order() -> None:
    """A generator of items works (the actor passes one) and gives the same bodies as a list."""
    common = common_map(4)
    items = [item_map(3, salt) for salt in range(5)]
    assert list(
        protocol.encode_event_bodies(SRC, EPOCH, 9, TS, (dict(i) for i in items), common)
    ) == reference(9, items, common)


@pytest.mark.parametrize("n_common", [1, 15, 16])
def test_item_repeating_a_common_key_is_refused(n_common: int) -> None:
    """An item that repeats a key of common raises ValueError naming the key (before any body is given)."""
    common = common_map(n_common)
    bodies = protocol.encode_event_bodies(SRC, EPOCH, 1, TS, [{"c00": "again", "own": 1}], common)
    with pytest.raises(ValueError, match="c00"):
        next(bodies)
