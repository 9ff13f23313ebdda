"""Rate-limited logging of rejected input: first N per window, then one summary with counts."""

from __future__ import annotations

from typing import Any

import pytest

from bus.security.ratelimit import RejectLog, SummarizingLimiter, Suppressed


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Lines:
    """Collects what a logger method would write."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, /, **fields: Any) -> None:
        self.lines.append((event, fields))


class TestLimiter:
    def test_first_n_per_window_pass(self, clock: FakeClock) -> None:
        limiter = SummarizingLimiter(3, 10.0, clock=clock)
        assert [limiter.hit("malformed") for _ in range(5)] == [True, True, True, False, False]
        assert limiter.poll() is None  # the window is not over
        clock.now = 10.0
        assert limiter.poll() == Suppressed(2, {"malformed": 2}, 10.0)
        assert limiter.poll() is None  # once
        assert limiter.hit("malformed")  # a new window opens at the next hit

    def test_a_hit_after_the_window_closes_it(self, clock: FakeClock) -> None:
        limiter = SummarizingLimiter(1, 5.0, clock=clock)
        limiter.hit("a")
        limiter.hit("a")
        limiter.hit("b")
        clock.now = 7.0
        assert limiter.hit("a")
        assert limiter.poll() == Suppressed(2, {"a": 1, "b": 1}, 5.0)

    def test_quiet_windows_summarise_nothing(self, clock: FakeClock) -> None:
        limiter = SummarizingLimiter(5, 1.0, clock=clock)
        limiter.hit("a")
        clock.now = 2.0
        assert limiter.poll() is None

    def test_distinct_reasons_are_bounded(self, clock: FakeClock) -> None:
        limiter = SummarizingLimiter(0, 1.0, clock=clock, max_reasons=2)
        for reason in ("a", "b", "c", "d", "a"):
            assert not limiter.hit(reason)
        clock.now = 1.0
        assert limiter.poll() == Suppressed(5, {"a": 2, "b": 1, "other": 2}, 1.0)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError):
            SummarizingLimiter(1, 0)

    def test_message(self) -> None:
        assert Suppressed(5, {"too_large": 1, "malformed": 4}).message() == (
            "suppressed 5 similar messages: malformed=4, too_large=1"
        )


class TestRejectLog:
    def test_a_flood_writes_a_bounded_number_of_lines(self, clock: FakeClock) -> None:
        lines = Lines()
        log = RejectLog(lines, SummarizingLimiter(10, 10.0, clock=clock))
        for i in range(100_000):
            clock.now = i * 0.001  # 100 s of flood at 1000 messages/s
            log("message_rejected", "malformed", peer="10.0.0.9")
        clock.now = 200.0
        log.tick()
        events = [event for event, _ in lines.lines]
        assert events.count("message_rejected") == 10 * 10
        summaries = [f for event, f in lines.lines if event == "rejected_input_suppressed"]
        assert len(summaries) == 10
        assert sum(s["suppressed"] for s in summaries) == 100_000 - 100
        assert summaries[0]["reasons"] == {"malformed": 9990}
        assert summaries[0]["message"] == "suppressed 9990 similar messages: malformed=9990"

    def test_summary_comes_before_the_next_window_lines(self, clock: FakeClock) -> None:
        lines = Lines()
        log = RejectLog(lines, SummarizingLimiter(1, 1.0, clock=clock), summary_event="sum")
        log("rejected", "a", n=1)
        log("rejected", "a", n=2)
        clock.now = 1.5
        log("rejected", "b", n=3)
        assert lines.lines == [
            ("rejected", {"reason": "a", "n": 1}),
            (
                "sum",
                {
                    "suppressed": 1,
                    "reasons": {"a": 1},
                    "window_s": 1.0,
                    "message": "suppressed 1 similar messages: a=1",
                },
            ),
            ("rejected", {"reason": "b", "n": 3}),
        ]

    def test_works_with_structlog(self) -> None:
        import structlog
        from structlog.testing import capture_logs

        with capture_logs() as captured:
            log = RejectLog(structlog.get_logger().warning, SummarizingLimiter(1, 60.0))
            log("message_rejected", "malformed", peer="x")
            log("message_rejected", "malformed", peer="x")
        assert captured == [
            {
                "event": "message_rejected",
                "reason": "malformed",
                "peer": "x",
                "log_level": "warning",
            }
        ]
