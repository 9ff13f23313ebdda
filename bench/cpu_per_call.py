"""CPU time per sequential round trip, by process: linebus (client, broker, actor) beside raw
pyzmq (client, C zmq.proxy, bare worker), alternating, in one run.

Wall-clock rates on a shared machine move with the load; the CPU each process spends per round
trip moves far less, so this is the figure to compare before and after a change of a hot path.

    python bench/cpu_per_call.py [--n 5000] [--rounds 3] [--inflight 1]
    python bench/cpu_per_call.py --profile broker|actor   # cProfile that process, print its top

Each linebus side is the real ``linebus broker`` command and an EchoActor process; the client is
this process (``bus.client.Client``). The raw side is ``bus.bench``'s proxy and worker.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bus.bench import SMALL, SMALL_BODY, _raw_proxy, _raw_worker

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _actor_main(command: str, publish: str, profile: str) -> None:
    from bus.bench import _actor

    if not profile:
        _actor(command, publish)
        return
    import cProfile
    import signal

    prof = cProfile.Profile()

    def dump(*_: Any) -> None:
        prof.disable()
        prof.dump_stats(profile)
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    prof.enable()
    _actor(command, publish)


def _bus_calls(command: str, n: int, inflight: int) -> tuple[float, float]:
    from bus.client import Client

    with Client(command, timeout=60, keys=False) as client:
        for _ in range(50):
            client.call("bench", "echo", value=SMALL)
        cpu = time.process_time()
        start = time.perf_counter()
        if inflight == 1:
            for _ in range(n):
                if client.call("bench", "echo", {"value": SMALL}) != SMALL:
                    raise AssertionError("wrong reply")
        else:
            window = [client.start("bench", "echo", {"value": SMALL}) for _ in range(inflight)]
            for i in range(n):
                if window.pop(0).result() != SMALL:
                    raise AssertionError("wrong reply")
                if i + inflight < n:
                    window.append(client.start("bench", "echo", {"value": SMALL}))
        return time.perf_counter() - start, time.process_time() - cpu


def _client_main(command: str, n: int, inflight: int) -> None:
    """A client process for ``--callgrind``: warm up, say ``ready``, wait for a line on stdin
    (the counters are zeroed meanwhile), make ``n`` calls, say ``done``, wait again."""
    from bus.client import Client

    with Client(command, timeout=600, keys=False) as client:
        for _ in range(20):
            client.call("bench", "echo", value=SMALL)
        print("ready", flush=True)
        sys.stdin.readline()
        window = [client.start("bench", "echo", {"value": SMALL}) for _ in range(inflight)]
        for i in range(n):
            if window.pop(0).result() != SMALL:
                raise AssertionError("wrong reply")
            if i + inflight < n:
                window.append(client.start("bench", "echo", {"value": SMALL}))
        print("done", flush=True)
        sys.stdin.readline()


def _raw_calls(front: str, n: int, inflight: int) -> tuple[float, float]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.connect(front)
    for _ in range(50):
        s.send_multipart([SMALL_BODY])
        msgpack.unpackb(s.recv_multipart()[-1])
    cpu = time.process_time()
    start = time.perf_counter()
    if inflight == 1:
        for _ in range(n):
            s.send_multipart([SMALL_BODY])
            msgpack.unpackb(s.recv_multipart()[-1])
    else:
        for _ in range(inflight):
            s.send_multipart([SMALL_BODY])
        for i in range(n):
            msgpack.unpackb(s.recv_multipart()[-1])
            if i + inflight < n:
                s.send_multipart([SMALL_BODY])
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    s.close(linger=0)
    return elapsed


def _measure(
    calls: Any, pids: dict[str, int], n: int, line: _Line | None = None
) -> dict[str, float]:
    if line is not None and line.callgrind:
        client = line.client(n)
        line.instructions()  # each dump resets the counts
        start = time.perf_counter()
        client.go()
        wall = time.perf_counter() - start
        counts = line.instructions()
        out = {"per_s": n / wall, "client_us": client.finish() / n}
        for name, count in counts.items():
            out[f"{name}_us"] = count / n  # instructions per round trip, in this mode
            out[f"{name}_sys_us"] = 0.0
        return out
    before = {name: _cpu_s(pid) for name, pid in pids.items()}
    wall, client_cpu = calls()
    after = {name: _cpu_s(pid) for name, pid in pids.items()}
    out = {"per_s": n / wall, "client_us": client_cpu / n * 1e6}
    for name in pids:
        user = after[name][0] - before[name][0]
        system = after[name][1] - before[name][1]
        out[f"{name}_us"] = (user + system) / n * 1e6
        out[f"{name}_sys_us"] = system / n * 1e6
    return out


def ep(port: int) -> dict[str, str]:
    """The three endpoints of a line on loopback from ``port`` on."""
    return {
        name: f"tcp://127.0.0.1:{port + i}"
        for i, name in enumerate(("command", "publish", "subscribe"))
    }


class _Line:
    """A broker (the ``linebus broker`` command) and an EchoActor ``bench`` in processes of
    their own, importing ``bus`` from ``tree`` if given, else from this checkout."""

    def __init__(
        self,
        ep: dict[str, str],
        tree: str | None,
        tmp: Path,
        profile: str | None,
        callgrind: bool = False,
    ):
        self.ep = ep
        self.tmp = tmp
        self.callgrind = callgrind
        self.env = {**os.environ, "LINEBUS_LOG_LEVEL": "error"}
        # Both the path and the working directory: ``python -m``/``-c`` put the latter first.
        self.cwd = os.path.abspath(tree) if tree else None
        if self.cwd:
            self.env["PYTHONPATH"] = self.cwd
        self.broker_prof = str(tmp / "broker.prof") if profile == "broker" else ""
        self.actor_prof = str(tmp / "actor.prof") if profile == "actor" else ""
        self.broker: subprocess.Popen[bytes] | None = None
        self.actor: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and the actor."""
        cmd = [*self._valgrind("broker"), sys.executable]
        if self.broker_prof:
            cmd += ["-m", "cProfile", "-o", self.broker_prof]
        cmd += ["-m", "bus.cli", "broker", "--bind", self.ep["command"]]
        cmd += ["--publish-bind", self.ep["publish"], "--subscribe-bind", self.ep["subscribe"]]
        self.broker = subprocess.Popen(cmd, env=self.env, cwd=self.cwd)
        here = os.path.dirname(os.path.abspath(__file__))
        code = (
            f"import sys; sys.path.insert(0, {here!r}); from cpu_per_call import _actor_main; "
            f"_actor_main({self.ep['command']!r}, {self.ep['publish']!r}, {self.actor_prof!r})"
        )
        self.actor = subprocess.Popen(
            [*self._valgrind("actor"), sys.executable, "-c", code], env=self.env, cwd=self.cwd
        )

    def client(self, n: int) -> _CallgrindClient:
        """A client process under callgrind, warmed up, to make ``n`` sequential calls."""
        here = os.path.dirname(os.path.abspath(__file__))
        code = (
            f"import sys; sys.path.insert(0, {here!r}); from cpu_per_call import _client_main; "
            f"_client_main({self.ep['command']!r}, {n}, 1)"
        )
        proc = subprocess.Popen(
            [*self._valgrind("client"), sys.executable, "-c", code],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return _CallgrindClient(proc, self)

    def _valgrind(self, role: str) -> list[str]:
        if not self.callgrind:
            return []
        out = self.tmp / f"{role}.{self.ep['command'].rsplit(':', 1)[1]}.cg"
        return [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=yes",
            f"--callgrind-out-file={out}.%p",
        ]

    def instructions(self, pids: dict[str, int] | None = None) -> dict[str, int]:
        """Dump the callgrind counters of the broker and the actor (or of ``pids``); return
        their totals since the last dump (each dump resets them)."""
        out = {}
        for role, pid in (pids or self.pids()).items():
            subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
            dumps = sorted(self.tmp.glob(f"{role}.*.cg.{pid}.*"), key=lambda p: p.stat().st_mtime)
            totals = [
                line for line in dumps[-1].read_text().splitlines() if line.startswith("totals:")
            ]
            out[role] = int(totals[0].split()[1])
        return out

    def wait_ready(self) -> None:
        """Wait until the actor has registered."""
        from bus.client import Client
        from bus.errors import BusError
        from bus.testing import wait_until

        def up(client: Client) -> bool:
            try:
                return any(s["name"] == "bench" and s["state"] == "up" for s in client.services())
            except BusError:  # under valgrind a broker takes a while to listen
                return False

        with Client(self.ep["command"], timeout=10, keys=False) as client:
            wait_until(lambda: up(client), 300, "bench actor")

    def pids(self) -> dict[str, int]:
        """The broker's and the actor's process ids."""
        assert self.broker is not None and self.actor is not None
        return {"broker": self.broker.pid, "actor": self.actor.pid}

    def stop(self) -> None:
        """Stop both (SIGTERM: a profiled process writes its profile)."""
        for proc in (self.broker, self.actor):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


class _CallgrindClient:
    """``_client_main`` in a process under callgrind, driven through its stdin and stdout."""

    def __init__(self, proc: subprocess.Popen[str], line: _Line) -> None:
        self.proc = proc
        self.line = line
        assert proc.stdout is not None and proc.stdin is not None
        self.stdout, self.stdin = proc.stdout, proc.stdin
        if self.stdout.readline().strip() != "ready":
            raise RuntimeError("the client process did not start")
        line.instructions({"client": proc.pid})  # zero its counts

    def go(self) -> None:
        """Make the calls; return when they are done."""
        self.stdin.write("go\n")
        self.stdin.flush()
        if self.stdout.readline().strip() != "done":
            raise RuntimeError("the client process failed")

    def finish(self) -> int:
        """The client's instructions for the calls; the process ends."""
        count = self.line.instructions({"client": self.proc.pid})["client"]
        self.stdin.write("\n")
        self.stdin.flush()
        self.proc.wait(60)
        return count


def main(argv: list[str] | None = None) -> int:
    """Run and print the medians of each side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=5000, help="round trips per repetition")
    parser.add_argument("--rounds", type=int, default=3, help="alternating repetitions")
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--profile", choices=["broker", "actor"], help="cProfile that process")
    parser.add_argument("--top", type=int, default=25, help="profile rows to print")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run clients, brokers and actors under callgrind: their columns are then "
        "instructions per round trip (user space, every thread; counts do not move with the "
        "machine's load)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also a line whose broker and actor import bus/ from DIR (e.g. a `git archive` "
        "of the commit before a change), measured in the same alternation",
    )
    args = parser.parse_args(argv)
    port = 29000 + os.getpid() % 1000
    raw = {"front": f"tcp://127.0.0.1:{port + 3}", "back": f"tcp://127.0.0.1:{port + 4}"}
    tmp = Path(tempfile.mkdtemp(prefix="cpu_per_call."))
    ctx = mp.get_context("spawn")
    proxy = ctx.Process(target=_raw_proxy, args=(raw["front"], raw["back"]), daemon=True)
    worker = ctx.Process(target=_raw_worker, args=(raw["back"],), daemon=True)
    lines = {"bus": _Line(ep(port), None, tmp, args.profile, args.callgrind)}
    if args.baseline:
        lines["base"] = _Line(ep(port + 10), args.baseline, tmp, None, args.callgrind)
    for p in (proxy, worker):
        p.start()
    try:
        for line in lines.values():
            line.start()
        for line in lines.values():
            line.wait_ready()
        assert proxy.pid is not None and worker.pid is not None
        runs: dict[str, list[dict[str, float]]] = {"raw": [], **{name: [] for name in lines}}
        for _ in range(args.rounds):
            runs["raw"].append(
                _measure(
                    lambda: _raw_calls(raw["front"], args.n, args.inflight),
                    {"broker": proxy.pid, "actor": worker.pid},
                    args.n,
                )
            )
            for name, line in lines.items():
                runs[name].append(
                    _measure(
                        functools.partial(_bus_calls, line.ep["command"], args.n, args.inflight),
                        line.pids(),
                        args.n,
                        line,
                    )
                )
    finally:
        for line in lines.values():
            line.stop()
        for p in (proxy, worker):
            p.terminate()
            p.join(5)
    print(f"{args.n} round trips x {args.rounds}, {args.inflight} in flight; medians:")
    print("| side | round trips/s | client µs | broker µs (sys) | actor µs (sys) |")
    print("|---|---|---|---|---|")
    for side, samples in runs.items():
        med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        print(
            f"| {side} | {med['per_s']:,.0f} | {med['client_us']:.0f} "
            f"| {med['broker_us']:.0f} ({med['broker_sys_us']:.0f}) "
            f"| {med['actor_us']:.0f} ({med['actor_sys_us']:.0f}) |"
        )
    for name in lines:
        ratio = statistics.median(
            b["per_s"] / r["per_s"] for r, b in zip(runs["raw"], runs[name], strict=True)
        )
        print(f"{name}/raw round trips/s (median of the paired ratios): {ratio:.2f}")
    if args.profile:
        path = tmp / f"{args.profile}.prof"
        if path.exists():
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
