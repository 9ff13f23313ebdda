"""Aligned tables for ``linebus services`` and ``linebus stats`` (rich, no borders).

On a terminal the headers are bold; in a pipe the text is plain, every line has its trailing
blanks cut, and nothing wraps (columns split on runs of blanks, as ``awk`` and ``cut`` expect).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

__all__ = [
    "ago",
    "make_console",
    "print_renderable",
    "print_stats",
    "print_table",
    "services_table",
]


def print_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    out: TextIO | None = None,
    tty: bool | None = None,
    title: str | None = None,
) -> None:
    """Print ``rows`` under ``headers`` in aligned columns (numbers right-aligned)."""
    from rich.table import Table

    rows = [[_cell(v) for v in row] for row in rows]
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", title=None)
    for i, header in enumerate(headers):
        values = [row[i] for row in rows if row[i] != "-"]
        numeric = bool(values) and all(_is_number_text(v) for v in values)
        table.add_column(header, no_wrap=True, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*row)
    print_renderable(table, out=out, tty=tty, title=title)


def make_console(out: TextIO, tty: bool) -> Any:
    """A rich Console on ``out``: colours on a terminal; plain and never wrapped in a pipe."""
    from rich.console import Console

    return Console(
        file=out,
        force_terminal=tty,
        no_color=not tty,
        highlight=False,
        width=None if tty else 10_000,
    )


def print_renderable(
    renderable: Any,
    *,
    out: TextIO | None = None,
    tty: bool | None = None,
    title: str | None = None,
) -> None:
    """Print a rich renderable (under a ``title`` line): as it is on a terminal, as plain text
    without trailing blanks in a pipe."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    console = make_console(out, tty)
    if tty:
        if title:
            console.print(title, style="bold", markup=False)
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    if title:
        out.write(f"{title}\n")
    out.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    out.flush()


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def ago(seconds: float) -> str:
    """``12s ago``, ``5m ago``, ``2.5h ago``."""
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def services_table(
    rows: Sequence[Mapping[str, Any]], now: float | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells of ``linebus services``: name, kind, state, since, restarts (when the
    broker's rows carry them) and pid."""
    now = time.time() if now is None else now
    restarts = any("restarts" in row for row in rows)
    headers = ["NAME", "KIND", "STATE", "SINCE", *(["RESTARTS"] if restarts else []), "PID"]
    cells = []
    for row in rows:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["since"]))
        line = [row["name"], row.get("kind"), row["state"], f"{since} ({ago(now - row['since'])})"]
        # A broker from before the restart count has no such key: no column at all.
        cells.append([*line, *([row.get("restarts")] if restarts else []), row.get("pid")])
    return headers, cells


def print_stats(
    stats: Mapping[str, Any], *, out: TextIO | None = None, tty: bool | None = None
) -> None:
    """``linebus stats``: the broker's numbers first, then one table per map or list of maps
    (routed, dropped, subscribers...), in the order the broker sent them. Keys this version does
    not know are shown the same way."""
    scalars = [(k, v) for k, v in stats.items() if not isinstance(v, (dict, list))]
    print_table(["BROKER", "VALUE"], scalars, out=out, tty=tty)
    for key, value in stats.items():
        if isinstance(value, dict):
            _blank(out)
            print_table([key.upper(), "VALUE"], sorted(value.items()), out=out, tty=tty)
        elif isinstance(value, list):
            _blank(out)
            maps = [v for v in value if isinstance(v, dict)]
            if not maps:
                print_table([key.upper()], [[v] for v in value] or [["none"]], out=out, tty=tty)
                continue
            columns = list(dict.fromkeys(k for m in maps for k in m))
            print_table(
                [c.upper() for c in columns],
                [[m.get(c) for c in columns] for m in maps],
                out=out,
                tty=tty,
                title=key,
            )


def _blank(out: TextIO | None) -> None:
    print(file=out or sys.stdout)
