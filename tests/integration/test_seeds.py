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
from pathlib import Path

import pytest

from actors.flux.fcode import build_fcode
from tests.conftest import KEY_VARIABLES, ROOT, DemoLine, Processes, scaled, start_demo_line

pytestmark = pytest.mark.integration

SEEDS = ROOT / "tests" / "seeds"


class Demo(DemoLine):
    """The demo line, and a way to run a seed script against it."""

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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    processes = Processes()
    try:
        started = start_demo_line(tmp_path_factory.mktemp("seeds-demo"), processes)
        yield Demo(started.config, started.line, started.uuids)
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
