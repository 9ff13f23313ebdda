"""A process's CPU priority from the line's config: ``nice`` in ``[broker]`` and ``[[actor]]``.

On a small controller every process of the line shares a few cores. A broker and the actors
whose commands must answer quickly can be given a lower nice value (a larger share of the CPU,
and the first turn when they wake) than the actors doing bulk work; see README, "Configuration",
and docs/BENCHMARKS.md, "Commands beside bulk and events". Linux keeps a nice value per thread
and a new thread takes its creator's: so the value is set first thing, before the process starts
any thread (ZeroMQ's I/O threads, the actor's workers), and every thread has it.
"""

from __future__ import annotations

import os
from typing import Annotated

import structlog

from bus.errors import ConfigError
from bus.options import Range

__all__ = ["Nice", "apply_nice"]

log = structlog.get_logger()

#: A nice value: -20 (the largest share of the CPU) to 19 (the smallest); 0 is the default.
Nice = Annotated[int, Range(ge=-20, le=19)]


def apply_nice(value: int | None, owner: str) -> None:
    """Give this process (its calling thread, and so every thread it starts later) the nice
    ``value``; None leaves the one it inherited.

    Args:
        value: The nice value, -20 to 19 (``Nice``).
        owner: The config table it comes from, for messages ("[broker]", "actor 'p1'").

    Raises:
        ConfigError: ``value`` is below the current one and this process may not raise its
            priority (that needs root, CAP_SYS_NICE or a matching RLIMIT_NICE).
    """
    if value is None:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    except PermissionError:
        raise ConfigError(
            f"{owner}: nice = {value} is a higher priority than this process's ({current}), "
            "which needs root, CAP_SYS_NICE or a matching RLIMIT_NICE; run it with one, or use "
            f"a value of at least {current}"
        ) from None
    if value != current:
        log.info("nice_set", owner=owner, nice=value, was=current)
