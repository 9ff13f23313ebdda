"""bus.backoff.Backoff: the delays of every retry loop (supervisor, device links, forwarder)."""

from __future__ import annotations

import random

import pytest

from bus.backoff import EQUAL_JITTER, Backoff


class TestWithoutJitter:
    def test_delays_double_up_to_the_cap(self) -> None:
        """Exactly initial, 2x, 4x ... then the cap, as the supervisor and device links wait."""
        backoff = Backoff(0.5, 10.0)
        assert [backoff.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 10, 10, 10]
        assert backoff.failures == 8

    def test_same_delays_as_doubling_by_hand(self) -> None:
        """The delays equal the ``delay = min(delay * 2, max)`` loops they replaced, bit for bit."""
        backoff, delay = Backoff(0.1, 5.0), 0.1
        for _ in range(12):
            assert backoff.next_delay() == delay
            delay = min(delay * 2, 5.0)

    def test_reset_starts_again_from_initial(self) -> None:
        """After a success the next delay is the first one again, and no failure is counted."""
        backoff = Backoff(0.2, 1.0)
        for _ in range(4):
            backoff.next_delay()
        backoff.reset()
        assert (backoff.failures, backoff.nominal_s, backoff.next_delay()) == (0, 0.2, 0.2)

    def test_factor(self) -> None:
        """Another growth factor multiplies each delay by it."""
        backoff = Backoff(1.0, 100.0, factor=3.0)
        assert [backoff.next_delay() for _ in range(6)] == [1, 3, 9, 27, 81, 100]

    def test_nominal_is_the_next_delay(self) -> None:
        """``nominal_s`` says what the next delay will be (for log lines)."""
        backoff = Backoff(0.5, 2.0)
        for _ in range(4):
            expected = backoff.nominal_s
            assert backoff.next_delay() == expected

    def test_first_delay_is_capped_too(self) -> None:
        """An initial delay above the cap waits the cap."""
        assert Backoff(5.0, 1.0).next_delay() == 1.0

    def test_many_failures_do_not_overflow(self) -> None:
        """A device gone for days keeps waiting the cap."""
        backoff = Backoff(0.1, 30.0)
        for _ in range(5000):
            delay = backoff.next_delay()
        assert delay == 30.0


class TestJitter:
    def test_equal_jitter_draws_from_the_upper_half(self) -> None:
        """Nominal 0.1, 0.2, 0.4, 0.8, then capped at 1.0; each delay in [nominal/2, nominal]."""
        backoff = Backoff(0.1, 1.0, jitter=EQUAL_JITTER, rng=random.Random(1))
        for nominal in (0.1, 0.2, 0.4, 0.8, 1.0, 1.0):
            assert nominal / 2 <= backoff.next_delay() <= nominal
        backoff.reset()
        assert backoff.next_delay() <= 0.1

    def test_symmetric_jitter_stays_in_its_range_and_varies(self) -> None:
        """(0.8, 1.2): each delay within +-20 % of its nominal, and not always the same."""
        backoff = Backoff(1.0, 1.0, jitter=(0.8, 1.2), rng=random.Random(7))
        delays = [backoff.next_delay() for _ in range(50)]
        assert all(0.8 <= d <= 1.2 for d in delays)
        assert len(set(delays)) > 40

    def test_seeded_sources_repeat(self) -> None:
        """The random source is injected: the same seed gives the same delays."""
        first, second = (
            Backoff(0.1, 1.0, jitter=EQUAL_JITTER, rng=random.Random(3)) for _ in range(2)
        )
        assert [first.next_delay() for _ in range(5)] == [second.next_delay() for _ in range(5)]


class TestRetryAfter:
    def test_retry_after_is_a_floor_with_a_cap(self) -> None:
        """The server's delay wins over a shorter back-off, but absurd values are capped."""
        backoff = Backoff(0.1, 1.0, jitter=EQUAL_JITTER, retry_after_max_s=60.0)
        assert backoff.next_delay(5.0) == 5.0
        assert backoff.next_delay(10_000.0) == 60.0

    def test_shorter_retry_after_keeps_the_back_off(self) -> None:
        """A Retry-After below the back-off does not shorten it."""
        backoff = Backoff(2.0, 10.0)
        assert backoff.next_delay(0.5) == 2.0


@pytest.mark.parametrize(
    ("initial_s", "max_s", "factor", "jitter"),
    [
        (0.0, 1.0, 2.0, None),
        (1.0, -1.0, 2.0, None),
        (1.0, 2.0, 0.5, None),
        (1.0, 2.0, 2.0, (1.2, 0.8)),
        (1.0, 2.0, 2.0, (-0.1, 1.0)),
    ],
    ids=["zero initial", "negative cap", "shrinking factor", "jitter reversed", "negative jitter"],
)
def test_nonsense_is_refused(
    initial_s: float, max_s: float, factor: float, jitter: tuple[float, float] | None
) -> None:
    """Delays that are not positive, a factor below 1 or a bad jitter range: ValueError."""
    with pytest.raises(ValueError):
        Backoff(initial_s, max_s, factor=factor, jitter=jitter)
