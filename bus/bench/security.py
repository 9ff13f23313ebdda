"""What security costs, measured in one run (``linebus bench --security``).

Four brokers run side by side, each the real ``linebus broker`` with its own ``bench`` actor
(``EchoActor``), on lines that differ only in their ``[security]`` table:

  off              no [security]: plaintext; events through libzmq's C proxy.
  curve            CURVE on, ``check_publish = false`` and no subscribe rule: the C proxy still
                   forwards events (nothing checked per event).
  publish_rules    CURVE on, the default access list (``check_publish = true``): the broker's
                   Python loop reads each event's publisher (``User-Id``) and checks its topic.
  subscribe_rules  CURVE on, ``check_publish = false``, and one identity may subscribe to
                   ``bench.`` only: the XPUB runs in ``XPUB_MANUAL`` mode and each subscription
                   is checked; the same Python loop forwards the events (only it can serve a
                   manual XPUB), without checking them.

Keys for the broker, the actor (``bench``) and the client and subscribers (``client``) are
generated into a temporary directory by the benchmark itself. Measured, alternating the sides
``REPEATS`` times and keeping each side's median run (as ``linebus bench`` does):

  a. sequential calls and b. 8 in flight: CURVE off vs on (default access list), ratio on/off;
     every reply checked (``replied``).
  c. events to 1 and 10 subscriber processes on each line, and raw pyzmq through a C proxy:
     ratio of each line to CURVE off, and of the C-proxy lines to raw pyzmq; every delivery
     counted (``delivered``).

Each line's event path is read back from its broker's ``stats`` (and, for the Python loop, what
it forwarded and refused), so the table says which path each figure measured.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Final

from bus.bench import (
    SMALL,
    RawCurve,
    _actor,
    _alternate,
    _broker_process,
    _bus_round_trips,
    _events,
    _raw_event_proxy,
    _raw_proxy,
    _raw_round_trips,
    _raw_worker,
    _stop,
    wait_for_actors,
)
from bus.client import Client, ClientKeys
from bus.security.keys import generate_keypair, load_keypair, load_public_key
from bus.testing import free_port

__all__ = ["LINES", "TARGET", "report", "run"]

#: CURVE on keeps at least this share of CURVE off (issue 10, item 8).
TARGET: Final = 0.8

#: Each line's ``[security.acl]`` (None: no [security] at all), and what forwards its events.
LINES: Final[dict[str, tuple[str | None, str]]] = {
    "off": (None, "CURVE off, C proxy"),
    "curve": ("check_publish = false\n", "CURVE on, C proxy (no publish or subscribe rule)"),
    "publish_rules": ("", "CURVE on, default access list: publish rules, Python loop"),
    "subscribe_rules": (
        'check_publish = false\n\n[security.acl.identity.client]\nsubscribe = ["bench."]\n',
        "CURVE on, subscribe rules (XPUB_MANUAL), Python loop",
    ),
}
#: The line the command patterns compare with ``off``: CURVE on with the default access list.
COMMAND_LINE: Final = "publish_rules"
#: The sides of the command patterns: raw pyzmq without and with CURVE, linebus off and on.
COMMAND_SIDES: Final = ("raw", "raw_curve", "off", "on")
#: The sides of the event patterns: raw pyzmq without and with CURVE, and every line.
EVENT_SIDES: Final = ("raw", "raw_curve", *LINES)
#: What each side is, in the report.
SIDE_NAMES: Final = {
    "raw": "raw pyzmq, C proxy",
    "raw_curve": "raw pyzmq, CURVE on, C proxy",
    "on": "CURVE on, default access list",
    **{line: f"{line}: {text}" for line, (_, text) in LINES.items()},
}


def _config(folder: Path, line: str, acl: str) -> Path:
    """A line's config: the broker key, the peers' keys directory, and ``acl``."""
    path = folder / f"{line}.toml"
    path.write_text(
        "[security]\n"
        f'key = "{folder / "broker" / "broker.key_secret"}"\n'
        f'keys = "{folder / "peers"}"\n' + (f"\n[security.acl]\n{acl}" if acl else "")
    )
    return path


def _keys(folder: Path) -> dict[str, ClientKeys]:
    """Generate the broker's key and the peers' (``bench``, ``client``); their ClientKeys."""
    generate_keypair(folder / "broker", "broker")
    broker = load_public_key(file=folder / "broker" / "broker.key")
    keys = {}
    for name in ("bench", "client"):
        generate_keypair(folder / "peers", name)
        secret = folder / "peers" / f"{name}.key_secret"
        keys[name] = ClientKeys(load_keypair(file=secret), broker, str(secret))
    return keys


def _endpoints() -> dict[str, str]:
    return {role: f"tcp://127.0.0.1:{free_port()}" for role in ("command", "publish", "subscribe")}


def _event_path(endpoint: str, keys: ClientKeys | None) -> dict[str, Any]:
    """The broker's ``stats`` about its event path: ``{"path": "C proxy"}`` or the loop's
    counters (``path`` "checked")."""
    with Client(endpoint, timeout=5, keys=keys or False) as client:
        events = client.call("broker", "stats")["events"]
    return events if isinstance(events, dict) else {"path": "C proxy"}


def _ratios(figures: dict[str, Any], to: str) -> dict[str, float]:
    """Each side's rate over side ``to``'s (entries that are not a side's figures skipped)."""
    base = figures[to]["per_s"]
    return {
        side: (f["per_s"] / base if base else 0.0)
        for side, f in figures.items()
        if isinstance(f, dict) and "per_s" in f
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Start the four lines and the raw proxies, run every pattern, stop everything."""
    n_seq = 3000 if quick else 10000
    n_inflight = 5000 if quick else 20000
    n_events = 50_000 if quick else 200_000
    ctx = mp.get_context("spawn")
    curve = RawCurve.generate()
    results: dict[str, Any] = {"load_average_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="linebus-bench-security-") as tmp:
        folder = Path(tmp)
        keys = _keys(folder)
        raw = {
            side: {
                role: f"tcp://127.0.0.1:{free_port()}" for role in ("front", "back", "xsub", "xpub")
            }
            for side in ("raw", "raw_curve")
        }
        lines: dict[str, dict[str, str]] = {}
        line_keys: dict[str, ClientKeys | None] = {}
        brokers: list[subprocess.Popen[bytes]] = []
        procs = []
        for side, side_curve in (("raw", None), ("raw_curve", curve)):
            ep = raw[side]
            for target, args in (
                (_raw_proxy, (ep["front"], ep["back"], side_curve)),
                (_raw_worker, (ep["back"], side_curve)),
                (_raw_event_proxy, (ep["xsub"], ep["xpub"], side_curve)),
            ):
                procs.append(ctx.Process(target=target, args=args, daemon=True))
        try:
            for line, (acl, _) in LINES.items():
                ep = lines[line] = _endpoints()
                line_keys[line] = keys["client"] if acl is not None else None
                config = _config(folder, line, acl) if acl is not None else None
                brokers.append(_broker_process(ep, config))
                actor_keys = keys["bench"] if acl is not None else None
                procs.append(
                    ctx.Process(
                        target=_actor,
                        args=(ep["command"], ep["publish"], 1, "bench", actor_keys),
                        daemon=True,
                    )
                )
            for p in procs:
                p.start()
            for line, ep in lines.items():
                wait_for_actors(ep["command"], keys=line_keys[line])
            results["event_paths"] = {
                line: _event_path(ep["command"], line_keys[line]) for line, ep in lines.items()
            }

            def calls(side: str, n: int, inflight: int) -> dict[str, float]:
                if side in raw:
                    side_curve = curve if side == "raw_curve" else None
                    return _raw_round_trips(raw[side]["front"], n, inflight, SMALL, side_curve)
                line = COMMAND_LINE if side == "on" else side
                ep = lines[line]
                return _bus_round_trips(ep["command"], n, inflight, SMALL, keys=line_keys[line])

            def events(side: str, subs: int, n: int) -> dict[str, float]:
                if side in raw:
                    side_curve = curve if side == "raw_curve" else None
                    return _events("raw", raw[side], n, subs, curve=side_curve)
                return _events("bus", lines[side], n, subs, keys=line_keys[side])

            for key, n, inflight in (("a_sequential", n_seq, 1), ("b_inflight8", n_inflight, 8)):
                results[key] = _alternate(
                    {side: functools.partial(calls, side, n, inflight) for side in COMMAND_SIDES}
                )
            for key, subs, n in (
                ("c_events_1sub", 1, n_events),
                ("c_events_10sub", 10, n_events // 4),
            ):
                results[key] = _alternate(
                    {side: functools.partial(events, side, subs, n) for side in EVENT_SIDES}
                )
            results["event_paths_after"] = {
                line: _event_path(ep["command"], line_keys[line]) for line, ep in lines.items()
            }
        finally:
            _stop(procs, brokers)
    for key in ("a_sequential", "b_inflight8", "c_events_1sub", "c_events_10sub"):
        figures = results[key]
        to_off, to_raw = _ratios(figures, "off"), _ratios(figures, "raw")
        figures["ratio_to_off"], figures["ratio_to_raw"] = to_off, to_raw
    results["load_average_end"] = list(os.getloadavg())
    return results


def _rate(figures: dict[str, Any]) -> str:
    text = f"{figures['per_s']:,.0f} /s"
    if "p50_ms" in figures:
        text += f" (p50 {figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms)"
    if "replied" in figures:
        text += f", replied {figures['replied']:.1%}"
    if "delivered" in figures:
        text += f", delivered {figures['delivered']:.1%}"
    return text


def _path(results: dict[str, Any], side: str) -> str:
    """What forwarded a side's events: the raw proxies are C, a line's broker says in stats."""
    if side.startswith("raw"):
        return "C proxy"
    path = results.get("event_paths", {}).get(side, {})
    return "C proxy" if path.get("path") == "C proxy" else "Python loop" if path else "?"


def report(results: dict[str, Any]) -> str:
    """Format the figures as the tables docs/BENCHMARKS.md records."""
    lines = [
        "| pattern | side | event path | rate | vs CURVE off | vs raw pyzmq |",
        "|---|---|---|---|---|---|",
    ]
    for key, sides in (
        ("a_sequential", COMMAND_SIDES),
        ("b_inflight8", COMMAND_SIDES),
        ("c_events_1sub", EVENT_SIDES),
        ("c_events_10sub", EVENT_SIDES),
    ):
        if key not in results:
            continue
        figures = results[key]
        for side in sides:
            path = _path(results, side) if key.startswith("c_") else ""
            to_off = "" if side.startswith("raw") else f"{figures['ratio_to_off'][side]:.2f}"
            lines.append(
                f"| {key} | {SIDE_NAMES[side]} | {path} | {_rate(figures[side])} | {to_off} "
                f"| {figures['ratio_to_raw'][side]:.2f} |"
            )
    for key in ("a_sequential", "b_inflight8", "c_events_1sub", "c_events_10sub"):
        if key in results:
            figures = results[key]
            curve_on = "on" if "on" in figures else "curve"
            lines.append(
                f"\n{key}: CURVE on keeps {figures['ratio_to_off'][curve_on]:.2f} of CURVE off "
                f"(target >= {TARGET:.2f}); raw pyzmq with CURVE keeps "
                f"{figures['ratio_to_raw']['raw_curve']:.2f} of raw pyzmq"
            )
    for line, stats in results.get("event_paths_after", {}).items():
        if stats.get("path") != "C proxy":
            lines.append(
                f"\n{line}: the broker's loop forwarded {stats.get('forwarded', 0):,} events, "
                f"refused {stats.get('forbidden_publish', 0)} events and "
                f"{stats.get('forbidden_subscribe', 0)} subscriptions"
            )
    start, end = results.get("load_average_start"), results.get("load_average_end")
    if start and end:
        lines.append(
            f"\nload average (1, 5, 15 min): start {' '.join(f'{v:.2f}' for v in start)}, "
            f"end {' '.join(f'{v:.2f}' for v in end)}"
        )
    return "\n".join(lines)
