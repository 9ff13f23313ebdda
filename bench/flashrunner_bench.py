"""FlashRunner file transfer: through the bus with the fr_comm-style facade, beside the driver
talking straight to the same simulator over its socket (no bus), in the same run.

    python bench/flashrunner_bench.py [--size-mib 8] [--repeats 3]

Both sides send the same FRB image to the same simulator process with the same driver code and
chunking; the bus side adds the client, the broker and the actor process. Runs alternate and the
median of each side is reported with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from actors.flashrunner.driver import FlashRunnerDriver
from actors.flashrunner.protocol import FileType
from bus.client import Client
from bus.testing import free_port, wait_until
from clients.flashrunner import FlashRunner, FR_FileType

ROOT = Path(__file__).resolve().parent.parent  # the child processes run here


def _direct(address: str, image: bytes) -> float:
    async def run() -> float:
        driver = FlashRunnerDriver.from_settings("LAN", address)
        async with driver:
            await driver.wait_connected(10)
            start = time.perf_counter()
            await driver.upload("bench.frb", image, FileType.FRB)
            return time.perf_counter() - start

    return asyncio.run(run())


def _through_bus(bus: Client, path: Path) -> float:
    with FlashRunner(bus, "frbench") as fr:
        start = time.perf_counter()
        fr.FR_SendFile(path, FR_FileType.FRB)
        return time.perf_counter() - start


def main() -> None:
    """Run both sides alternately and print MB/s and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image = os.urandom(args.size_mib * 1024 * 1024)
    sim_port, log_port = free_port(), free_port()
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "LINEBUS_LOG_LEVEL": "error"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.frb"
        path.write_bytes(image)
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f'[broker]\ncommand = "tcp://127.0.0.1:{ports[0]}"\npublish = "tcp://127.0.0.1:{ports[1]}"\n'
            f'subscribe = "tcp://127.0.0.1:{ports[2]}"\n\n[[actor]]\nname = "frbench"\nkind = "flashrunner"\n'
            f'[actor.options]\nport = "LAN"\nsettings = "127.0.0.1:{sim_port}"\nlogger = false\n'
        )
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "actors.flashrunner.simulator",
                    "--listen",
                    f"127.0.0.1:{sim_port}",
                    "--logger-listen",
                    f"127.0.0.1:{log_port}",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "bus.cli", "broker", "--config", str(config)],
                cwd=ROOT,
                env=env,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "bus.cli", "actor", str(config), "frbench"],
                cwd=ROOT,
                env=env,
            ),
        ]
        try:
            with Client(f"tcp://127.0.0.1:{ports[0]}", timeout=600) as bus:
                wait_until(lambda: _ready(bus), 30, "frbench actor connected to the simulator")
                direct, via_bus = [], []
                for _ in range(args.repeats):
                    direct.append(_direct(f"127.0.0.1:{sim_port}", image))
                    via_bus.append(_through_bus(bus, path))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    mb = len(image) / 1e6
    direct_rate = mb / statistics.median(direct)
    bus_rate = mb / statistics.median(via_bus)
    print(f"| {args.size_mib} MiB FRB upload | direct socket | through the bus | ratio |")
    print("|---|---|---|---|")
    print(
        f"| MB/s (median of {args.repeats}) | {direct_rate:.1f} | {bus_rate:.1f} | "
        f"{bus_rate / direct_rate:.2f} |"
    )
    print(
        f"runs direct: {[round(mb / t, 1) for t in direct]}  "
        f"through the bus: {[round(mb / t, 1) for t in via_bus]}"
    )


def _ready(bus: Client) -> bool:
    try:
        bus.call("frbench", "FR_SendCommand", command="#55*SPING", timeout=2)
        bus.call(
            "frbench", "FR_GetAnswer", {"timeout": 2000}, timeout=5
        )  # the command has its own `timeout`
        return True
    except Exception:  # not connected to the simulator yet
        return False


if __name__ == "__main__":
    main()
