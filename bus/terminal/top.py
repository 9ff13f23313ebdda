"""``linebus top``: a live terminal view of a line, refreshed about once a second.

It shows the broker (uptime, services up, requests, replies and drops per second from its
``stats`` counters), every actor (kind, state, uptime, restarts, pid) and the running jobs with
their progress, rate and time left, heard as ``<service>.job`` events (docs/PROTOCOL.md §9);
a job that ended stays on show with its outcome for a few seconds. ``q`` or Ctrl-C quits.

``--once`` listens for one refresh interval (so rates and jobs have something to show), prints
one frame and exits: for scripts and tests. Without a terminal, frames are printed one after the
other as plain text.

What it knows is kept by ``TopState`` (``bus.terminal.topstate``); this module draws it
(``render``) and runs the loop (``run_top``). A job already running when top starts appears
with its next progress event (at most a quarter of a second later while it reports).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from bus.errors import BusError
from bus.terminal.progress import format_duration, format_fields, format_rate
from bus.terminal.tables import make_console, print_renderable
from bus.terminal.topstate import JobView, TopState

__all__ = ["render", "run_top"]

#: The rates shown in the header: (label, counter in TopState.rates).
_RATES = (
    ("requests", "routed.request"),
    ("replies", "routed.reply"),
    ("errors", "routed.error"),
    ("progress", "routed.progress"),
)

_STATE_STYLE = {"up": "green", "down": "red"}
_OUTCOME_STYLE = {"ok": "green", "error": "red", "cancelled": "yellow", "lost": "red"}


def render(state: TopState, *, endpoint: str, tty: bool, now_wall: float | None = None) -> Any:
    """One frame of ``top``: a rich renderable (header, actors, jobs)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now_wall = time.time() if now_wall is None else now_wall
    stats = state.stats
    up = sum(1 for row in state.services if row.get("state") == "up")
    header = Text(f"linebus top  {endpoint}", style="bold")
    if stats:
        header.append(f"  broker up {format_duration(stats.get('uptime_s'))}", style="")
    header.append(f"  services {up} up / {len(state.services)}")
    dropped = sum(v for k, v in state.rates.items() if k.startswith("dropped."))
    rates = "  ".join(f"{label} {format_rate(state.rates.get(key, 0.0))}" for label, key in _RATES)
    header.append(f"\n{rates}  dropped {format_rate(dropped)}")
    if "inflight" in stats:
        header.append(f"  in flight {stats['inflight']}")
    if state.problem:
        header.append(f"\n{state.problem}", style="bold red")

    actors = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for name, right in (
        ("NAME", False),
        ("KIND", False),
        ("STATE", False),
        ("UPTIME", True),
        ("RESTARTS", True),
        ("PID", True),
    ):
        actors.add_column(name, no_wrap=True, justify="right" if right else "left")
    for row in state.services:
        actors.add_row(
            row["name"],
            row.get("kind") or "-",
            Text(str(row.get("state")), style=_STATE_STYLE.get(str(row.get("state")), "")),
            format_duration(state.uptime_s(row, now_wall)) if row.get("state") == "up" else "-",
            str(row.get("restarts", "-")),
            str(row.get("pid") or "-"),
        )
    if not state.services:
        actors.add_row("no services have registered", "", "", "", "", "")

    jobs = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for name, right in (
        ("SERVICE", False),
        ("COMMAND", False),
        ("PROGRESS", False),
        ("DONE", True),
        ("RATE", True),
        ("LEFT", True),
        ("TIME", True),
        ("", False),
    ):
        jobs.add_column(name, no_wrap=True, justify="right" if right else "left")
    shown = state.jobs()
    for job in shown:
        jobs.add_row(*_job_cells(job, state.clock(), tty))
    if not shown:
        jobs.add_row("no jobs running", "", "", "", "", "", "", "")
    return Group(header, Text(""), actors, Text(""), jobs)


def _job_cells(job: JobView, now: float, tty: bool) -> list[Any]:
    from rich.text import Text

    numbers = job.numbers
    if numbers is not None:
        done, total = numbers
        fraction = min(1.0, done / total)
        bar = _bar(fraction, tty)
        count = f"{_short(done)}/{_short(total)}"
        rate = format_rate(job.estimate.rate)
        left = format_duration(job.estimate.left_s(done, total)) if job.ended is None else ""
    else:
        bar, count, rate, left = "", "", "", ""
    if job.ended is None:
        elapsed = format_duration(now - job.started)
        info: Any = "" if job.progress is None else format_fields(job.progress)
    else:
        elapsed = format_duration(job.duration_s if job.duration_s is not None else 0)
        outcome = job.outcome or "?"
        text = outcome if job.code is None or outcome == "cancelled" else f"{outcome} {job.code}"
        info = Text(text, style=_OUTCOME_STYLE.get(outcome, ""))
    return [job.service, job.command, bar, count, rate, left, elapsed, info]


