"""`make demo` runs `linebus demo configs/demo.toml`; this runs the same tour on free ports (in the
secured pass, the same tour of configs/demo-secure.toml: the demo line with CURVE)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KEY_VARIABLES, ROOT, SECURE, DemoConfig, scaled

pytestmark = pytest.mark.integration


def test_demo_tour_runs_and_shuts_down(tmp_path: Path) -> None:
    """The demo brings the line up, tours every actor, shuts down and exits 0."""
    name = "demo-secure.toml" if SECURE else "demo.toml"
    config = DemoConfig.write(name, tmp_path).path
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
    # configs/demo*.toml serve /metrics: the tour's scrape saw the restart it caused (at least:
    # on a loaded machine a missed heartbeat may bring another actor back too).
    restarts = re.search(r"\d+ services up, restarts: (\d+), \d+ answers timed", out)
    assert restarts is not None and int(restarts[1]) >= 1, out[-2000:]
    # The broker asked the telemetry actor for its figures (secured: as `supervisor`).
    assert "telemetry: 1 of 1 actors answered the scrape's stats call" in out, out[-2000:]
    assert ("the line is secured (CURVE)" in out) == SECURE
    if not SECURE:  # demo.toml has a [web] table: `make demo` prints the dashboard's URL
        assert "linebus demo: the dashboard is at http://127.0.0.1:" in out
