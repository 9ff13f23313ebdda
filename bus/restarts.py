"""When the supervisor restarts a process that exited: at once, after a back-off, or never.

Sans-io, like ``bus.backoff``: a ``RestartPolicy`` is told when a process started and when it
exited, and answers how long to wait before starting it again (None: give up). The supervisor
owns the clock and the processes; tests drive a policy with plain numbers.

The rules, for each exit:

1. **Flapping**: more than ``flap_max_restarts`` exits within ``flap_window_s`` → give up.
2. **A healthy run** (the process lived at least ``healthy_run_s``): restart at once, and start
   the back-off over. A device actor killed after hours of service is back as fast as Python
   starts; waiting would only lengthen the outage of its callers.
3. **Died young** (under ``healthy_run_s``): wait the back-off, which doubles from
   ``backoff_initial_s`` up to ``backoff_max_s`` for as long as the process keeps dying young
   (a bad config, a missing device, a crash at start-up), so it does not spin.
"""

from __future__ import annotations

from collections import deque

from bus.backoff import Backoff
from bus.config import SupervisorConfig

__all__ = ["RestartPolicy"]


class RestartPolicy:
    """The restart decisions for one supervised process.

    Args:
        config: The ``[supervisor]`` table: back-off, healthy run and flap limits.
    """

    __slots__ = ("backoff", "config", "exits")

    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        #: Times (the caller's clock) of the exits within the flap window.
        self.exits: deque[float] = deque()

    def on_exit(self, started_at: float, now: float) -> float | None:
        """Record that a process started at ``started_at`` exited at ``now``; return the delay
        before starting it again, 0.0 for at once, or None when it is given up (flapping)."""
        cfg = self.config
        self.exits.append(now)
        while self.exits and now - self.exits[0] > cfg.flap_window_s:
            self.exits.popleft()
        if len(self.exits) > cfg.flap_max_restarts:
            return None
        if now - started_at >= cfg.healthy_run_s:
            self.backoff.reset()
            return 0.0
        return self.backoff.next_delay()

    @property
    def restarts(self) -> int:
        """Exits counted in the flap window (a given-up process: one more than it was allowed)."""
        return len(self.exits)
