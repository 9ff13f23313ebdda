"""A process's CPU priority from the line's config: ``nice`` in ``[broker]``, ``[[actor]]`` and
``[web]``.

On a small controller every process of the line shares a few cores. A broker and the actors
whose commands must answer quickly can be given more of the CPU (and the first turn when they
wake) than the actors doing bulk work, and the dashboard less; see README, "Configuration", and
docs/BENCHMARKS.md, "Third session of 2026-12-06". ``nice`` is what the ``nice`` command's
``-n`` is: an adjustment of the priority the process was started with (under ``linebus up``, the
supervisor's), negative for more. Linux keeps a nice value per thread and a new thread takes
its creator's: so it is applied first thing, before the process starts any thread (ZeroMQ's
I/O threads, the actor's workers), and every thread has it.
"""

from __future__ import annotations

import os
from typing import Annotated

import structlog

from bus.errors import ConfigError
from bus.options import Range

__all__ = ["Nice", "apply_nice"]

log = structlog.get_logger()

#: The nice values Linux has: -20 (the largest share of the CPU) to 19 (the smallest).
_LOWEST, _HIGHEST = -20, 19

#: An adjustment of a process's nice value, as ``nice -n``: -20 (more CPU) to 19 (less).
Nice = Annotated[int, Range(ge=_LOWEST, le=_HIGHEST)]


def apply_nice(adjustment: int | None, owner: str) -> None:
    """Adjust this process's nice value by ``adjustment`` (within -20 to 19), as ``nice -n``
    does, for the calling thread and so every thread it starts later; None or 0 leaves it.

    Args:
        adjustment: Negative for a higher priority, positive for a lower one.
        owner: The config table it comes from, for messages ("[broker]", "actor 'p1'").

    Raises:
        ConfigError: the adjustment is negative and this process may not raise its priority
            (that needs root, CAP_SYS_NICE or a matching RLIMIT_NICE).
    """
    if not adjustment:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    target = max(_LOWEST, min(_HIGHEST, current + adjustment))
    try:
        os.setpriority(os.PRIO_PROCESS, 0, target)
    except PermissionError:
        raise ConfigError(
            f"{owner}: nice = {adjustment} would raise this process's priority (nice {current} "
            f"to {target}), which needs root, CAP_SYS_NICE or a matching RLIMIT_NICE; run it "
            "with one, or use 0 or more"
        ) from None
    log.info("nice_set", owner=owner, adjustment=adjustment, nice=target, was=current)
