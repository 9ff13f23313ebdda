"""Stand-in children for the supervisor: a shell script given as its ``python``, which plays
each child with the behaviour a test wrote for it and records what the children did.

The supervisor runs ``PYTHON -m bus.cli broker --config CONFIG``, ``PYTHON -m MODULE ARGS`` for
a simulator and ``PYTHON -m bus.cli actor CONFIG NAME`` for an actor. The stand-in plays
"broker", MODULE (tests name simulators after their module) or NAME by sourcing ``NAME.sh``
from its directory, after appending ``start NAME`` to the events file; the behaviours below
append ``serving NAME`` once they handle SIGTERM and ``stop NAME`` when they stop on it. A
child starts in milliseconds (no Python interpreter).
"""

from __future__ import annotations

from pathlib import Path

from bus.testing import wait_until
from tests.unit.inproc_line import WAIT_S

__all__ = ["CRASH", "READY", "SERVE", "STUBBORN", "Children"]

#: The stand-in interpreter.
INTERPRETER = """#!/bin/sh
dir='{dir}'
log="$dir/events"
case "$2 $3" in
    "bus.cli broker") name=broker ;;
    "bus.cli actor") name=$5 ;;
    *) name=$2 ;;
esac
# A SIGTERM before the behaviour sets its own trap (a loaded machine may be that slow) is a stop
# on SIGTERM all the same: recorded as one, not a silent death.
trap 'echo "stop $name" >> "$log"; exit 0' TERM
echo "start $name" >> "$log"
. "$dir/$name.sh"
"""

#: Run until SIGTERM, then record the stop and exit 0 ("serving" once SIGTERM is handled). The
#: sleep does not hold the child's stdout: a simulator's pipe ends with the shell.
SERVE = """trap 'echo "stop $name" >> "$log"; kill $child; exit 0' TERM
sleep 30 >/dev/null & child=$!
echo "serving $name" >> "$log"
wait $child
"""
#: Exit at once with code 3.
CRASH = "exit 3\n"
#: A simulator: a line of chatter, the ready line, then serve.
READY = (
    """echo "warming up"
echo '{"event": "ready", "port": 21234, "logger": "sim"}'
"""
    + SERVE
)
#: Ignore SIGTERM (and say so once it does).
STUBBORN = """trap '' TERM
echo "stubborn $name" >> "$log"
exec sleep 30
"""


class Children:
    """The stand-in interpreter and what its children did."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "python"
        self.python.write_text(INTERPRETER.format(dir=root))
        self.python.chmod(0o755)
        (root / "events").write_text("")

    def behave(self, **scripts: str) -> None:
        for name, script in scripts.items():
            (self.root / f"{name}.sh").write_text(script)

    def events(self) -> list[str]:
        return (self.root / "events").read_text().splitlines()

    def starts(self, name: str) -> int:
        return self.events().count(f"start {name}")

    def wait(self, *events: str) -> None:
        """Wait until the events file holds each of ``events`` (repeats count)."""

        def seen() -> bool:
            now = self.events()
            return all(now.count(e) >= events.count(e) for e in events)

        wait_until(seen, WAIT_S, lambda: f"{events} in {self.events()}", interval=0.005)
