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


def child(value: int) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(value)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LINEBUS_LOG_LEVEL": "error"},
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]  # after structlog's default output


def test_none_leaves_the_inherited_value() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    apply_nice(None, "[broker]")
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_a_lower_priority_is_always_allowed() -> None:
    """Any process may lower its own priority (a higher nice value)."""
    assert child(11) == "11"


def test_a_higher_priority_without_the_right_is_a_config_error() -> None:
    """Without root, CAP_SYS_NICE or RLIMIT_NICE, a value below the current one is refused with
    a ConfigError naming the table, the value and what it needs; the process stays as it was."""
    message = child(-5)
    assert message.startswith("ConfigError")
    assert "actor 'p1': nice = -5" in message
    assert "CAP_SYS_NICE" in message


def test_the_error_names_the_current_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message says which values would work (at least the current one)."""

    def refuse(which: int, who: int, value: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    current = os.getpriority(os.PRIO_PROCESS, 0)
    with pytest.raises(ConfigError, match=f"use a value of at least {current}"):
        apply_nice(current - 1, "[broker]")
