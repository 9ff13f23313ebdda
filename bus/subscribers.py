"""What subscribers tell the broker of the events they missed: the ``subscribers`` of ``stats``.

The broker cannot count a subscriber's losses itself: events go through libzmq's proxy, whose
XPUB drops a subscriber's events past ``subscriber_queue`` without a per-subscriber counter.
The subscriber counts them from the sequence numbers (PROTOCOL.md §9), and the Python
``Subscription`` reports its counts with the broker command ``report_subscriber`` (§13) after a
gap, at most once a second, and when it closes. This table keeps the last report of each, for
``linebus stats``.

Bounded: at most ``MAX_ROWS`` subscribers (the one reported longest ago gives way), and a row
not renewed for ``EXPIRE_S`` is forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from bus.errors import InvalidArguments

__all__ = ["EXPIRE_S", "MAX_ROWS", "SubscriberReports"]

MAX_ROWS: Final = 256
EXPIRE_S: Final = 600.0
_MAX_ID = 64
_MAX_PREFIXES = 16
_MAX_PREFIX = 256
_COUNTS: Final = ("missed", "repaired")


def _invalid(argument: str, problem: str, expected: str) -> InvalidArguments:
    return InvalidArguments.about(
        f"report_subscriber: {argument} must be {expected}",
        argument=argument,
        problem=problem,
        expected=expected,
    )


class SubscriberReports:
    """The last report of every subscriber that reported; see the module docstring."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}

    def report(
        self, args: Mapping[str, Any], identity: str | None, now: float | None = None
    ) -> None:
        """Take one ``report_subscriber``: ``subscriber`` (its id), ``prefixes``, ``missed``,
        ``repaired``; ``identity`` is the caller's on a secured line.

        Raises:
            InvalidArguments: an argument is missing or of the wrong type or size.
        """
        sub = args.get("subscriber")
        if not isinstance(sub, str) or not 0 < len(sub) <= _MAX_ID:
            raise _invalid("subscriber", "missing" if sub is None else "type", "str of 1-64")
        prefixes = args.get("prefixes", [])
        if (
            not isinstance(prefixes, list)
            or len(prefixes) > _MAX_PREFIXES
            or not all(isinstance(p, str) and len(p) <= _MAX_PREFIX for p in prefixes)
        ):
            raise _invalid("prefixes", "type", "array of at most 16 str")
        counts = {}
        for name in _COUNTS:
            value = args.get(name, 0)
            if type(value) is not int or value < 0:
                raise _invalid(name, "type", "int >= 0")
            counts[name] = value
        now = time.time() if now is None else now
        self._rows.pop(sub, None)  # re-inserted last: the dict stays in order of report
        self._rows[sub] = {
            "subscriber": sub,
            "identity": identity or None,
            "prefixes": list(prefixes),
            **counts,
            "reported": now,
        }
        while len(self._rows) > MAX_ROWS:
            del self._rows[next(iter(self._rows))]

    def snapshot(self, now: float | None = None) -> list[dict[str, Any]]:
        """The live rows as ``rows`` gives them (unsorted), without forgetting expired ones: safe
        from another thread than the broker's (the one copy of the table is made in one C call
        under the GIL, and rows are replaced whole, never changed), for bus.metrics."""
        now = time.time() if now is None else now
        return [
            {**{k: v for k, v in row.items() if k != "reported"}, "age_s": now - row["reported"]}
            for row in list(self._rows.values())
            if now - row["reported"] <= EXPIRE_S
        ]

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every live row, most missed first, with ``age_s`` since its report."""
        now = time.time() if now is None else now
        for sub in [s for s, row in self._rows.items() if now - row["reported"] > EXPIRE_S]:
            del self._rows[sub]
        out = [
            {**{k: v for k, v in row.items() if k != "reported"}, "age_s": now - row["reported"]}
            for row in self._rows.values()
        ]
        out.sort(key=lambda row: -row["missed"])
        return out
