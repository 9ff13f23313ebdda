"""Capped exponential back-off: the pause before each retry, for every retry loop of linebus.

Sans-io: a ``Backoff`` only computes delays; the caller sleeps (``time.sleep``,
``asyncio.sleep``, ``Event.wait``) and tells it when an attempt succeeded::

    backoff = Backoff(0.5, 30.0)
    while True:
        try:
            connect()
        except OSError:
            time.sleep(backoff.next_delay())  # 0.5, 1, 2, 4 ... 30, 30
            continue
        backoff.reset()

The supervisor restarts processes with it, the device actors reconnect with it, and the telemetry
forwarder paces its retries with it (with jitter, and honouring a server's ``Retry-After``).
"""

from __future__ import annotations

import random

__all__ = ["EQUAL_JITTER", "Backoff"]

#: Jitter that draws each delay from the upper half of its nominal value ("equal jitter"): many
#: peers that lost the same server do not retry in lockstep, and none waits less than half.
EQUAL_JITTER = (0.5, 1.0)


class Backoff:
    """Delays between retries: ``initial_s``, then times ``factor`` per failure, capped at ``max_s``.

    Args:
        initial_s: The nominal delay after the first failure.
        max_s: Cap of the nominal delay (the first delay is capped too).
        factor: Growth of the nominal delay per failure.
        jitter: ``(low, high)``: each delay is its nominal value times a factor drawn uniformly
            from this range (``EQUAL_JITTER``, or ``(0.8, 1.2)`` for +-20 %); None: no jitter,
            the delays are exactly the nominal ones.
        retry_after_max_s: Cap on a server-given ``Retry-After`` passed to ``next_delay``.
        rng: Source of jitter (tests pass a seeded ``random.Random``).
    """

    __slots__ = (
        "_nominal",
        "_rng",
        "factor",
        "failures",
        "initial_s",
        "jitter",
        "max_s",
        "retry_after_max_s",
    )

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        factor: float = 2.0,
        jitter: tuple[float, float] | None = None,
        retry_after_max_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or max_s <= 0:
            raise ValueError(f"back-off delays must be positive, got {initial_s} and {max_s}")
        if factor < 1:
            raise ValueError(f"back-off factor must be at least 1, got {factor}")
        if jitter is not None and not 0 <= jitter[0] <= jitter[1]:
            raise ValueError(f"jitter must be (low, high) with 0 <= low <= high, got {jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self.retry_after_max_s = retry_after_max_s
        self._rng = rng or random.Random()
        #: Failures counted since the last ``reset``.
        self.failures = 0
        self._nominal = min(initial_s, max_s)

    @property
    def nominal_s(self) -> float:
        """The nominal (unjittered) delay the next ``next_delay`` starts from; for log lines."""
        return self._nominal

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """Count one more failure and return how long to wait before the next attempt.

        A server's ``Retry-After`` (``retry_after_s``) is a floor: we never come back earlier than
        it asked, up to ``retry_after_max_s``.
        """
        delay = self._nominal
        self._nominal = min(self._nominal * self.factor, self.max_s)
        self.failures += 1
        if self.jitter is not None:
            delay *= self._rng.uniform(*self.jitter)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_after_max_s))
        return delay

    def reset(self) -> None:
        """Forget past failures after a success: the next delay is ``initial_s`` again."""
        self.failures = 0
        self._nominal = min(self.initial_s, self.max_s)
