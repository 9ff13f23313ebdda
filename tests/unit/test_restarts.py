"""bus.restarts.RestartPolicy: at once after a healthy run, a doubling back-off while a process
keeps dying young, given up when it flaps. Plain numbers for the clock: no process, no sleep."""

from __future__ import annotations

from bus.config import SupervisorConfig
from bus.restarts import RestartPolicy

#: The defaults of ``[supervisor]``: back-off 0.5 s doubling to 10 s, healthy after 5 s, given
#: up past 5 restarts within 60 s.
DEFAULTS = SupervisorConfig()


class Run:
    """Drives one policy through start / exit pairs on a clock of its own."""

    def __init__(self, config: SupervisorConfig = DEFAULTS) -> None:
        self.policy = RestartPolicy(config)
        self.now = 0.0

    def exit_after(self, ran_s: float) -> float | None:
        """Start now, exit ``ran_s`` later; wait the returned delay (if any) before the next."""
        started = self.now
        self.now += ran_s
        delay = self.policy.on_exit(started, self.now)
        if delay is not None:
            self.now += delay
        return delay


def test_the_defaults() -> None:
    """The documented defaults the recovery figures of docs/BENCHMARKS.md are measured with."""
    assert (DEFAULTS.backoff_initial_s, DEFAULTS.backoff_max_s, DEFAULTS.healthy_run_s) == (
        0.5,
        10.0,
        5.0,
    )
    assert (DEFAULTS.flap_max_restarts, DEFAULTS.flap_window_s) == (5, 60.0)


def test_a_crash_after_a_healthy_run_restarts_at_once() -> None:
    """Killed after serving a while, and again and again 10 s apart: never any wait."""
    run = Run()
    assert [run.exit_after(10.0) for _ in range(5)] == [0.0] * 5


def test_exactly_healthy_run_s_counts_as_healthy() -> None:
    assert Run().exit_after(5.0) == 0.0
    assert Run().exit_after(4.999) == 0.5


def test_dying_young_backs_off_doubling_to_the_cap() -> None:
    config = SupervisorConfig(flap_max_restarts=100)
    run = Run(config)
    assert [run.exit_after(0.2) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_healthy_run_starts_the_back_off_over() -> None:
    """Two young deaths, a healthy run, then a young death waits the first delay again."""
    run = Run(SupervisorConfig(flap_max_restarts=100))
    assert [run.exit_after(s) for s in (1.0, 1.0, 30.0, 1.0, 1.0)] == [0.5, 1.0, 0.0, 0.5, 1.0]


def test_flapping_is_given_up_whatever_the_run_length() -> None:
    """The sixth exit within 60 s is given up, healthy runs or not (flap detection unchanged)."""
    run = Run()
    delays = [run.exit_after(6.0) for _ in range(6)]
    assert delays == [0.0] * 5 + [None]
    assert run.policy.restarts == 6


def test_exits_older_than_the_window_are_forgotten() -> None:
    """Exits 15 s apart: never more than 4 within 60 s, so never given up."""
    run = Run()
    assert [run.exit_after(15.0) for _ in range(20)] == [0.0] * 20
    assert run.policy.restarts == 5  # this exit and the four before it within 60 s


def test_young_deaths_are_given_up_after_their_back_off() -> None:
    """A process that always dies at start-up: 0.5, 1, 2, 4, 8, then given up (within 60 s)."""
    run = Run()
    assert [run.exit_after(0.1) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, None]
