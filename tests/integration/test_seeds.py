"""The seeds' usage examples, run unchanged with ``linebus compat`` against one demo line.

The scripts in tests/seeds/ are the vendors' documented examples (fr_comm, fluxclient,
spotflow_device, rerobots) with their vendor imports; each runs as a child process
``linebus compat --endpoint ... SCRIPT`` against the demo line (configs/demo.toml on free ports,
started once for the module with ``linebus up``), the demo addresses in the script moved as in
the config. Together they call every method of the seed pages through the bus.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.flux.fcode import build_fcode
from actors.flux.testing import random_loopback
from bus.errors import BusError
from tests.conftest import (
    KEY_VARIABLES,
    ROOT,
    DemoConfig,
    Endpoints,
    Line,
    Processes,
    scaled,
    wait_until,
)

pytestmark = pytest.mark.integration

SEEDS = ROOT / "tests" / "seeds"
#: The demo line's actors the seeds use (its echo actor is not needed, but comes up too).
SERVICES = ("fr1", "p1", "p2", "discovery", "telemetry", "lab")


@dataclass
class Demo:
    config: DemoConfig
    line: Line
    #: The uuid (hex) of each demo printer by name (p1, p2), as discovery sees it.
    uuids: dict[str, str]

    def run(self, name: str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """Run tests/seeds/``name`` with ``linebus compat`` in ``workdir``; fail on a non-zero
        exit, with the script's output."""
        script = workdir / name
        script.write_text(self.config.relocate((SEEDS / name).read_text()))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bus.cli",
                "compat",
                "--endpoint",
                self.line.endpoints.command,
                "--subscribe",
                self.line.endpoints.subscribe,
                str(script),
                *args,
            ],
            cwd=workdir,
            env={k: v for k, v in os.environ.items() if k not in KEY_VARIABLES},
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert result.returncode == 0, f"{name}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        return result


def _answers(bus: Any, printer: str) -> bool:
    try:
        bus.call(printer, "deviceinfo", timeout=2)
        return True
    except BusError:  # not signed in to the printer yet
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("seeds-demo")
    # The printers move to loopback addresses of their own and keep FLUX's fixed ports (the
    # seeds write 23811 as a number), so this line never collides with another demo line.
    printers = {"127.0.0.2": random_loopback(), "127.0.0.3": random_loopback()}
    config = DemoConfig.write("demo.toml", folder, hosts=printers)
    processes = Processes()
    try:
        endpoints = Endpoints(
            *(
                config.relocate(address)
                for address in (
                    "tcp://127.0.0.1:7750",
                    "tcp://127.0.0.1:7751",
                    "tcp://127.0.0.1:7752",
                )
            )
        )
        line = Line(config.path, endpoints, processes)
        processes.start("-m", "bus.cli", "up", str(config.path))
        line.wait_broker(timeout=30)
        for name in SERVICES:
            line.wait_up(name, timeout=30)
        uuids: dict[str, str] = {}
        with line.client(timeout=5) as bus:

            def printers_seen() -> bool:
                uuids.update({row["name"]: row["uuid"] for row in bus.call("discovery", "list")})
                return {"p1", "p2"} <= set(uuids)

            wait_until(printers_seen, scaled(30), "discovery to see p1 and p2")
            for printer in ("p1", "p2"):  # each actor signs in to its printer in the background
                wait_until(
                    lambda printer=printer: _answers(bus, printer),
                    scaled(30),
                    f"{printer} connected",
                )
        yield Demo(config, line, uuids)
    finally:
        processes.cleanup()


def test_spotflow_basic_usage(demo: Demo, tmp_path: Path) -> None:
    out = demo.run("spotflow_basic_usage.py", tmp_path).stdout
    assert out.count('"temperatureCelsius"') == 3


def test_spotflow_reference(demo: Demo, tmp_path: Path) -> None:
    out = demo.run("spotflow_reference.py", tmp_path).stdout
    assert "device_id: line3-controller" in out
    assert "SpotflowError: [invalid_arguments]" in out
    assert out.rstrip().endswith("reference done")


def test_rerobots_tutorial(demo: Demo, tmp_path: Path) -> None:
    (tmp_path / "jwt.txt").write_text("a token the remote-lab actor does not need\n")
    out = demo.run("rerobots_tutorial.py", tmp_path).stdout
    assert "snapshot ndarray (" in out
    assert (tmp_path / "hosts").stat().st_size > 0
    assert out.rstrip().endswith("tutorial done")


def test_rerobots_reference(demo: Demo, tmp_path: Path) -> None:
    out = demo.run("rerobots_reference.py", tmp_path).stdout
    assert "sftp_client: a paramiko SFTP client cannot be offered over linebus" in out
    assert "deployment f06c8740-fb20-4d2f-a3b4-9d5e3c2a0c51" in out  # attached by id
    assert out.rstrip().endswith("reference done")


def test_fr_comm_minimal(demo: Demo, tmp_path: Path) -> None:
    out = demo.run("fr_comm_minimal.py", tmp_path).stdout
    assert out.startswith("55|") and "FR_Comm_Exception" not in out


def test_fr_comm_operations(demo: Demo, tmp_path: Path) -> None:
    out = demo.run("fr_comm_operations.py", tmp_path).stdout
    assert "COM3: FR_Comm_Exception: [unknown_service]" in out
    assert "progress 100%" in out
    assert "log: None" not in out  # the real-time logger gave a line
    assert (tmp_path / "dest" / "app.frb").read_bytes() == (tmp_path / "app.frb").read_bytes()
    # The demo unit fails channel 3's runs.
    assert "channel 1: OK" in out and "channel 3: FAIL" in out
    assert out.rstrip().endswith("operations done")


def test_fluxclient_robot(demo: Demo, tmp_path: Path) -> None:
    # The files the page's user has: an FCode task (fluxclient's slicer makes them) and firmware.
    (tmp_path / "job.fc").write_bytes(build_fcode(b"G1 X1\n" * 2000, {"TIME_COST": "60"}))
    (tmp_path / "firmware.bin").write_bytes(b"FLUX firmware image " * 100)
    out = demo.run("fluxclient_robot.py", tmp_path, demo.uuids["p1"]).stdout
    assert "deviceinfo p1" in out
    assert "paused " in out and "aborted 128" in out
    assert "scan oneshot True" in out
    assert out.rstrip().endswith("robot done")


def test_fluxclient_upnp(demo: Demo, tmp_path: Path) -> None:
    out = demo.run("fluxclient_upnp.py", tmp_path).stdout
    assert "found p1 " in out and "found p2 " in out
    assert "filtered ['p2', 'p2']" in out
    assert f"serialized {uuid.UUID(demo.uuids['p2'])}" in out
    assert "task p2 " in out and "with metadata p2\n" in out  # the metadata given
    assert out.rstrip().endswith("upnp done")
