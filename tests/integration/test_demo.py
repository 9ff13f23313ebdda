"""`make demo` runs `linebus demo configs/demo.toml`; this runs the same tour on free ports (in the
secured pass, the same tour of configs/demo-secure.toml: the demo line with CURVE)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KEY_VARIABLES, ROOT, SECURE, free_port, scaled

pytestmark = pytest.mark.integration


def test_demo_tour_runs_and_shuts_down(tmp_path: Path) -> None:
    """The demo brings the line up, tours every actor, shuts down and exits 0."""
    name = "demo-secure.toml" if SECURE else "demo.toml"
    text = (ROOT / "configs" / name).read_text()
    # Every loopback address:port in the demo config moves to a free port, so the test never
    # collides with a demo line someone is running.
    ports = {}
    for port in sorted(set(re.findall(r"127\.0\.0\.\d+:(\d+)", text))):
        ports[port] = str(free_port())
    text = re.sub(r"(127\.0\.0\.\d+):(\d+)", lambda m: f"{m.group(1)}:{ports[m.group(2)]}", text)
    # State files (databases, keys) under var/ go to this test's own directory.
    # ([security] paths are relative to the config file's directory: "../var/".)
    text = text.replace('"../var/', f'"{tmp_path}/var/').replace('"var/', f'"{tmp_path}/var/')
    config = tmp_path / name
    config.write_text(text)
    # The demo makes its line's keys and calls with its own: none of the test process's.
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-m", "bus.cli", "demo", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(240),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "the caller is told at once" in out
    assert "the supervisor restarted it as pid" in out
    assert "the line is shut down" in out
    assert ("the line is secured (CURVE)" in out) == SECURE
