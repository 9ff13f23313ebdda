"""NATS beside linebus in ``linebus bench``: the same patterns through Debian's ``nats-server``
with the nats-py client, started by the benchmark on a free loopback port.

- round trips: ``nc.request`` to a responder process subscribed to ``bench.echo`` that decodes
  the msgpack body and answers it re-encoded (as the raw pyzmq worker and ``EchoActor.echo``
  do); one at a time, or 8 coroutines each calling in turn (8 in flight);
- events: a publisher process publishes msgpack records on ``bench.reading`` to 1 or 10
  subscriber processes that decode every one (core NATS: at most once, so ``delivered`` says
  how many arrived; each subscription may buffer the whole burst, so none is dropped for being
  slow).

Bulk is left out: NATS caps a message at 1 MiB by default (``max_payload``) and is not built
to carry 16 MiB in one message. Needs the ``bench`` extra (``pip install 'linebus[bench]'``) and
``apt-get install nats-server``.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import subprocess
import time
from types import TracebackType
from typing import Any

import msgpack

from bus._programs import find_program
from bus.bench._figures import event_figures
from bus.testing import free_port, wait_until

__all__ = ["NatsMissing", "NatsServer", "events", "find_nats_server", "round_trips"]

SUBJECT = "bench.echo"
#: Bodies larger than this are answered with their length (the bulk convention of the bench).
_LARGE = 65536


class NatsMissing(RuntimeError):
    """No ``nats-server`` executable, or no nats-py, on this machine."""


def find_nats_server() -> str | None:
    """The path of the ``nats-server`` executable, or None when it is not installed."""
    return find_program("nats-server")


class NatsServer:
    """A ``nats-server`` child process on a free loopback port (``url``); a context manager."""

    def __init__(self) -> None:
        executable = find_nats_server()
        if executable is None:
            raise NatsMissing("nats-server is not installed (apt-get install nats-server)")
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._args = [executable, "-a", "127.0.0.1", "-p", str(self.port)]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts TCP connections."""
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._accepts, 10.0, f"nats-server listening on 127.0.0.1:{self.port}")

    def _accepts(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise NatsMissing(f"nats-server exited with {self._proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _nats() -> Any:
    try:
        import nats
    except ImportError as exc:
        raise NatsMissing("nats-py is not installed (pip install 'linebus[bench]')") from exc
    return nats


# --- child processes ------------------------------------------------------------------------


def responder(url: str, ready: Any) -> None:
    """Answer every request on ``SUBJECT`` with its body decoded and re-encoded (or, above
    64 KiB, its length), until terminated; set ``ready`` once subscribed."""
    nats = _nats()

    async def main() -> None:
        nc = await nats.connect(url)
        publish = nc.publish
        packb, unpackb = msgpack.packb, msgpack.unpackb

        async def answer(msg: Any) -> None:
            data = msg.data
            body = packb(len(data)) if len(data) > _LARGE else packb(unpackb(data))
            await publish(msg.reply, body)

        await nc.subscribe(SUBJECT, cb=answer, pending_msgs_limit=1_000_000)
        await nc.flush()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _publisher(url: str, n: int, go: Any, subs: int, ready: Any, data: dict[str, Any]) -> None:
    nats = _nats()

    async def main() -> None:
        nc = await nats.connect(url)
        packb = msgpack.packb
        # Warm up until every subscriber has seen an event, then send the measured burst.
        while ready.value < subs:
            await nc.publish("bench.warmup", packb({"warmup": True}))
            await nc.flush()
            await asyncio.sleep(0.01)
        go.set()
        publish = nc.publish
        for i in range(n):
            await publish("bench.reading", packb({**data, "i": i}))
        await nc.flush(timeout=60)
        for _ in range(50):
            await nc.publish("bench.end", packb({"end": True}))
            await nc.flush()
            await asyncio.sleep(0.01)
        await nc.close()

    asyncio.run(main())


def _subscriber(url: str, n: int, ready: Any, out: Any) -> None:
    nats = _nats()

    async def main() -> tuple[int, float, float, int]:
        nc = await nats.connect(url)
        unpackb = msgpack.unpackb
        warm, ended = asyncio.Event(), asyncio.Event()
        counts = {"got": 0, "start": 0.0, "last": 0.0, "size": 0}

        # A callback, nats-py's fast path (its ``messages`` iterator makes a task per message).
        async def on_message(msg: Any) -> None:
            body = unpackb(msg.data)
            if "i" in body:
                if not counts["got"]:
                    counts["start"], counts["size"] = time.perf_counter(), len(msg.data)
                counts["got"] += 1
                counts["last"] = time.perf_counter()
            elif "warmup" in body:
                warm.set()
            elif "end" in body and counts["got"]:
                ended.set()

        # The whole burst may wait in the subscription (a bytes limit of 0 is none): none is
        # dropped for being slow.
        await nc.subscribe(
            "bench.>", cb=on_message, pending_msgs_limit=n + 10_000, pending_bytes_limit=0
        )
        await warm.wait()
        with ready.get_lock():
            ready.value += 1
        await ended.wait()
        await nc.close()
        got = int(counts["got"])
        return got, counts["start"] or counts["last"], counts["last"], int(counts["size"])

    out.put(asyncio.run(main()))


# --- measurements ---------------------------------------------------------------------------


def round_trips(url: str, n: int, inflight: int, payload: Any) -> dict[str, float]:
    """``n`` requests to the responder, ``inflight`` at a time; rate, latencies (one at a time
    only) and ``replied``, the share of answers that were the expected one."""
    from bus.bench import SMALL_BODY, _summary

    nats = _nats()
    body = payload if isinstance(payload, bytes) else msgpack.packb(payload)
    expected = len(payload) if isinstance(payload, bytes) else payload

    async def main() -> dict[str, float]:
        nc = await nats.connect(url)
        request = nc.request
        unpackb = msgpack.unpackb
        for _ in range(50):  # warm-up
            await request(SUBJECT, SMALL_BODY, timeout=30)
        latencies: list[float] = []
        replied = 0
        start = time.perf_counter()
        if inflight == 1:
            for _ in range(n):
                t = time.perf_counter()
                replied += unpackb((await request(SUBJECT, body, timeout=30)).data) == expected
                latencies.append(time.perf_counter() - t)
        else:

            async def caller(count: int) -> int:
                ok = 0
                for _ in range(count):
                    ok += unpackb((await request(SUBJECT, body, timeout=30)).data) == expected
                return ok

            shares = [n // inflight + (i < n % inflight) for i in range(inflight)]
            replied = sum(await asyncio.gather(*(caller(c) for c in shares)))
        elapsed = time.perf_counter() - start
        await nc.close()
        return {**_summary(n, elapsed, latencies), "replied": replied / n}

    return asyncio.run(main())


def events(url: str, n: int, subs: int, data: dict[str, Any]) -> dict[str, float]:
    """``n`` events of ``data`` (plus a counter) to ``subs`` subscriber processes; figures as
    ``bus.bench._events`` gives them."""
    ctx = mp.get_context("spawn")
    ready = ctx.Value("i", 0)
    out: Any = ctx.Queue()
    go = ctx.Event()
    procs = [
        ctx.Process(target=_subscriber, args=(url, n, ready, out), daemon=True) for _ in range(subs)
    ]
    procs.append(ctx.Process(target=_publisher, args=(url, n, go, subs, ready, data), daemon=True))
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in range(subs)]
    finally:
        for p in procs:
            p.terminate()
            p.join(5)
    return event_figures(results, n, subs)
