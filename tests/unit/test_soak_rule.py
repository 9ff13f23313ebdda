"""The soak's drift rule (bench/soak.py) on made-up series: what drifts and what does not."""

from __future__ import annotations

import pytest

from bench.soak import LIMITS, Series, drift, percentile, slope


def _series(metric: str, values: list[float], step_s: float = 10.0) -> Series:
    return Series("p", metric, [(i * step_s, v) for i, v in enumerate(values)])


def test_slope_of_a_line_and_of_a_constant() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(0, 7), (1, 7), (2, 7)]) == 0.0
    assert slope([(0, 7)]) == 0.0


def test_flat_memory_does_not_drift() -> None:
    verdict = drift(_series("rss_kib", [40_000.0 + (i % 3) * 100 for i in range(40)]))
    assert verdict is not None and not verdict.drifts


def test_memory_growing_through_the_second_half_drifts() -> None:
    # 300 KiB a sample: 5.6 MiB across the second half, past its limit (the larger of 4 MiB and
    # 5 % of the median, ~2.4 MiB).
    verdict = drift(_series("rss_kib", [40_000.0 + 300 * i for i in range(40)]))
    assert verdict is not None and verdict.drifts
    assert verdict.rise == pytest.approx(300 * 19)
    assert verdict.limit == pytest.approx(max(LIMITS["rss_kib"][0], 0.05 * (40_000 + 300 * 29.5)))


def test_growth_during_warm_up_only_does_not_drift() -> None:
    # Descriptors and threads open while the first half warms up, then stay.
    values = [10.0 + min(i, 15) for i in range(40)]
    verdict = drift(_series("fds", values))
    assert verdict is not None and not verdict.drifts


def test_one_descriptor_leaked_every_few_samples_drifts() -> None:
    verdict = drift(_series("fds", [20.0 + i // 3 for i in range(40)]))
    assert verdict is not None and verdict.drifts


def test_latency_doubling_drifts_and_noise_does_not() -> None:
    noisy = [2.0, 5.0, 1.5, 3.0] * 10
    # Steady at 2 ms, then up by 1.5 ms a sample: 28.5 ms across the second half (limit: the
    # larger of 20 ms and its median, ~16 ms).
    rising = [2.0] * 20 + [2.0 + 1.5 * i for i in range(20)]
    quiet, slow = drift(_series("p50_ms", noisy)), drift(_series("p50_ms", rising))
    assert quiet is not None and not quiet.drifts
    assert slow is not None and slow.drifts


def test_too_short_to_judge() -> None:
    assert drift(_series("threads", [3.0] * 6)) is None
    assert drift(Series("p", "threads")) is None


def test_percentile_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile(list(map(float, range(101))), 0.99) == 99.0
    assert percentile([4.0], 0.99) == 4.0
