"""The actor kinds the contract suite runs against, and how to run each.

Each target names an actor (its config table), the simulators it needs (started as real
processes before the actor), a quick command, and a slow command that reports progress and can be
cancelled. A new actor kind joins the suite by adding one ``ContractTarget`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ContractTarget:
    """How to run one actor kind under the contract suite."""

    kind: str
    actor: dict[str, Any]
    quick: tuple[str, dict[str, Any]]
    slow: tuple[str, dict[str, Any]]
    #: Simulators as (module, args) started before the actor; args may use {port[NAME]} placeholders
    #: and {tmp} (the test's temporary directory).
    simulators: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Builds actor options from the ports allocated for the placeholders and the test's own
    #: temporary directory (for files the actor writes; removed with the test).
    options: Callable[[dict[str, int], Path], dict[str, Any]] | None = None
    ports: tuple[str, ...] = field(default=())


TARGETS: list[ContractTarget] = [
    ContractTarget(
        kind="echo",
        actor={"kind": "echo", "class": "bus.testing:EchoActor"},
        quick=("echo", {"value": 1}),
        slow=("work", {"steps": 200, "step_s": 0.05}),
    ),
    ContractTarget(
        kind="flashrunner",
        actor={"kind": "flashrunner"},
        quick=("FR_SendCommand", {"command": "#55*SPING"}),
        # A project run of 60 s on a simulator that has the project preloaded: progress at once
        # ({"done": 0, "total": 1}), then nothing until the channel ends or the run is cancelled.
        slow=("FR_RunProject", {"project": "slow.prj", "channels": [1], "timeout": 120000}),
        simulators=(
            (
                "actors.flashrunner.simulator",
                (
                    "--listen",
                    "127.0.0.1:{port[fr]}",
                    "--logger-listen",
                    "127.0.0.1:{port[frlog]}",
                    "--project",
                    "slow.prj",
                    "--run-s",
                    "60",
                ),
            ),
        ),
        options=lambda ports, _tmp: {
            "port": "LAN",
            "settings": f"127.0.0.1:{ports['fr']}",
            "logger_address": f"127.0.0.1:{ports['frlog']}",
            "backoff_max_s": 0.5,
        },
        ports=("fr", "frlog"),
    ),
    ContractTarget(
        kind="flux",
        actor={"kind": "flux"},
        quick=("list_files", {"path": "/SD/"}),
        # The simulator reads each robot connection at 32 KiB/s, so a 512 KiB upload reports
        # progress at once and lasts about 16 s unless cancelled.
        slow=("upload_file", {"data": bytes(512 * 1024), "upload_to": "/SD/slow.gcode"}),
        simulators=(
            (
                "actors.flux.simulator",
                (
                    "--robot-listen",
                    "127.0.0.1:{port[flux]}",
                    "--manage-listen",
                    "127.0.0.1:{port[fluxmanage]}",
                    "--udp-listen",
                    "127.0.0.1:{port[fluxudp]}",
                    "--camera-port",
                    "0",  # not the fixed 23812 on the shared 127.0.0.1
                    "--group",
                    "",
                    "--password",
                    "contract",
                    "--throttle",
                    "32768",
                ),
            ),
        ),
        options=lambda ports, tmp: {
            "host": "127.0.0.1",
            "port": ports["flux"],
            "manage_port": ports["fluxmanage"],
            "password": "contract",
            "key": str(tmp / "flux-client.pem"),
            "backoff_max_s": 0.5,
        },
        ports=("flux", "fluxmanage", "fluxudp"),
    ),
    ContractTarget(
        kind="discovery",
        actor={"kind": "discovery"},
        quick=("list", {}),
        # Wait for a device that never announces: progress at once and every second, for 60 s.
        slow=("discover_device", {"uuid": "0123456789abcdef0123456789abcdef", "timeout_s": 60.0}),
        options=lambda ports, _tmp: {
            "group": "",
            "listen": f"127.0.0.1:{ports['discovery']}",
            "presence": False,
        },
        ports=("discovery",),
    ),
    ContractTarget(
        kind="telemetry",
        actor={"kind": "telemetry"},
        quick=("enqueue_message", {"payload": b'{"t": 21.5}', "stream": "contract"}),
        # The upstream is a port nobody listens on: the actor starts unregistered (it stores and
        # keeps provisioning in the background), so send_message stores its message, reports
        # {"pending": 1, ...} at once and every half second, and waits until cancelled.
        slow=("send_message", {"payload": b"never forwarded", "stream": "contract"}),
        options=lambda ports, tmp: {
            "db": str(tmp / "telemetry" / "dut.db"),
            "instance_url": f"http://127.0.0.1:{ports['upstream']}",
            "provisioning_token": "contract-token",
            "device_id": "contract-dut",
            "request_timeout_s": 1.0,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 1.0,
        },
        ports=("upstream",),
    ),
    ContractTarget(
        kind="remotelab",
        actor={"kind": "remotelab"},
        quick=("get_wtypes", {}),
        # Waiting for an instance whose every status request the simulator answers 60 s late:
        # each poll times out after request_timeout_s (1 s) and is reported as progress
        # ({"status": None, "error": ...}); the wait goes on until cancelled.
        slow=("wait_until_ready", {"instance_id": "contract-never-ready", "timeout_s": 120.0}),
        simulators=(
            (
                "actors.remotelab.simulator",
                (
                    "--listen",
                    "127.0.0.1:{port[lab]}",
                    "--token-file",
                    "{tmp}/lab-token",
                    "--fault",
                    "slow:path=/instance/contract-never-ready,delay_s=60",
                ),
            ),
        ),
        options=lambda ports, tmp: {
            "base_uri": f"http://127.0.0.1:{ports['lab']}",
            "api_token_file": str(tmp / "lab-token"),
            "state_file": str(tmp / "lab-state.json"),
            "request_timeout_s": 1.0,
            "retries": 0,
            "ready_poll_s": 0.2,
        },
        ports=("lab",),
    ),
]
