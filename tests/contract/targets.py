"""The actor kinds the contract suite runs against, and how to run each.

Each target names an actor (its config table), the simulators it needs (started as real
processes before the actor), a quick command, and a slow command that reports progress and can be
cancelled. A new actor kind joins the suite by adding one ``ContractTarget`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ContractTarget:
    """How to run one actor kind under the contract suite."""

    kind: str
    actor: dict[str, Any]
    quick: tuple[str, dict[str, Any]]
    slow: tuple[str, dict[str, Any]]
    #: Simulators as (module, args) started before the actor; args may use {port[NAME]} placeholders.
    simulators: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Builds actor options from the ports allocated for the placeholders.
    options: Callable[[dict[str, int]], dict[str, Any]] | None = None
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
                ("--listen", "127.0.0.1:{port[fr]}", "--logger-listen", "127.0.0.1:{port[frlog]}", "--project", "slow.prj", "--run-s", "60"),
            ),
        ),
        options=lambda ports: {
            "port": "LAN",
            "settings": f"127.0.0.1:{ports['fr']}",
            "logger_address": f"127.0.0.1:{ports['frlog']}",
            "backoff_max_s": 0.5,
        },
        ports=("fr", "frlog"),
    ),
]