def _bar(fraction: float, tty: bool, width: int = 20) -> str:
    filled = round(fraction * width)
    full, empty = ("█", "░") if tty else ("#", ".")
    return f"{full * filled}{empty * (width - filled)} {fraction:4.0%}"


def _short(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"


class _Line:
    """The bus side of ``top``: polls the broker and listens to the job events of every service
    it knows (the subscription is renewed when services appear)."""

    def __init__(self, client: Any, state: TopState, ready_timeout: float) -> None:
        self._client = client
        self._state = state
        self._ready_timeout = ready_timeout
        self._names: tuple[str, ...] | None = None
        self._sub: Any = None

    def poll(self) -> None:
        """Ask the broker for services and stats, and follow new services' job events. A broker
        that stops answering is shown in the frame, not fatal."""
        try:
            rows = self._client.services()
            self._state.on_services(rows)
            self._state.on_stats(self._client.stats())
        except BusError as exc:
            self._state.problem = f"the broker does not answer: {exc}"
            return
        names = tuple(sorted(row["name"] for row in rows))
        if names != self._names:
            self._names = names
            self.close()
            self._sub = self._client.subscribe(*(f"{name}.job" for name in names))
            with contextlib.suppress(BusError):
                self._sub.wait_ready(self._ready_timeout)

    def listen(self, until: float, stop: Callable[[], bool]) -> bool:
        """Apply job events until monotonic time ``until``; True if ``stop`` said so first."""
        while True:
            if stop():
                return True
            left = until - time.monotonic()
            if left <= 0:
                return False
            if self._sub is None:
                time.sleep(min(left, 0.1))
                continue
            event = self._sub.next(timeout=min(left, 0.1))
            if event is not None and event.topic.endswith(".job"):
                self._state.on_job(event.src, event.data)

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None


@contextlib.contextmanager
def _keys(stream: TextIO) -> Iterator[Callable[[], bool]]:
    """While in the block, ``pressed_q()`` says whether q was typed (stdin a terminal, read key
    by key; Ctrl-C still interrupts). Without a terminal nothing is read."""
    if not stream.isatty():
        yield lambda: False
        return
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed_q() -> bool:
        while select.select([fd], [], [], 0)[0]:
            if os.read(fd, 1) in (b"q", b"Q"):
                return True
        return False

    try:
        yield pressed_q
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_top(
    client: Any,
    *,
    endpoint: str,
    once: bool = False,
    interval: float = 1.0,
    out: TextIO | None = None,
    keys: TextIO | None = None,
) -> int:
    """Run ``top`` on ``client`` until q or Ctrl-C (or one frame with ``once``); returns the exit
    code (0).

    Raises:
        BrokerUnreachable: the broker did not answer at the start (the CLI exits 3); later it
            is shown in the frame until it answers again.
    """
    out = out or sys.stdout
    keys = keys or sys.stdin
    state = TopState()
    client.ping()  # no broker: BrokerUnreachable now, exit 3 like every other command
    line = _Line(client, state, ready_timeout=max(interval, 1.0))
    try:
        line.poll()
        if once:
            line.listen(time.monotonic() + interval, lambda: False)
            line.poll()
            print_renderable(render(state, endpoint=endpoint, tty=out.isatty()), out=out)
            return 0
        if out.isatty():
            return _live(line, state, endpoint, interval, out, keys)
        while True:  # not a terminal: one plain frame per refresh
            line.listen(time.monotonic() + interval, lambda: False)
            line.poll()
            print_renderable(render(state, endpoint=endpoint, tty=False), out=out)
            print(file=out, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        line.close()


def _live(
    line: _Line, state: TopState, endpoint: str, interval: float, out: TextIO, keys: TextIO
) -> int:
    from rich.live import Live

    console = make_console(out, True)
    with (
        _keys(keys) as pressed_q,
        Live(
            render(state, endpoint=endpoint, tty=True),
            console=console,
            screen=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live,
    ):
        while True:
            if line.listen(time.monotonic() + interval, pressed_q):
                return 0
            line.poll()
            live.update(render(state, endpoint=endpoint, tty=True), refresh=True)
