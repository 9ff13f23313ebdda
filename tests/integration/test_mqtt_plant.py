"""Many lines, one plant: three lines (a linebus broker, a ``press`` echo actor and a bridge
each) on one Mosquitto. A plant-side client subscribes once and sees every line's presence and
events, and commands the ``press`` of line 2 by its namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.mosquitto import Mosquitto
from tests.conftest import (
    ECHO,
    Endpoints,
    Line,
    Processes,
    actor_environment,
    require_mosquitto,
    scaled,
    write_config,
)
from tests.mqtt_plant import Plant

pytestmark = [pytest.mark.integration, pytest.mark.interop]

PLANT = "acme/plant1"
LINES = ("line1", "line2", "line3")


@pytest.fixture
def plant_lines(tmp_path: Path, processes: Processes) -> Iterator[tuple[list[Line], Plant]]:
    require_mosquitto()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start(timeout=scaled(10))
    plant = Plant(broker)
    try:
        plant.subscribe(f"{PLANT}/#")  # once, for every line
        lines = []
        for name in LINES:
            options = {
                "host": broker.host,
                "port": broker.port,
                "namespace": f"{PLANT}/assembly/{name}",
                "events": ["press.tick"],
                "expose": ["press.emit"],
            }
            endpoints = Endpoints.fresh()
            config = write_config(
                tmp_path / f"{name}.toml",
                endpoints,
                [{"name": "press", **ECHO}, {"name": "uplink", "kind": "mqtt", "options": options}],
            )
            lines.append(Line(config, endpoints, processes))
        # Start every process first and wait afterwards: the nine start in parallel.
        for line in lines:
            line.broker = processes.start("-m", "bus.cli", "broker", "--config", str(line.config))
        for line in lines:
            line.wait_broker()
            for actor in ("press", "uplink"):
                line.actors[actor] = processes.start(
                    "-m", "bus.cli", "actor", str(line.config), actor,
                    env=actor_environment(actor),
                )  # fmt: skip
        for line in lines:
            for actor in ("press", "uplink"):
                line.wait_up(actor, pid=line.actors[actor].pid, timeout=30.0)
        yield lines, plant
    finally:
        plant.close()
        processes.cleanup()
        broker.stop()


def test_one_subscription_sees_every_line_and_commands_line_2(
    plant_lines: tuple[list[Line], Plant],
) -> None:
    lines, plant = plant_lines
    for name in LINES:
        plant.wait_topic(f"{PLANT}/assembly/{name}/status", online=True)
        plant.wait_topic(f"{PLANT}/assembly/{name}/press/presence", state="up", timeout=20.0)
    for index, line in enumerate(lines):
        with line.client() as client:
            client.call("press", "emit", event="tick", data={"line": index + 1})
    for index, name in enumerate(LINES):
        event = plant.wait_topic(f"{PLANT}/assembly/{name}/press/event/tick")
        assert event.json()["data"] == {"line": index + 1}

    # Command the press of line 2 by its namespace: it emits on line 2, and only there.
    _, reply = plant.request(
        f"{PLANT}/assembly/line2/press/cmd/emit", {"event": "tick", "data": "from-plant"}
    )
    assert reply.json() == {"type": "reply", "result": 1}
    plant.wait_for(
        lambda m: (
            m.topic == f"{PLANT}/assembly/line2/press/event/tick"
            and m.json()["data"] == "from-plant"
        ),
        "line 2's event caused by the plant's command",
    )
    elsewhere = plant.messages(
        lambda m: (
            "/event/tick" in m.topic
            and "/line2/" not in m.topic
            and m.json()["data"] == "from-plant"
        )
    )
    assert elsewhere == []
