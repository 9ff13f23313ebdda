"""The line as the dashboard shows it, kept current from the bus.

``LineView`` follows one line through an ``AsyncClient``: every actor (kind, state, since,
restarts) from ``services()`` and the broker's presence events; the devices the discovery actors
see (their ``list`` and ``<service>.device.<uuid>`` events); jobs with progress and outcome
(``<service>.job`` events of the actor runtime, and FlashRunner's ``project.channel`` and
``project.done``); telemetry readings (the numeric fields of JSON payloads on
``<service>.commit.<group>.<stream>`` events, backfilled from the telemetry actor's ``history``); the
last events (those of the state topics, and a sample of the others: see ``LineView.run``); and
the broker's routed and dropped counters (``stats``).

``snapshot()`` is the whole state as plain JSON values; ``watch()`` gives a ``Watcher`` whose
``next_batch`` returns the changes since the last batch, in order, each a small dict
(``{"type": "actor", "actor": {...}}``). A watcher that falls too far behind gets ``None``
instead: take a fresh snapshot. Nothing here knows HTTP; ``bus.web.dashboard`` serves it.

    async with AsyncClient(endpoint) as bus:
        view = LineView(bus)
        task = asyncio.create_task(view.run())
        await view.ready.wait()
        print(view.snapshot()["actors"])
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from bus.aio import AsyncClient, AsyncSubscription
from bus.errors import BusError

__all__ = ["LineView", "ViewLimits", "Watcher", "numeric_fields", "plain"]

log = structlog.get_logger()

Change = dict[str, Any]

#: Job states that end a job (the page shows its outcome and keeps it a while).
ENDED = frozenset({"done", "failed", "cancelled"})
#: FLUX status labels (fluxclient's) while a print runs, and those that end one.
PRINT_RUNNING = frozenset(
    {"STARTING", "RUNNING", "RESUMING", "PAUSING", "PAUSED", "COMPLETING", "ABORTING"}
)
PRINT_ENDS = {"COMPLETED": "done", "ABORTED": "cancelled"}
#: The topics after ``<service>.`` that carry the state the page shows: each one is followed
#: event by event; every other topic only feeds the event log, by sampling.
STATE_TOPICS = ("job", "device.", "project.", "status", "commit.")


@dataclass(frozen=True)
class ViewLimits:
    """How much of the line's history a ``LineView`` keeps, and how often it polls."""

    #: Events kept for the event log.
    events: int = 300
    #: Readings kept per telemetry stream.
    points: int = 2000
    #: Seconds of telemetry history fetched on start and for a new stream.
    window_s: float = 600.0
    #: Ended jobs kept (the newest).
    ended_jobs: int = 20
    #: Changes a watcher may hold before it must start again from a snapshot.
    watcher_queue: int = 5000
    #: Seconds between two ``services()`` reads (presence events bring state changes at once).
    services_s: float = 2.0
    #: Seconds between two ``stats()`` reads.
    stats_s: float = 1.0
    #: Events the state subscription holds unread before the broker drops for it (gaps).
    subscription_queue: int = 20_000
    #: Events listed in the log per second at most; beyond it they are counted, not listed
    #: (a bus busy with 100 000 events a second must not make the web process a hot spot).
    listed_per_s: int = 50


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as a small JSON value for the page: bytes become ``{"bytes": n}``, long
    strings and containers are cut, anything else unknown becomes its ``repr``."""
    if value is None or isinstance(value, bool | int | str):
        return value if not isinstance(value, str) or len(value) <= 500 else value[:500] + "…"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": len(value)}
    if depth >= 4:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k): plain(v, depth + 1) for k, v in items[:50]}
        if len(items) > 50:
            out["…"] = f"{len(items) - 50} more"
        return out
    if isinstance(value, list | tuple):
        cut = [plain(v, depth + 1) for v in value[:50]]
        return [*cut, f"… {len(value) - 50} more"] if len(value) > 50 else cut
    return repr(value)[:200]


def numeric_fields(payload: Any) -> dict[str, float]:
    """The numeric fields of a JSON reading (bytes or str holding a JSON object), one level of
    nesting flattened as ``outer.inner``; empty if the payload is not a JSON object."""
    if isinstance(payload, bytes | bytearray):
        try:
            payload = bytes(payload).decode()
        except UnicodeDecodeError:
            return {}
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return {}
    if not isinstance(payload, dict):
        return {}
    out: dict[str, float] = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                if _number(v):
                    out[f"{key}.{inner}"] = float(v)
        elif _number(value):
            out[str(key)] = float(value)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Watcher:
    """One consumer's queue of changes (``LineView.watch``)."""

    def __init__(self, view: LineView, limit: int) -> None:
        self._view = view
        self._limit = limit
        self._changes: list[Change] = []
        self._wake = asyncio.Event()
        #: Set when the queue overflowed: the consumer must start again from a snapshot.
        self.lost = False

    def put(self, change: Change) -> None:
        if self.lost:
            return
        if len(self._changes) >= self._limit:
            self.lost = True
            self._changes.clear()
        else:
            self._changes.append(change)
        self._wake.set()

    async def next_batch(self, timeout: float) -> list[Change] | None:
        """The changes queued since the last call (waiting up to ``timeout`` seconds for the
        first; an empty list if none came); None if some were lost: take a snapshot again."""
        if not self._changes and not self.lost:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        if self.lost:
            self.lost = False
            return None
        batch, self._changes = self._changes, []
        return batch

    def close(self) -> None:
        """Stop receiving changes."""
        self._view._watchers.discard(self)


