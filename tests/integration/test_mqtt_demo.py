"""`linebus demo configs/demo-mqtt.toml`, the plant uplink demo, on free ports: its Mosquitto
(run as a simulator by `python -m bus.mosquitto`), the bridge, and the tour from the plant side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KEY_VARIABLES, ROOT, DemoConfig, require_mosquitto, scaled

pytestmark = [pytest.mark.integration, pytest.mark.interop]


def test_mqtt_demo_tour(tmp_path: Path) -> None:
    require_mosquitto()
    demo = DemoConfig.write("demo-mqtt.toml", tmp_path)
    # The bridge names the broker's port on its own (port = 21883): move it with the simulator.
    text = demo.path.read_text()
    demo.path.write_text(text.replace("port = 21883", f"port = {demo.ports['21883']}"))
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-m", "bus.cli", "demo", str(demo.path)],
        cwd=ROOT,  # (its var/ folder is the test's: DemoConfig moved it)
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert f"plant's MQTT broker 127.0.0.1:{demo.ports['21883']}" in out
    assert "acme/plant1/assembly/line3/press/presence" in out
    assert 'reply    {"type": "reply", "result": {"steps": 3}}' in out
    assert "error forbidden: press.exit is not exposed" in out
