"""The bridge's Sparkplug B profile against a real Mosquitto, its payloads decoded with the
protobuf runtime from the schema (tests/sparkplug_schema.py), not with the bridge's code.

One line for the module: ``echo1`` and ``echo2`` (devices) and the bridge ``uplink`` as edge
node ``line2`` of group ``acme-plant1-assembly``; the plant client subscribes before the bridge
starts, so it sees the first NBIRTH."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bus.mosquitto import Mosquitto
from tests import sparkplug_schema as schema
from tests.conftest import (
    ECHO,
    Endpoints,
    Line,
    Processes,
    require_mosquitto,
    scaled,
    wait_until,
    write_config,
)
from tests.mqtt_plant import Plant

pytestmark = [pytest.mark.integration, pytest.mark.interop]

GROUP, NODE = "acme-plant1-assembly", "line2"
BASE = f"spBv1.0/{GROUP}"


@dataclass
class Edge:
    line: Line
    broker: Mosquitto
    plant: Plant

    def decoded(self, topic: str) -> list[Any]:
        return [schema.decode(m.payload) for m in self.plant.messages(lambda m: m.topic == topic)]

    def wait(self, topic: str, what: str, check: Any = lambda p: True, after: int = 0) -> Any:
        """The first payload on ``topic`` after the first ``after`` messages that passes
        ``check``."""

        def found() -> Any:
            for payload in self.decoded(topic)[after:]:
                if check(payload):
                    return payload
            return None

        return wait_until(found, scaled(10), what)

    def sequence(self) -> list[tuple[str, int]]:
        """(message type, seq) of every message with a seq, in arrival order."""
        out = []
        for m in self.plant.messages(lambda m: m.topic.startswith(BASE)):
            kind = m.topic.split("/")[2]
            if kind not in ("NDEATH", "NCMD", "DCMD"):
                out.append((kind, schema.decode(m.payload).seq))
        return out


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    require_mosquitto()
    folder = tmp_path_factory.mktemp("mqtt-sparkplug")
    processes = Processes()
    broker = Mosquitto(folder / "mosquitto")
    plant: Plant | None = None
    try:
        broker.start(timeout=scaled(10))
        plant = Plant(broker)
        plant.subscribe("spBv1.0/#")
        endpoints = Endpoints.fresh()
        options = {
            "host": broker.host,
            "port": broker.port,
            "namespace": "acme/plant1/assembly/line2",
            "profile": "sparkplug",
            "expose": ["echo1.add", "echo2.add"],
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.5,
        }
        config = write_config(
            folder / "line.toml",
            endpoints,
            [
                {"name": "echo1", **ECHO},
                {"name": "echo2", **ECHO},
                {"name": "uplink", "kind": "mqtt", "options": options},
            ],
        )
        line = Line(config, endpoints, processes)
        line.start_broker()
        line.start_actor("echo1")
        line.start_actor("echo2")
        line.start_actor("uplink")
        yield Edge(line, broker, plant)
    finally:
        processes.cleanup()
        if plant is not None:
            plant.close()
        broker.stop()


def _dbirth_of(edge: Edge, device: str, *need: str) -> Any:
    return edge.wait(
        f"{BASE}/DBIRTH/{NODE}/{device}",
        f"DBIRTH of {device} with {need}",
        lambda p: all(name in schema.metrics(p) for name in need),
    )


def test_births_data_and_commands(edge: Edge) -> None:
    nbirth = edge.wait(f"{BASE}/NBIRTH/{NODE}", "NBIRTH")
    birth = schema.metrics(nbirth)
    assert nbirth.seq == 0 and nbirth.timestamp > 0
    assert birth["bdSeq"] == (schema.DATATYPES["Int64"], 0)
    assert birth["Node Control/Rebirth"] == (schema.DATATYPES["Boolean"], False)
    dbirth = schema.metrics(_dbirth_of(edge, "echo1", "Commands/add"))
    assert dbirth["Properties/kind"] == (schema.DATATYPES["String"], "echo")
    assert dbirth["Properties/state"] == (schema.DATATYPES["String"], "up")
    assert dbirth["Commands/add"] == (schema.DATATYPES["Boolean"], False)
    assert "Commands/echo" not in dbirth  # not exposed, not declared

    # State: new metrics need a new DBIRTH; then only what changed, typed, in DDATA.
    with edge.line.client() as client:
        client.call("echo1", "emit", event="state", data={"temp": 21.5, "count": 3, "ok": True})
        born = schema.metrics(_dbirth_of(edge, "echo1", "State/temp"))
        assert born["State/temp"] == (schema.DATATYPES["Double"], 21.5)
        assert born["State/count"] == (schema.DATATYPES["Int64"], 3)
        assert born["State/ok"] == (schema.DATATYPES["Boolean"], True)
        client.call("echo1", "emit", event="state", data={"temp": 22.0, "count": 3, "ok": True})
    ddata = edge.wait(f"{BASE}/DDATA/{NODE}/echo1", "DDATA of the new temperature")
    assert schema.metrics(ddata) == {"State/temp": (schema.DATATYPES["Double"], 22.0)}

    # DCMD: a declared command metric written with its arguments; the outcome as DDATA.
    dcmd = f"{BASE}/DCMD/{NODE}/echo1"
    edge.plant.client.publish(
        dcmd, schema.command("Commands/add", '{"a": 2, "b": 3}', datatype="String")
    )
    result = edge.wait(
        f"{BASE}/DDATA/{NODE}/echo1",
        "the result of Commands/add",
        lambda p: "Commands/add/result" in schema.metrics(p),
    )
    text = schema.metrics(result)["Commands/add/result"][1]
    assert '"result":5' in text and '"type":"reply"' in text
    # A command not exposed is refused (counted by the bridge), the actor never called.
    edge.plant.client.publish(dcmd, schema.command("Commands/crash", True, datatype="Boolean"))
    with edge.line.client() as client:
        wait_until(
            lambda: client.call("uplink", "status")["refused"] >= 1,
            scaled(10),
            "the bridge to refuse Commands/crash",
        )

    # seq: one counter over NBIRTH/DBIRTH/DDATA, +1 each (mod 256), NBIRTH 0.
    seqs = edge.sequence()
    assert seqs[0] == ("NBIRTH", 0)
    assert [s for _, s in seqs] == [i % 256 for i in range(len(seqs))], seqs


def test_rebirth_ddeath_and_ndeath(edge: Edge) -> None:
    _dbirth_of(edge, "echo2", "Commands/add")
    births = len(edge.decoded(f"{BASE}/NBIRTH/{NODE}"))
    device_births = len(edge.decoded(f"{BASE}/DBIRTH/{NODE}/echo2"))
    edge.plant.client.publish(
        f"{BASE}/NCMD/{NODE}", schema.command("Node Control/Rebirth", True, datatype="Boolean")
    )
    reborn = edge.wait(f"{BASE}/NBIRTH/{NODE}", "NBIRTH after the rebirth request", after=births)
    assert reborn.seq == 0 and schema.metrics(reborn)["bdSeq"][1] == 0  # same MQTT session
    edge.wait(f"{BASE}/DBIRTH/{NODE}/echo2", "echo2 born again", after=device_births)

    # An actor going down: DDEATH.
    edge.line.actors["echo2"].send_signal(signal.SIGTERM)
    edge.wait(f"{BASE}/DDEATH/{NODE}/echo2", "DDEATH of echo2")

    # kill -9 of the bridge: the broker publishes the will, an NDEATH with the session's bdSeq.
    os.kill(edge.line.actors["uplink"].pid, signal.SIGKILL)
    ndeath = edge.wait(f"{BASE}/NDEATH/{NODE}", "NDEATH (the will)")
    assert schema.metrics(ndeath) == {"bdSeq": (schema.DATATYPES["Int64"], 0)}
    assert not ndeath.HasField("seq")