class LineView:
    """The state of one line, kept current from the bus (see the module docstring).

    Args:
        bus: An open client of the line (the view calls and subscribes through it).
        limits: What is kept and how often the broker is asked.
    """

    def __init__(self, bus: AsyncClient, limits: ViewLimits | None = None) -> None:
        self.bus = bus
        self.limits = limits or ViewLimits()
        self.actors: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, dict[str, Any]] = {}
        self.events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.limits.events
        )
        self.counters: dict[str, Any] = {"routed": {}, "dropped": {}, "unlisted": 0}
        #: Events left out of the log by ``limits.listed_per_s``.
        self.unlisted = 0
        self._listing_second = 0
        self._listed = 0
        #: Set once the first services and stats have been read.
        self.ready = asyncio.Event()
        self._watchers: set[Watcher] = set()
        self._backfilled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: The running state subscription (its prefixes: presence and each service's topics).
        self._state_sub: AsyncSubscription | None = None

    # ------------------------------------------------------------------ consumers

    def snapshot(self) -> dict[str, Any]:
        """The whole state, as JSON values."""
        return {
            "now": time.time(),
            "actors": sorted(self.actors.values(), key=lambda a: a["name"]),
            "devices": sorted(self.devices.values(), key=lambda d: (d["service"], d["uuid"])),
            "jobs": list(self.jobs.values()),
            "streams": [{**s, "points": list(s["points"])} for s in self.streams.values()],
            "events": list(self.events),
            "counters": self.counters,
        }

    def watch(self) -> Watcher:
        """A queue of the changes from now on (close it when done)."""
        watcher = Watcher(self, self.limits.watcher_queue)
        self._watchers.add(watcher)
        return watcher

    def _emit(self, change: Change) -> None:
        for watcher in self._watchers:
            watcher.put(change)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Follow the line until cancelled (broker restarts included: the client reconnects;
        a refused subscription is tried again every second).

        Two subscriptions: the state topics (presence, and ``STATE_TOPICS`` of every service
        known), each event applied; and every topic ``latest_only``, read at most
        ``limits.listed_per_s`` times a second for the event log. So an event flood on other
        topics costs this process a ZeroMQ receive per event, not a decode in Python (issue
        16's cost target; docs/BENCHMARKS.md, "The dashboard's cost").
        """
        try:
            while True:
                try:
                    if not self.ready.is_set():
                        await self._refresh_services()
                        await self._refresh_stats()
                    await self._follow()
                except BusError as exc:
                    log.warning("lineview_subscription_failed", error=str(exc))
                    await asyncio.sleep(1.0)
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _state_prefixes(self, services: Iterable[str]) -> list[str]:
        return [f"{name}.{topic}" for name in services for topic in STATE_TOPICS]

    async def _follow(self) -> None:
        """Apply the state topics' events and sample the rest until a subscription fails."""
        state = self.bus.subscribe(
            "presence.",
            *self._state_prefixes(self.actors),
            max_queue=self.limits.subscription_queue,
        )
        sampled = self.bus.subscribe(latest_only=True)
        self._state_sub = state
        try:
            # Ready once the broker forwards to both subscriptions.
            await state.wait_ready(timeout=10.0)
            await sampled.wait_ready(timeout=10.0)
        except BusError:
            self._state_sub = None
            state.close()
            sampled.close()
            raise
        if not self.ready.is_set():
            self.ready.set()
            self._spawn(self._poll(self._refresh_services, self.limits.services_s))
            self._spawn(self._poll(self._refresh_stats, self.limits.stats_s))
        readers = [
            asyncio.ensure_future(self._apply_all(state)),
            asyncio.ensure_future(self._sample(sampled, state)),
        ]
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for reader in done:
                reader.result()  # its BusError, if a subscription was refused
        finally:
            self._state_sub = None
            for reader in readers:
                reader.cancel()
            for reader in readers:
                with contextlib.suppress(asyncio.CancelledError, BusError):
                    await reader
            state.close()
            sampled.close()

    async def _apply_all(self, state: AsyncSubscription) -> None:
        async for event in state:
            self.apply_event(event.topic, event.src, event.seq, event.ts, event.data)

    async def _sample(self, sampled: AsyncSubscription, state: AsyncSubscription) -> None:
        """The event log's share of the topics ``state`` does not follow: the newest event, at
        most ``listed_per_s`` times a second; what went by unread is counted as unlisted."""
        pause = 1.0 / max(1, self.limits.listed_per_s)
        while True:
            event = await sampled.next()
            if (
                event is not None
                # The state subscription lists these itself.
                and not event.topic.startswith(state.prefixes)
                and self._routes_to_log(event.topic, event.src, event.data)
            ):
                self.unlisted += event.missed
                self._list(event.topic, event.src, event.seq, event.ts, event.data)
            await asyncio.sleep(pause)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, refresh: Any, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await refresh()

    async def _refresh_services(self) -> None:
        try:
            rows = await self.bus.services(timeout=2.0)
        except BusError as exc:
            log.info("lineview_services_failed", error=str(exc))
            return
        for row in rows:
            self._update_actor(row)
        if self._state_sub is not None:  # services that registered since: follow them too
            self._state_sub.add_prefixes(*self._state_prefixes(str(r.get("name")) for r in rows))
        for row in rows:
            if row.get("state") != "up":
                continue
            name = str(row.get("name"))
            if row.get("kind") == "discovery" and f"devices:{name}" not in self._backfilled:
                self._backfilled.add(f"devices:{name}")
                self._spawn(self._load_devices(name))
            if row.get("kind") == "telemetry":
                self._backfill_stream(name, "default", "default")

    async def _refresh_stats(self) -> None:
        try:
            stats = await self.bus.stats(timeout=2.0)
        except BusError as exc:
            log.info("lineview_stats_failed", error=str(exc))
            return
        counters = {
            "routed": plain(stats.get("routed", {})),
            "dropped": plain(stats.get("dropped", {})),
            "inflight": stats.get("inflight"),
            "services_up": stats.get("services_up"),
            "unlisted": self.unlisted,
            "listed_per_s": self.limits.listed_per_s,
        }
        if counters != self.counters:
            self.counters = counters
            self._emit({"type": "counters", "counters": counters})

    # ------------------------------------------------------------------ actors

    def _update_actor(self, row: dict[str, Any]) -> None:
        """Merge a ``services()`` row or a presence event into the actor's entry."""
        name = str(row.get("name") or row.get("service") or "")
        if not name:
            return
        old = self.actors.get(name, {})
        actor = {
            "name": name,
            "kind": row.get("kind", old.get("kind", "")),
            "state": row.get("state", old.get("state", "")),
            "since": row.get("since", old.get("since")),
            "reason": row.get("reason", old.get("reason", "")),
            "pid": row.get("pid", old.get("pid")),
            "restarts": _restarts(row, old),
        }
        if actor != old:
            self.actors[name] = actor
            self._emit({"type": "actor", "actor": actor})

    # ------------------------------------------------------------------ events

    def apply_event(self, topic: str, src: str, seq: int, ts: float, data: Any) -> None:
        """Take one event into the view (public for tests that feed events by hand)."""
        if topic.startswith("_probe."):
            return
        if topic.startswith("presence."):
            self._update_actor({"name": topic.removeprefix("presence."), **(data or {})})
            if isinstance(data, dict) and data.get("state") == "up":
                self._spawn(self._refresh_services())  # its pid and restart count
        elif isinstance(data, dict):
            rest = _event_name(topic, src)
            if rest.startswith("device.") and "uuid" in data:
                self._update_device(src, data)
            elif rest == "job":
                self._update_job(src, data)
            elif rest in ("project.channel", "project.done"):
                self._update_project(src, rest, data)
            elif rest == "status" and "label" in data and "prog" in data:
                self._update_print(src, data)
            elif rest.startswith("commit."):
                self._add_readings(src, data)
        if self._routes_to_log(topic, src, data):
            self._list(topic, src, seq, ts, data)

    @staticmethod
    def _routes_to_log(topic: str, src: str, data: Any) -> bool:
        """Whether an event belongs in the event log (not probes, readings, printer status)."""
        if topic.startswith("_probe."):
            return False
        if not isinstance(data, dict):
            return True
        rest = _event_name(topic, src)
        if rest.startswith("device.") and "uuid" in data and data.get("event") == "status":
            return False  # a printer's periodic status: the devices table shows it
        # Readings are plotted, not logged (they would flood the log); ``stream.`` events are
        # the same readings one by one (the commit events carry them).
        return not rest.startswith(("commit.", "stream."))

    def _list(self, topic: str, src: str, seq: int, ts: float, data: Any) -> None:
        """Add an event to the log, or count it when ``listed_per_s`` is used up."""
        second = int(time.monotonic())
        if second != self._listing_second:
            self._listing_second, self._listed = second, 0
        if self._listed >= self.limits.listed_per_s:
            self.unlisted += 1
            return
        self._listed += 1
        event = {"topic": topic, "src": src, "seq": seq, "ts": ts, "data": plain(data)}
        self.events.append(event)
        self._emit({"type": "event", "event": event})

    def _update_device(self, service: str, data: dict[str, Any]) -> None:
        uuid = str(data["uuid"])
        key = f"{service}/{uuid}"
        kind = data.get("event", "status")
        device = {
            **self.devices.get(key, {}),
            **{k: plain(v) for k, v in data.items() if k != "event"},
            "service": service,
            "uuid": uuid,
            "status": "gone" if kind == "gone" else "seen",
            "last_event": kind,
        }
        self.devices[key] = device
        self._emit({"type": "device", "device": device})

    async def _load_devices(self, service: str) -> None:
        # A device event that arrives while the list is on its way is newer than the list: its
        # entry (a new dict on every update) is then not the one seen before the call.
        before = dict(self.devices)
        try:
            rows = await self.bus.call(service, "list", timeout=5.0)
        except BusError as exc:
            log.info("lineview_devices_failed", service=service, error=str(exc))
            self._backfilled.discard(f"devices:{service}")  # try again at the next refresh
            return
        for row in rows if isinstance(rows, list) else []:
            if not (isinstance(row, dict) and "uuid" in row):
                continue
            key = f"{service}/{row['uuid']}"
            if self.devices.get(key) is not before.get(key):
                continue
            self._update_device(service, {"event": "status", **row})

    # ------------------------------------------------------------------ jobs

    def _update_job(self, service: str, data: dict[str, Any]) -> None:
        """A ``<service>.job`` event (docs/PROTOCOL.md §9, "Job events"): ``started``,
        ``progress`` (the caller's update) or ``ended`` (``outcome`` ok, error or cancelled)."""
        job_id = str(data.get("job") or "")
        if not job_id:
            return
        key = f"{service}/{job_id}"
        job = dict(self.jobs.get(key) or {"id": key, "service": service, "channels": {}})
        job["command"] = str(data.get("command", job.get("command", "")))
        progress = data.get("progress")
        if isinstance(progress, dict):
            self._take_progress(job, progress)
        if data.get("state") == "ended":
            outcome = data.get("outcome")
            job["state"] = {"ok": "done", "cancelled": "cancelled"}.get(str(outcome), "failed")
            if outcome != "ok":
                job["error"] = f"{data.get('code', outcome)}: {data.get('message', '')}"
            if _number(data.get("duration_s")):
                job["duration_s"] = data["duration_s"]
        elif job.get("state") not in ENDED:
            job["state"] = "running"
        job["updated"] = time.time()
        self._put_job(key, job)

    @staticmethod
    def _take_progress(job: dict[str, Any], progress: dict[str, Any]) -> None:
        for field in ("done", "total"):
            if _number(progress.get(field)):
                job[field] = progress[field]
        if "channel" in progress and "passed" in progress:
            channel = str(progress["channel"])
            job["channels"] = {**job["channels"], channel: bool(progress["passed"])}

    def _update_project(self, service: str, rest: str, data: dict[str, Any]) -> None:
        """FlashRunner's per-channel results: merged into the service's running
        ``FR_RunProject`` job if there is one, else shown as a job of their own."""
        project = str(data.get("project", ""))
        key = next(
            (
                k
                for k, j in self.jobs.items()
                if j["service"] == service
                and j.get("command") == "FR_RunProject"
                and j["state"] not in ENDED
            ),
            f"{service}/project/{project}",
        )
        job = dict(
            self.jobs.get(key)
            or {"id": key, "service": service, "command": "FR_RunProject", "channels": {}}
        )
        job["project"] = project
        if rest == "project.channel":
            job["channels"] = {
                **job["channels"],
                str(data.get("channel")): bool(data.get("passed")),
            }
            job.setdefault("state", "running")
        else:
            results = data.get("results")
            if isinstance(results, dict):
                job["channels"] = {str(c): bool(p) for c, p in results.items()}
            job["errors"] = plain(data.get("errors") or {})
            passed = all(job["channels"].values())
            job["state"] = "done" if passed else "failed"
            job["outcome"] = (
                "all channels passed"
                if passed
                else "failed: channel "
                + ", ".join(c for c, p in sorted(job["channels"].items()) if not p)
            )
        if "total" not in job or key.startswith(f"{service}/project/"):
            job["total"] = max(len(job["channels"]), int(job.get("total", 0) or 0))
            job["done"] = len(job["channels"])
        job["updated"] = time.time()
        self._put_job(key, job)

    def _update_print(self, service: str, data: dict[str, Any]) -> None:
        """A FLUX printer's ``<service>.status`` (the actor polls it while a task runs): the
        print as a job, ``prog`` (0-1) as percent, ended by COMPLETED or ABORTED."""
        label = str(data["label"])
        key = f"{service}/print"
        old = self.jobs.get(key)
        if label in PRINT_ENDS:
            if old is None or old["state"] in ENDED:
                return  # a status at rest, no print followed
            state = PRINT_ENDS[label]
        elif label in PRINT_RUNNING:
            state = "running"
        else:
            return  # idle, occupied by maintenance or a scan: no print
        if old is None or (old["state"] in ENDED and state == "running"):
            job: dict[str, Any] = {
                "id": key,
                "service": service,
                "command": "print",
                "channels": {},
            }
        else:
            job = dict(old)
        job.update(state=state, detail=label, total=100, updated=time.time())
        if _number(data["prog"]):
            job["done"] = round(100 * min(1.0, max(0.0, float(data["prog"]))))
        if state == "done":
            job["done"] = 100
        errors = data.get("error")
        if isinstance(errors, list) and errors:
            job["error"] = ", ".join(str(e) for e in errors)
        self._put_job(key, job)

    def _put_job(self, key: str, job: dict[str, Any]) -> None:
        failed = sorted((c for c, passed in job["channels"].items() if not passed), key=_natural)
        if job["state"] == "done" and failed:  # it answered, but some channels failed
            job["state"] = "failed"
        if job["state"] in ENDED:
            if failed:
                job["outcome"] = "failed: channel " + ", ".join(failed)
            elif job["state"] == "done":
                job["outcome"] = "done" + (" (all channels passed)" if job["channels"] else "")
            else:
                job["outcome"] = job.get("error") or job["state"]  # the error names its code
        self.jobs[key] = job
        self._emit({"type": "job", "job": job})
        ended = [k for k, j in self.jobs.items() if j["state"] in ENDED]
        for old in ended[: max(0, len(ended) - self.limits.ended_jobs)]:
            del self.jobs[old]
            self._emit({"type": "job_removed", "id": old})

    # ------------------------------------------------------------------ telemetry

    def _add_readings(self, service: str, data: dict[str, Any]) -> None:
        """A ``<service>.commit.<group>.<stream>`` event: the messages one write stored, as
        columns; the numeric fields of each JSON payload become a point (the newest
        ``limits.points`` of a large write)."""
        payloads, stamps = data.get("payload"), data.get("timestamp")
        if not isinstance(payloads, list) or not isinstance(stamps, list):
            return
        key = self._stream(service, data)
        kept = self.streams[key]["points"]
        points = []
        for ts, payload in list(zip(stamps, payloads, strict=False))[-self.limits.points :]:
            values = numeric_fields(payload)
            if values:
                points.append([ts if _number(ts) else time.time(), values])
        if points:
            kept.extend(points)
            self._emit({"type": "readings", "stream": key, "points": points})
        self._backfill_stream(service, str(data.get("stream_group")), str(data.get("stream")))

    def _stream(self, service: str, data: dict[str, Any]) -> str:
        key = f"{service}/{data.get('stream_group')}/{data.get('stream')}"
        if key not in self.streams:
            self.streams[key] = {
                "key": key,
                "service": service,
                "stream_group": data.get("stream_group"),
                "stream": data.get("stream"),
                "points": collections.deque(maxlen=self.limits.points),
            }
        return key

    def _backfill_stream(self, service: str, group: str, stream: str) -> None:
        """Fetch the recent window of a stream once (its first sight, or the view's start)."""
        key = f"{service}/{group}/{stream}"
        if key not in self._backfilled:
            self._backfilled.add(key)
            self._spawn(self._load_history(service, group, stream))

    async def _load_history(self, service: str, group: str, stream: str) -> None:
        key = f"{service}/{group}/{stream}"
        since = time.time() - self.limits.window_s
        try:
            rows = await self.bus.call(
                service,
                "history",
                stream_group=group,
                stream=stream,
                since=since,
                limit=min(self.limits.points, 10000),
                timeout=5.0,
            )
        except BusError as exc:
            log.info("lineview_history_failed", stream=key, error=str(exc))
            self._backfilled.discard(key)
            return
        points = [
            [row["timestamp"], values]
            for row in rows
            if isinstance(row, dict) and _number(row.get("timestamp"))
            if (values := numeric_fields(row.get("payload")))
        ]
        if not points:
            return
        self._stream(service, {"stream_group": group, "stream": stream})
        kept = self.streams[key]["points"]
        oldest_live = kept[0][0] if kept else math.inf
        merged = [p for p in points if p[0] < oldest_live] + list(kept)
        kept.clear()
        kept.extend(merged)
        self._emit({"type": "stream", "stream": {**self.streams[key], "points": list(kept)}})

    def jobs_of(self, service: str) -> Iterator[dict[str, Any]]:
        """The jobs of one service (for tests and the terminal)."""
        return (j for j in self.jobs.values() if j["service"] == service)


def _event_name(topic: str, src: str) -> str:
    """The part of ``topic`` after its publisher's ``<service>.`` ("" for another's topic)."""
    return topic[len(src) + 1 :] if topic.startswith(src + ".") else ""


def _restarts(row: dict[str, Any], old: dict[str, Any]) -> int:
    """The broker's restart count (``services()`` rows; presence events carry none)."""
    restarts = row.get("restarts", old.get("restarts", 0))
    return int(restarts) if _number(restarts) else 0


def _natural(channel: str) -> tuple[int, str]:
    """Channels in numeric order ("2" before "10")."""
    return (int(channel), "") if channel.isdigit() else (1 << 30, channel)
