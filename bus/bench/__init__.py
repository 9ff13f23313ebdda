"""Measure linebus against raw pyzmq and NATS doing the same work, in the same run
(``linebus bench``).

Every figure is printed beside its raw-ZeroMQ limit, NATS, and the ratios, because on a shared
machine only ratios measured together mean anything:

  a. sequential round trips: Client -> broker -> EchoActor, vs DEALER -> C zmq.proxy(ROUTER,
     DEALER) -> DEALER worker, vs nats-py ``request`` -> nats-server -> a nats-py responder;
     and the same with ``AsyncClient``; round trips/s, p50 and p99 latency.
  b. the same with 8 requests in flight (a window of ``start`` for the sync client; 8 tasks
     each calling in turn for the asyncio client and NATS).
  c. events: actor PUB -> broker XSUB/XPUB -> N Client subscriptions (decode + gap tracking), vs
     PUB -> C zmq.proxy(XSUB, XPUB) -> SUB with msgpack encode/decode at the ends, vs nats-py
     publish -> nats-server -> nats-py subscribers; 1 and 10 subscribers, and 4 KiB events.
  d. bulk: a 16 MiB bytes argument through the broker, vs a 16 MiB frame through the C proxy.
  e. broker resident memory with 200 connected actors.

Each party runs in its own process. Each pattern runs its sides alternately three times and
reports the median of each; the targets are issue 17's. The NATS rows need ``nats-server``
(Debian) and nats-py (the ``bench`` extra); without them they are left out, and said so.
Options: ``--quick`` (smaller counts), ``--json``, ``--security`` (instead of the above: CURVE
off vs on and the event paths of secured lines, ``bus.bench.security``), ``--head-of-line``
(instead: commands while bulk and events flow, ``bus.bench.headofline``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import zmq

from bus import ipc
from bus.bench import nats_rows
from bus.bench._figures import event_figures

if TYPE_CHECKING:
    from bus.client import ClientKeys

SMALL = {"channel": 3, "value": 21.5, "unit": "C", "ok": True}
BULK_SIZE = 16 * 1024 * 1024
SMALL_BODY = msgpack.packb(SMALL)
#: The 4 KiB events' record: the small one with a 4 KiB binary field.
EVENT_4KIB = {**SMALL, "blob": b"\x5a" * 4096}
#: Events per ``emit`` call of the event patterns (about 0.1 s of the actor's loop each).
EMIT_CHUNK = 10_000


#: What each ``--transport`` puts where, as the report says it.
TRANSPORT_NOTES = {
    "tcp": "transport: TCP on 127.0.0.1 for every side",
    "ipc": "transport: Unix sockets for the C proxy and for linebus (its broker's ipc_dir);"
    " NATS on TCP on 127.0.0.1 (nats-server has no Unix sockets)",
}


class RawCurve(NamedTuple):
    """CURVE keys for the raw pyzmq patterns (``--security``): the proxy's pair, and one pair
    every other peer uses. No ZAP handler: libzmq then lets any client key in, so what this
    measures is the encryption alone."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def generate(cls) -> RawCurve:
        """Two new key pairs."""
        return cls(*zmq.curve_keypair(), *zmq.curve_keypair())

    def server(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (before bind) a CURVE server."""
        sock.curve_server = True
        sock.curve_publickey = self.server_public
        sock.curve_secretkey = self.server_secret

    def client(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (before connect) a CURVE client of the proxy."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.client_public
        sock.curve_secretkey = self.client_secret


# --- child processes ---------------------------------------------------------------------------


def _raw_proxy(front: str, back: str, curve: RawCurve | None = None) -> None:
    ctx = zmq.Context()
    f = ctx.socket(zmq.ROUTER)
    b = ctx.socket(zmq.DEALER)
    if curve is not None:
        curve.server(f)
        curve.server(b)
    f.bind(front)
    b.bind(back)
    zmq.proxy(f, b)


def _raw_worker(back: str, curve: RawCurve | None = None) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    if curve is not None:
        curve.client(s)
    s.connect(back)
    while True:
        frames = s.recv_multipart()
        # Decode and re-encode like a real worker would, so the comparison is fair.
        if len(frames[-1]) > 65536:
            frames[-1] = msgpack.packb(
                len(frames[-1])
            )  # bulk: answer its length, like EchoActor.length
        else:
            frames[-1] = msgpack.packb(msgpack.unpackb(frames[-1]))
        s.send_multipart(frames)


def _raw_event_proxy(xsub: str, xpub: str, curve: RawCurve | None = None) -> None:
    ctx = zmq.Context()
    a = ctx.socket(zmq.XSUB)
    a.rcvhwm = 100_000
    b = ctx.socket(zmq.XPUB)
    b.sndhwm = 100_000
    if curve is not None:
        curve.server(a)
        curve.server(b)
    a.bind(xsub)
    b.bind(xpub)
    zmq.proxy(a, b)


def _actor(
    command: str,
    publish: str,
    count: int = 1,
    name: str = "bench",
    keys: ClientKeys | None = None,
    nice: int | None = None,
) -> None:
    from bus.actor import ActorSettings
    from bus.logs import configure_logging
    from bus.priority import apply_nice
    from bus.testing import EchoActor

    apply_nice(nice, f"actor {name!r}")  # first: every thread started later takes it
    configure_logging(level="warning")
    settings = ActorSettings(command, publish, keys=keys)

    async def main() -> None:
        actors = [EchoActor(name if count == 1 else f"{name}{i}") for i in range(count)]
        await asyncio.gather(*(a.serve(settings) for a in actors))

    asyncio.run(main())


def _raw_publisher(
    xsub: str,
    n: int,
    go: Any,
    subs: int,
    ready: Any,
    curve: RawCurve | None = None,
    data: dict[str, Any] = SMALL,
) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 100_000
    if curve is not None:
        curve.client(pub)
    pub.connect(xsub)
    # Warm up until every subscriber has seen an event, then send the measured burst.
    while ready.value < subs:
        pub.send(msgpack.packb({"warmup": True}))
        time.sleep(0.01)
    go.set()
    for i in range(n):
        pub.send(msgpack.packb({**data, "i": i}))
    for _ in range(50):
        pub.send(msgpack.packb({"end": True}))
        time.sleep(0.01)


def _raw_subscriber(xpub: str, n: int, ready: Any, out: Any, curve: RawCurve | None = None) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 100_000
    sub.subscribe(b"")
    if curve is not None:
        curve.client(sub)
    sub.connect(xpub)
    while True:
        if "warmup" in msgpack.unpackb(sub.recv()):
            break
    with ready.get_lock():
        ready.value += 1
    got = size = 0
    start = None
    while True:
        frame = sub.recv()
        body = msgpack.unpackb(frame)
        if "i" in body:
            if start is None:
                start, size = time.perf_counter(), len(frame)
            got += 1
            last = time.perf_counter()
        elif "end" in body and start is not None:
            break
    out.put((got, start, last, size))


def _bus_subscriber(
    command: str,
    subscribe: str,
    n: int,
    ready: Any,
    out: Any,
    keys: ClientKeys | None = None,
) -> None:
    from bus.client import Client

    with (
        Client(command, subscribe_endpoint=subscribe, keys=keys or False) as client,
        client.subscribe("bench.", timeout=30) as sub,
    ):
        sub.wait_ready(timeout=20)
        with ready.get_lock():
            ready.value += 1
        got = size = 0
        start = None
        last = 0.0
        for event in sub:
            if event.topic == "bench.reading":
                if start is None:
                    start, size = time.perf_counter(), len(msgpack.packb(event.data))
                got += 1
                last = time.perf_counter()
            elif event.topic == "bench.end" and start is not None:
                break
        out.put((got, start or last, last, size))


def wait_for_actors(
    endpoint: str,
    names: Iterable[str] = ("bench",),
    *,
    keys: ClientKeys | None = None,
    timeout: float = 30.0,
) -> None:
    """Return once every service of ``names`` is up at the broker on ``endpoint`` (a broker
    still starting is asked again); raise ``bus.testing.WaitTimeout`` after ``timeout``."""
    from bus.client import Client
    from bus.errors import BusError
    from bus.testing import wait_until

    wanted = set(names)
    with Client(endpoint, timeout=2, keys=keys or False) as client:
        wait_until(
            lambda: wanted <= {s["name"] for s in client.services() if s["state"] == "up"},
            timeout,
            f"the bench actors {sorted(wanted)} up",
            ignore=(BusError,),
        )


# --- measurements --------------------------------------------------------------------------------


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _raw_round_trips(
    front: str, n: int, inflight: int, payload: Any, curve: RawCurve | None = None
) -> dict[str, float]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    if curve is not None:
        curve.client(s)
    s.connect(front)
    body = msgpack.packb(payload) if not isinstance(payload, bytes) else payload
    for _ in range(50):  # warm-up
        s.send_multipart([SMALL_BODY])
        msgpack.unpackb(s.recv_multipart()[-1])
    latencies: list[float] = []
    start = time.perf_counter()
    if inflight == 1:
        for _ in range(n):
            t = time.perf_counter()
            s.send_multipart([body], copy=len(body) < 65536)
            msgpack.unpackb(s.recv_multipart()[-1])
            latencies.append(time.perf_counter() - t)
    else:
        for _ in range(inflight):
            s.send_multipart([body])
        for i in range(n):
            msgpack.unpackb(s.recv_multipart()[-1])
            if i + inflight < n:
                s.send_multipart([body])
    elapsed = time.perf_counter() - start
    s.close(linger=0)
    return _summary(n, elapsed, latencies)


def _bus_round_trips(
    command: str,
    n: int,
    inflight: int,
    payload: Any,
    name: str = "bench",
    keys: ClientKeys | None = None,
) -> dict[str, float]:
    """``n`` calls of ``echo`` (or ``length`` for a bytes payload), ``inflight`` outstanding.

    Besides the rate, ``replied`` is the share of calls whose answer was the expected one (the
    payload echoed, or its length): every reply is counted, not only timed.
    """
    from bus.client import Client

    key = "data" if isinstance(payload, bytes) else "value"
    cmd = "length" if isinstance(payload, bytes) else "echo"
    expected = len(payload) if isinstance(payload, bytes) else payload
    replied = 0
    with Client(command, timeout=60, keys=keys or False) as client:
        for _ in range(50):
            client.call(name, "echo", value=SMALL)
        latencies: list[float] = []
        start = time.perf_counter()
        if inflight == 1:
            for _ in range(n):
                t = time.perf_counter()
                replied += client.call(name, cmd, {key: payload}) == expected
                latencies.append(time.perf_counter() - t)
        else:
            window = [client.start(name, cmd, {key: payload}) for _ in range(inflight)]
            for i in range(n):
                replied += window.pop(0).result() == expected
                if i + inflight < n:
                    window.append(client.start(name, cmd, {key: payload}))
        elapsed = time.perf_counter() - start
    return {**_summary(n, elapsed, latencies), "replied": replied / n}


def _aio_round_trips(
    command: str, n: int, inflight: int, payload: Any, name: str = "bench"
) -> dict[str, float]:
    """``_bus_round_trips`` with ``AsyncClient``: one call at a time, or ``inflight`` tasks
    each calling in turn (as the NATS rows do)."""
    from bus.aio import AsyncClient

    async def main() -> dict[str, float]:
        async with AsyncClient(command, timeout=60, keys=False) as client:
            for _ in range(50):
                await client.call(name, "echo", value=SMALL)
            latencies: list[float] = []
            call = client.call
            start = time.perf_counter()
            if inflight == 1:
                replied = 0
                for _ in range(n):
                    t = time.perf_counter()
                    replied += await call(name, "echo", value=payload) == payload
                    latencies.append(time.perf_counter() - t)
            else:

                async def caller(count: int) -> int:
                    ok = 0
                    for _ in range(count):
                        ok += await call(name, "echo", value=payload) == payload
                    return ok

                shares = [n // inflight + (i < n % inflight) for i in range(inflight)]
                replied = sum(await asyncio.gather(*(caller(c) for c in shares)))
            elapsed = time.perf_counter() - start
        return {**_summary(n, elapsed, latencies), "replied": replied / n}

    return asyncio.run(main())


def _summary(n: int, elapsed: float, latencies: list[float]) -> dict[str, float]:
    result = {"per_s": n / elapsed}
    if latencies:
        result["p50_ms"] = statistics.median(latencies) * 1000
        result["p99_ms"] = _percentile(latencies, 0.99) * 1000
    return result


def _events(
    kind: str,
    endpoints: dict[str, str],
    n: int,
    subs: int,
    keys: ClientKeys | None = None,
    curve: RawCurve | None = None,
    data: dict[str, Any] = SMALL,
) -> dict[str, float]:
    """``n`` events of ``data`` to ``subs`` subscriber processes: raw pyzmq (``kind`` "raw",
    through the endpoints ``xsub``/``xpub``, CURVE clients of ``curve`` if given) or linebus
    (the ``bench`` actor's ``emit``, through ``command``/``subscribe``, with ``keys`` on a
    secured line)."""
    ctx = mp.get_context("spawn")
    ready = ctx.Value("i", 0)
    out: Any = ctx.Queue()
    go = ctx.Event()
    procs = []
    if kind == "raw":
        for _ in range(subs):
            procs.append(
                ctx.Process(
                    target=_raw_subscriber,
                    args=(endpoints["xpub"], n, ready, out, curve),
                    daemon=True,
                )
            )
        procs.append(
            ctx.Process(
                target=_raw_publisher,
                args=(endpoints["xsub"], n, go, subs, ready, curve, data),
                daemon=True,
            )
        )
        for p in procs:
            p.start()
    else:
        from bus.client import Client
        from bus.testing import wait_until

        for _ in range(subs):
            procs.append(
                ctx.Process(
                    target=_bus_subscriber,
                    args=(endpoints["command"], endpoints["subscribe"], n, ready, out, keys),
                    daemon=True,
                )
            )
        for p in procs:
            p.start()
        wait_until(lambda: ready.value >= subs, 60, f"{subs} subscribers ready")
        with Client(endpoints["command"], timeout=120, keys=keys or False) as client:
            # In calls of EMIT_CHUNK events: one emit runs inline in the actor's loop, which
            # heartbeats between calls only; 200 000 events in one call outlast the broker's
            # heartbeat timeout on a loaded machine (the actor is then declared down).
            for first in range(0, n, EMIT_CHUNK):
                count = min(EMIT_CHUNK, n - first)
                client.call("bench", "emit", event="reading", count=count, data=data)
            for _ in range(50):
                client.call("bench", "emit", event="end", count=1)
                time.sleep(0.01)
    results = [out.get(timeout=120) for _ in range(subs)]
    _stop(procs, ())
    return event_figures(results, n, subs)


REPEATS = 3


Measure = Callable[[], dict[str, float]]


def _paired(raw: Measure, bus: Measure) -> dict[str, Any]:
    """Run raw and bus alternately REPEATS times and keep the median run of each, so a burst of
    load from elsewhere on the machine hits both alike and a single outlier does not decide."""
    return _alternate({"raw": raw, "bus": bus})


def _alternate(sides: dict[str, Measure]) -> dict[str, Any]:
    """Run every side once, in order, REPEATS times over; keep the median run of each side
    (ranked by MB/s or per second) with the list of all its runs."""
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for _ in range(REPEATS):
        for side, measure in sides.items():
            runs[side].append(measure())
    out: dict[str, Any] = {}
    for side, samples in runs.items():
        metric = "MB_per_s" if "MB_per_s" in samples[0] else "per_s"
        ordered = sorted(samples, key=lambda r: r[metric])
        out[side] = {**ordered[len(ordered) // 2], "runs": [round(r[metric], 1) for r in samples]}
    return out


def _broker_rss_with_actors(ctx: Any, port: int, count: int) -> float:
    """RSS of a fresh `linebus broker` with ``count`` idle actors connected (steady state)."""
    from bus.client import Client
    from bus.testing import wait_until

    ep = {
        name: f"tcp://127.0.0.1:{port + i}"
        for i, name in enumerate(("command", "publish", "subscribe"))
    }
    broker = _broker_process(ep)
    many = ctx.Process(
        target=_actor, args=(ep["command"], ep["publish"], count, "idle"), daemon=True
    )
    many.start()
    try:
        with Client(ep["command"], timeout=2, keys=False) as client:
            wait_until(
                lambda: sum(1 for s in client.services() if s["state"] == "up") >= count,
                60,
                f"{count} actors",
            )
            time.sleep(2.0)  # two heartbeat rounds, so the figure is the steady state
            return _rss_mb(broker.pid)
    finally:
        many.terminate()
        many.join(5)
        broker.terminate()
        broker.wait(10)


def _broker_process(ep: dict[str, str], config: Path | None = None) -> subprocess.Popen[bytes]:
    """The real ``linebus broker`` on the endpoints ``ep`` (``command``, ``publish``,
    ``subscribe``), with the ``[security]`` of ``config`` if given; it logs errors only (200
    actors leaving would flood the output)."""
    args = [sys.executable, "-m", "bus.cli", "broker"]
    if config is not None:
        args += ["--config", str(config)]
    args += ["--bind", ep["command"], "--publish-bind", ep["publish"]]
    args += ["--subscribe-bind", ep["subscribe"]]
    return subprocess.Popen(args, env={**os.environ, "LINEBUS_LOG_LEVEL": "error"})


def _stop(procs: Iterable[Any], brokers: Iterable[subprocess.Popen[bytes]]) -> None:
    """Terminate a measurement's child processes, then its brokers, waiting a few seconds for
    each (a process still there after that is left to the session's end: daemon children die
    with the bench)."""
    for proc in procs:
        proc.terminate()
        proc.join(5)
    for broker in brokers:
        broker.terminate()
        broker.wait(10)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def broker_config(
    folder: Path, *, transport: str = "tcp", nice: int | None = None
) -> tuple[Path | None, dict[str, str] | None]:
    """A config for the bench's broker in ``folder`` (None when it needs none) and, with the
    ``ipc`` transport, the Unix-socket endpoints by role where the bench's processes then
    reach it: the broker's own ``[broker] ipc_dir`` (``bus.ipc``), beside its TCP endpoints."""
    lines = [] if nice is None else [f"nice = {nice}"]
    local = None
    if transport == "ipc":
        lines.append(f"ipc_dir = {json.dumps(str(folder / 'bus'))}")
        local = ipc.endpoints(folder / "bus")
    if not lines:
        return None, None
    config = folder / "line.toml"
    config.write_text("\n".join(["[broker]", *lines, ""]))
    return config, local


def run(quick: bool = False, transport: str = "tcp") -> dict[str, Any]:
    """Run every measurement and return the figures with their ratios.

    ``transport``: ``tcp`` (loopback) for every side, or ``ipc``: the C proxy on Unix sockets
    and linebus through its broker's ``ipc_dir``; NATS has no Unix sockets and stays on TCP.
    """
    ctx = mp.get_context("spawn")
    port = 27000 + os.getpid() % 2000
    folder = tempfile.TemporaryDirectory(prefix="linebus-bench-")
    where = Path(folder.name)
    raw = {
        name: f"ipc://{where / name}" if transport == "ipc" else f"tcp://127.0.0.1:{port + i}"
        for i, name in enumerate(("front", "back", "xsub", "xpub"))
    }
    binds = {
        "command": f"tcp://127.0.0.1:{port + 10}",
        "publish": f"tcp://127.0.0.1:{port + 11}",
        "subscribe": f"tcp://127.0.0.1:{port + 12}",
    }
    config, local = broker_config(where, transport=transport)
    bus = local or binds
    n_seq = 3000 if quick else 10000
    n_inflight = 5000 if quick else 20000
    n_events = 50_000 if quick else 200_000
    n_bulk = 10 if quick else 30
    procs = [
        ctx.Process(target=_raw_proxy, args=(raw["front"], raw["back"]), daemon=True),
        ctx.Process(target=_raw_worker, args=(raw["back"],), daemon=True),
        ctx.Process(target=_raw_event_proxy, args=(raw["xsub"], raw["xpub"]), daemon=True),
        ctx.Process(target=_actor, args=(bus["command"], bus["publish"]), daemon=True),
    ]
    # The broker is the real `linebus broker` command, so its memory figure is the product's.
    broker = _broker_process(binds, config)
    for p in procs:
        p.start()
    broker_pid = broker.pid
    wait_for_actors(bus["command"])
    results: dict[str, Any] = {}
    blob = os.urandom(BULK_SIZE)
    nats = _start_nats(ctx, results)

    def bulk(measure: Any, endpoint: str) -> dict[str, float]:
        return {"MB_per_s": measure(endpoint, n_bulk, 1, blob)["per_s"] * BULK_SIZE / 1e6}

    def commands(n: int, inflight: int) -> dict[str, Measure]:
        sides: dict[str, Measure] = {
            "raw": lambda: _raw_round_trips(raw["front"], n, inflight, SMALL)
        }
        if nats is not None:
            sides["nats"] = lambda: nats_rows.round_trips(nats[0].url, n, inflight, SMALL)
        sides["bus"] = lambda: _bus_round_trips(bus["command"], n, inflight, SMALL)
        sides["aio"] = lambda: _aio_round_trips(bus["command"], n, inflight, SMALL)
        return sides

    def events(n: int, subs: int, data: dict[str, Any]) -> dict[str, Measure]:
        sides: dict[str, Measure] = {"raw": lambda: _events("raw", raw, n, subs, data=data)}
        if nats is not None:
            sides["nats"] = lambda: nats_rows.events(nats[0].url, n, subs, data)
        sides["bus"] = lambda: _events("bus", bus, n, subs, data=data)
        return sides

    try:
        results["a_sequential"] = _alternate(commands(n_seq, 1))
        results["b_inflight8"] = _alternate(commands(n_inflight, 8))
        results["c_events_1sub"] = _alternate(events(n_events, 1, SMALL))
        results["c_events_10sub"] = _alternate(events(n_events // 4, 10, SMALL))
        results["c_events_4KiB"] = _alternate(events(n_events // 4, 1, EVENT_4KIB))
        results["d_bulk_16MiB"] = _paired(
            lambda: bulk(_raw_round_trips, raw["front"]),
            lambda: bulk(_bus_round_trips, bus["command"]),
        )
        results["broker_rss_after_throughput_runs_MB"] = _rss_mb(broker_pid)
        results["e_broker_rss_200_actors_MB"] = _broker_rss_with_actors(ctx, port + 20, 200)
    finally:
        if nats is not None:
            nats[1].terminate()
            nats[1].join(5)
            nats[0].stop()
        _stop(procs, [broker])
        folder.cleanup()
    results["transport"] = transport
    add_ratios(results)
    return results


def _start_nats(ctx: Any, results: dict[str, Any]) -> tuple[nats_rows.NatsServer, Any] | None:
    """A nats-server and the responder process, or None (and why, in ``results["nats"]``)
    when nats-server or nats-py is missing: the other rows still run."""
    try:
        server = nats_rows.NatsServer()
        nats_rows._nats()
    except nats_rows.NatsMissing as exc:
        results["nats"] = f"NATS rows left out: {exc}"
        return None
    server.start()
    ready = ctx.Event()
    responder = ctx.Process(target=nats_rows.responder, args=(server.url, ready), daemon=True)
    responder.start()
    if not ready.wait(30):
        responder.terminate()
        server.stop()
        raise RuntimeError("the NATS responder did not subscribe within 30 s")
    return server, responder


def add_ratios(results: dict[str, Any]) -> None:
    """Set each pattern's ratios: ``ratio`` linebus/raw, ``ratio_nats`` linebus/NATS and
    ``ratio_aio`` asyncio client/sync client, where both sides ran."""
    for pair in results.values():
        if isinstance(pair, dict) and "raw" in pair:
            metric = "MB_per_s" if "MB_per_s" in pair["raw"] else "per_s"
            for key, top, bottom in RATIOS:
                if top in pair and bottom in pair:
                    below = pair[bottom][metric]
                    pair[key] = pair[top][metric] / below if below else 0.0


#: (result key, numerator side, denominator side) of each ratio column.
RATIOS = (("ratio", "bus", "raw"), ("ratio_nats", "bus", "nats"), ("ratio_aio", "aio", "bus"))


#: Issue 17's targets: linebus against raw pyzmq (the C proxy) in the same run ...
TARGETS = {
    "a_sequential": 0.75,
    "b_inflight8": 0.6,
    "c_events_1sub": 0.6,
    "c_events_10sub": 0.6,
    "c_events_4KiB": 0.8,
    "d_bulk_16MiB": 0.7,
}
#: ... against NATS with nats-py ...
NATS_TARGETS = {"a_sequential": 1.2, "b_inflight8": 1.2}
#: ... and the asyncio client against the sync one.
AIO_TARGETS = {"a_sequential": 0.9, "b_inflight8": 0.9}
#: Commands' p99 (ms): one at a time (sync client).
P99_TARGET_MS = {"a_sequential": 1.0}

#: The columns of the report: each side's figure, then each ratio with its target.
_SIDES = (
    ("raw", "raw pyzmq (C proxy)"),
    ("nats", "NATS (nats-py)"),
    ("bus", "linebus"),
    ("aio", "linebus asyncio"),
)
_RATIO_COLUMNS = (
    ("ratio", "linebus / raw", TARGETS),
    ("ratio_nats", "linebus / NATS", NATS_TARGETS),
    ("ratio_aio", "asyncio / sync", AIO_TARGETS),
)


def _cell(figures: dict[str, float] | None, metric: str, target_ms: float | None) -> str:
    if figures is None:
        return ""
    unit = "MB/s" if metric == "MB_per_s" else "/s"
    text = f"{figures[metric]:,.0f} {unit}"
    if "p50_ms" in figures:
        text += f" (p50 {figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms"
        text += f", target < {target_ms:g} ms)" if target_ms is not None else ")"
    if "delivered" in figures:
        text += f", delivered {figures['delivered']:.1%}"
    if "data_bytes" in figures:
        text += f", {figures['data_bytes']:,.0f} B each"
    return text


def report(results: dict[str, Any]) -> str:
    """Format the figures as the table docs/BENCHMARKS.md records: every side's rate (p50/p99
    one call at a time, the share delivered for events), then the ratios with their targets."""
    header = [label for _, label in _SIDES] + [label for _, label, _ in _RATIO_COLUMNS]
    lines = [
        "| pattern | " + " | ".join(header) + " |",
        "|---" * (len(header) + 1) + "|",
    ]
    for key, pair in results.items():
        if not isinstance(pair, dict):
            continue
        metric = "MB_per_s" if "MB_per_s" in pair["raw"] else "per_s"
        cells = [
            _cell(pair.get(side), metric, P99_TARGET_MS.get(key) if side == "bus" else None)
            for side, _ in _SIDES
        ]
        for ratio, _, targets in _RATIO_COLUMNS:
            if ratio not in pair:
                cells.append("")
                continue
            target = targets.get(key)
            cells.append(
                f"{pair[ratio]:.2f}" + (f" (>= {target:.2f})" if target is not None else "")
            )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if isinstance(results.get("nats"), str):
        lines.append(f"\n{results['nats']}")
    lines.append(f"\n{TRANSPORT_NOTES[results.get('transport', 'tcp')]}")
    lines.append(
        f"broker RSS with 200 connected actors (fresh broker): "
        f"{results.get('e_broker_rss_200_actors_MB', 0):.1f} MB (target < 60 MB)"
    )
    lines.append(
        f"broker RSS after the throughput runs above (allocator high-water from 16 MiB transfers): "
        f"{results.get('broker_rss_after_throughput_runs_MB', 0):.1f} MB"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``linebus bench`` / ``python bench/bus_bench.py``."""
    parser = argparse.ArgumentParser(prog="linebus bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts (a minute instead of several)"
    )
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    parser.add_argument(
        "--security",
        action="store_true",
        help="instead: what CURVE and the access list cost (four lines, CURVE off and on, "
        "C proxy and checked event paths; a few minutes)",
    )
    parser.add_argument(
        "--head-of-line",
        action="store_true",
        help="instead: commands' latency while a 64 MiB transfer and 100,000 events/s flow on "
        "the same line (bus.bench.headofline; --quick: 3 s per phase instead of 10)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        metavar="N",
        help="with --head-of-line: adjust the measured path's priority (broker, bench actor, "
        "timing client) by N, as a line's config can (nice -n; below 0 needs root or "
        "CAP_SYS_NICE)",
    )
    parser.add_argument(
        "--transport",
        choices=sorted(TRANSPORT_NOTES),
        default="tcp",
        help="how the processes reach linebus's broker and the C proxy: tcp (loopback, the "
        "default) or ipc (Unix sockets: the broker's [broker] ipc_dir, for processes on its "
        "host); not with --security",
    )
    args = parser.parse_args(argv)
    if args.nice is not None and not args.head_of_line:
        parser.error("--nice goes with --head-of-line")
    if args.security and args.transport != "tcp":
        parser.error("--security measures on TCP only")
    if args.head_of_line:
        from bus.bench import headofline

        results = headofline.run(
            seconds=3.0 if args.quick else 10.0, nice=args.nice, transport=args.transport
        )
        print(headofline.report(results))
    elif args.security:
        from bus.bench import security

        results = security.run(quick=args.quick)
        print(security.report(results))
    else:
        results = run(quick=args.quick, transport=args.transport)
        print(report(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
