"""The broker's table of what subscribers report they missed (``bus.subscribers``), and the
client's side of it (``bus._calls.LossReport``); end to end in tests/unit/test_gap_repair.py."""

from __future__ import annotations

from typing import Any

import pytest

from bus import subscribers
from bus._calls import LossReport
from bus.errors import InvalidArguments
from bus.subscribers import SubscriberReports


def _args(sub: str = "a1", missed: int = 0, **more: Any) -> dict[str, Any]:
    return {"subscriber": sub, "prefixes": ["fr1."], "missed": missed, "repaired": 0, **more}


class TestSubscriberReports:
    def test_the_last_report_of_each_most_missed_first(self) -> None:
        table = SubscriberReports()
        table.report(_args("a", 3), None, now=100.0)
        table.report(_args("b", 7), "alice", now=101.0)
        table.report(_args("a", 9), None, now=102.0)
        rows = table.rows(now=103.0)
        assert [(r["subscriber"], r["missed"], r["identity"], r["age_s"]) for r in rows] == [
            ("a", 9, None, 1.0),
            ("b", 7, "alice", 2.0),
        ]

    def test_bounded_and_forgetting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(subscribers, "MAX_ROWS", 2)
        table = SubscriberReports()
        for i, sub in enumerate("abc"):
            table.report(_args(sub), None, now=float(i))
        assert {r["subscriber"] for r in table.rows(now=3.0)} == {"b", "c"}
        assert table.rows(now=3.0 + subscribers.EXPIRE_S) == []

    @pytest.mark.parametrize(
        ("args", "argument"),
        [
            ({"missed": 1}, "subscriber"),
            (_args("x" * 65), "subscriber"),
            (_args(prefixes="fr1."), "prefixes"),
            (_args(prefixes=[1]), "prefixes"),
            (_args(missed=-1), "missed"),
            (_args(repaired=True), "repaired"),
        ],
    )
    def test_bad_reports_are_refused(self, args: dict[str, Any], argument: str) -> None:
        with pytest.raises(InvalidArguments) as caught:
            SubscriberReports().report(args, None)
        assert caught.value.details["argument"] == argument


class TestLossReport:
    def test_only_news_and_not_too_often(self) -> None:
        loss = LossReport(("fr1.",))
        assert loss.args(0, 0) is None  # nothing to tell
        first = loss.args(2, 0)
        assert first == {
            "subscriber": loss.subscriber,
            "prefixes": ["fr1."],
            "missed": 2,
            "repaired": 0,
        }
        loss.sent(first)
        assert loss.args(2, 0, now=True) is None
        assert loss.args(5, 1) is None  # within EVERY_S of the last
        assert loss.args(5, 1, now=True) is not None
