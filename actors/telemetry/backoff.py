"""Capped exponential back-off with jitter, and honouring a server's ``Retry-After``."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays between retries: ``initial_s * 2**n`` capped at ``max_s``, drawn from its upper half.

    The jitter ("equal jitter") keeps many devices that lost the same server from retrying in
    lockstep when it comes back, while never waiting less than half the nominal delay.

    Args:
        initial_s: The nominal delay after the first failure.
        max_s: Cap of the nominal delay.
        retry_after_max_s: Cap on a server-given ``Retry-After``.
        rng: Source of jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        retry_after_max_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.retry_after_max_s = retry_after_max_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """Count one more failure and return how long to wait before the next attempt.

        A server's ``Retry-After`` is a floor: we never come back earlier than it asked.
        """
        nominal = min(self.max_s, self.initial_s * 2 ** min(self.failures, 32))
        self.failures += 1
        delay = self._rng.uniform(nominal / 2, nominal)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_after_max_s))
        return delay

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.failures = 0
