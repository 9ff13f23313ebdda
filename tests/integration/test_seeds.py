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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    KEY_VARIABLES,
    ROOT,
    DemoConfig,
    Endpoints,
    Line,
    Processes,
    scaled,
)

pytestmark = pytest.mark.integration

SEEDS = ROOT / "tests" / "seeds"
#: The demo line's actors the seeds use (its echo actor is not needed, but comes up too).
SERVICES = ("fr1", "p1", "p2", "discovery", "telemetry", "lab")


@dataclass
class Demo:
    config: DemoConfig
    line: Line

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
    folder = tmp_path_factory.mktemp("seeds-demo")
    config = DemoConfig.write("demo.toml", folder)
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
        yield Demo(config, line)
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
    assert out.rstrip().endswith("reference done")
