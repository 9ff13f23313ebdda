"""bus.priority: setting a process's nice value, and the error when it may not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bus.errors import ConfigError
from bus.priority import apply_nice

#: A child process that applies the nice value given as argv[1] (as an unprivileged user when
#: started as root, so that raising its priority is refused as it would be for anyone else),
#: then prints its nice value, or the ConfigError it got, on its last line.
CHILD = """
import os, sys
from bus.errors import ConfigError
from bus.priority import apply_nice
if os.getuid() == 0:
    os.setgid(65534)
    os.setuid(65534)  # nobody: no CAP_SYS_NICE, RLIMIT_NICE of 0 by default
try:
    apply_nice(int(sys.argv[1]), "actor 'p1'")
except ConfigError as exc:
    print("ConfigError", exc.message)
else:
    print(os.getpriority(os.PRIO_PROCESS, 0))
"""


def child(value: int, start: int = 0) -> str:
    """What ``CHILD`` printed, run at nice ``start`` (0: as this process)."""
    result = subprocess.run(
        [*(["nice", "-n", str(start)] if start else []), sys.executable, "-c", CHILD, str(value)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LINEBUS_LOG_LEVEL": "error"},
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]  # after structlog's default output


def test_none_and_zero_leave_the_inherited_value() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    apply_nice(None, "[broker]")
    apply_nice(0, "[broker]")
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_a_lower_priority_is_always_allowed() -> None:
    """Any process may lower its own priority (a higher nice value)."""
    assert child(11) == "11"


def test_a_higher_priority_without_the_right_is_a_config_error() -> None:
    """Without root, CAP_SYS_NICE or RLIMIT_NICE, a value below the current one is refused with
    a ConfigError naming the table, the value and what it needs; the process stays as it was."""
    message = child(-5)
    assert message.startswith("ConfigError")
    assert "actor 'p1': nice = -5 would raise this process's priority (nice 0 to -5)" in message
    assert "CAP_SYS_NICE" in message


def test_an_adjustment_is_relative_and_kept_within_the_range() -> None:
    """As ``nice -n``: from a process at 11 (``child`` lowered it so), +5 is 16 and +15 is 19,
    the lowest priority there is."""
    assert child(5, start=11) == "16"
    assert child(15, start=11) == "19"


def test_the_error_says_what_would_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message names the values the process would go from and to, and what is allowed."""

    def refuse(which: int, who: int, value: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    current = os.getpriority(os.PRIO_PROCESS, 0)
    with pytest.raises(ConfigError, match=rf"\(nice {current} to {current - 1}\).*use 0 or more"):
        apply_nice(-1, "[broker]")
