"""CPU per round trip of each process on the command path, and where it goes (py-spy).

    python bench/profile_round_trips.py [--seconds 8] [--profile DIR] [--top 12]

Starts the real ``linebus broker`` and an ``EchoActor`` (as ``linebus bench`` does), then, for
each client kind (``Client`` and ``AsyncClient``) and window (1 and 8 calls in flight), runs a
client process calling ``echo`` with the bench's small record for ``--seconds`` seconds after a
warm-up. For each run it prints round trips/s and the CPU time (user + system, from
/proc/PID/stat) each process spent per round trip: on a shared machine these figures move much
less than rates do, so they are what a change of the hot path is judged by.

With ``--profile DIR`` every run is also sampled by py-spy (``--nonblocking``: the processes
are never paused) in all three processes at once; the collapsed stacks are kept in DIR and the
top functions by own time ("self") and by time including callees ("total") are printed per
process. py-spy comes from PyPI (``pip install py-spy``) and needs ptrace rights (root, or
``kernel.yama.ptrace_scope = 0``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bus.bench import SMALL, _actor, _broker_process, wait_for_actors
from bus.client import Client

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (threads included)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _sync_client(endpoint: str, inflight: int, go: Any, stop: Any, out: Any) -> None:
    with Client(endpoint, timeout=30, keys=False) as client:
        for _ in range(200):
            client.call("bench", "echo", value=SMALL)
        go.set()
        count = 0
        if inflight == 1:
            while not stop.is_set():
                for _ in range(100):
                    client.call("bench", "echo", value=SMALL)
                count += 100
        else:
            window = [client.start("bench", "echo", value=SMALL) for _ in range(inflight)]
            while not stop.is_set():
                for _ in range(100):
                    window.pop(0).result()
                    window.append(client.start("bench", "echo", value=SMALL))
                count += 100
            for call in window:
                call.result()
        out.put(count)


def _aio_client(endpoint: str, inflight: int, go: Any, stop: Any, out: Any) -> None:
    from bus.aio import AsyncClient

    async def main() -> int:
        async with AsyncClient(endpoint, timeout=30, keys=False) as client:
            for _ in range(200):
                await client.call("bench", "echo", value=SMALL)
            go.set()
            counts = [0] * inflight

            async def worker(i: int) -> None:
                while not stop.is_set():
                    for _ in range(100):
                        await client.call("bench", "echo", value=SMALL)
                    counts[i] += 100

            await asyncio.gather(*(worker(i) for i in range(inflight)))
            return sum(counts)

    out.put(asyncio.run(main()))


CLIENTS = {"sync": _sync_client, "aio": _aio_client}


def measure(
    ctx: Any,
    endpoint: str,
    pids: dict[str, int],
    kind: str,
    inflight: int,
    seconds: float,
    profile: Path | None,
) -> dict[str, float]:
    """One client run: round trips/s and CPU µs per round trip of every process."""
    go, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=CLIENTS[kind], args=(endpoint, inflight, go, stop, out))
    proc.start()
    if not go.wait(60):
        raise RuntimeError("client did not warm up")
    every = {**pids, "client": proc.pid}
    spies = []
    if profile is not None:
        for role, pid in every.items():
            spies.append(
                subprocess.Popen(
                    [
                        _py_spy(),
                        "record",
                        "--nonblocking",
                        "--function",
                        "--format",
                        "raw",
                        "--rate",
                        "250",
                        "--duration",
                        str(int(seconds)),
                        "--pid",
                        str(pid),
                        "--output",
                        str(profile / f"{kind}-{inflight}-{role}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    before = {role: cpu_seconds(pid) for role, pid in every.items()}
    start = time.perf_counter()
    # The client counts whole batches of 100; the count at the stop covers this span closely
    # enough for seconds-long runs (at most one batch past it).
    time.sleep(seconds)
    after = {role: cpu_seconds(pid) for role, pid in every.items()}
    elapsed = time.perf_counter() - start
    stop.set()
    count = out.get(timeout=60)
    proc.join(10)
    for spy in spies:
        spy.wait(60)
    result = {"per_s": count / elapsed}
    for role in every:
        result[f"{role}_us"] = (after[role] - before[role]) / count * 1e6
    return result


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found


#: Leaf functions where a process waits for input (its idle time, not work).
WAITING = ("Poller.poll ", "EpollSelector.select ", "Socket.poll ")


def top_functions(
    path: Path, n: int
) -> tuple[float, list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed ("raw") output: the share of samples spent waiting for input,
    then the ``n`` functions with the most own samples and with the most samples including
    callees (below the main loop), as shares of the samples that were not waiting (the
    process's work)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        if frames[-1].startswith(WAITING):
            waiting += count
            continue
        own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            total[frame] += count
    busy = samples - waiting
    if not busy:
        return 1.0, [], []
    return (
        waiting / samples,
        [(name, c / busy) for name, c in own.most_common(n)],
        # Without the frames every sample shares (the process's main loop and its callers).
        [(name, c / busy) for name, c in total.most_common() if c < 0.97 * busy][:n],
    )


def _short(frame: str) -> str:
    """``func (path/to/module.py)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')')).name})" if where else name


def main(argv: list[str] | None = None) -> int:
    """Run every client kind and window; print the table (and the profiles' tops)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--profile", type=Path, help="sample with py-spy; keep stacks here")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--kinds", default="sync,aio")
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    port = 29000 + os.getpid() % 1000
    ep = {
        name: f"tcp://127.0.0.1:{port + i}"
        for i, name in enumerate(("command", "publish", "subscribe"))
    }
    broker = _broker_process(ep)
    actor = ctx.Process(target=_actor, args=(ep["command"], ep["publish"]), daemon=True)
    actor.start()
    assert actor.pid is not None
    try:
        wait_for_actors(ep["command"])
        pids = {"broker": broker.pid, "actor": actor.pid}
        print(
            "| client | in flight | round trips/s | CPU µs per round trip: broker | actor | client |"
        )
        print("|---|---|---|---|---|---|")
        runs = []
        for kind in args.kinds.split(","):
            for inflight in (1, 8):
                r = measure(ctx, ep["command"], pids, kind, inflight, args.seconds, args.profile)
                runs.append((kind, inflight))
                print(
                    f"| {kind} | {inflight} | {r['per_s']:,.0f} | {r['broker_us']:.0f} "
                    f"| {r['actor_us']:.0f} | {r['client_us']:.0f} |",
                    flush=True,
                )
    finally:
        actor.terminate()
        actor.join(5)
        broker.terminate()
        broker.wait(10)
    if args.profile is not None:
        for kind, inflight in runs:
            for role in ("broker", "actor", "client"):
                path = args.profile / f"{kind}-{inflight}-{role}.txt"
                if not path.exists():
                    continue
                waiting, own, total = top_functions(path, args.top)
                print(
                    f"\n{role}, {kind} client, {inflight} in flight: "
                    f"{waiting:.0%} of samples waiting; shares of the rest:\n"
                )
                print("| self | function | | total | function |\n|---|---|---|---|---|")
                for (o_name, o_share), (t_name, t_share) in zip(own, total, strict=False):
                    print(f"| {o_share:.1%} | {o_name} | | {t_share:.1%} | {t_name} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
