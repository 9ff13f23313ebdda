"""The ``mqtt`` bridge (Unified Namespace profile) against a real Mosquitto: one line (broker,
``echo1``, the bridge) and a plant-side paho client, for the whole module."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from bus.mosquitto import Mosquitto
from tests.conftest import (
    ECHO,
    SECURE,
    Endpoints,
    Line,
    Processes,
    require_mosquitto,
    scaled,
    write_config,
)
from tests.mqtt_plant import Plant

pytestmark = [pytest.mark.integration, pytest.mark.interop]

NS = "acme/plant1/assembly/line1"
#: In the secured pass the bridge is a key with an access-list entry of its own: it may call
#: everything but echo1.echo, which its config does expose.
BRIDGE_ACL = """
[security.acl.identity.uplink]
call = ["*.*", "!echo1.echo"]
"""


def bridge_options(broker: Mosquitto, **more: object) -> dict[str, object]:
    return {
        "host": broker.host,
        "port": broker.port,
        "namespace": NS,
        "events": ["echo1.tick"],
        "expose": ["echo1.add", "echo1.work", "echo1.fail", "echo1.echo"],
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
        "command_timeout_s": 10.0,
        **more,
    }


@pytest.fixture(scope="module")
def uplink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Line, Mosquitto]]:
    """A running line with ``echo1`` and the bridge ``uplink``, and its Mosquitto."""
    require_mosquitto()
    folder = tmp_path_factory.mktemp("mqtt-bridge")
    processes = Processes()
    broker = Mosquitto(folder / "mosquitto")
    try:
        broker.start(timeout=scaled(10))
        endpoints = Endpoints.fresh()
        config = write_config(
            folder / "line.toml",
            endpoints,
            [
                {"name": "echo1", **ECHO},
                {"name": "uplink", "kind": "mqtt", "options": bridge_options(broker)},
            ],
            extra='[actor.options.qos]\n"echo1.tick" = 1\n' + (BRIDGE_ACL if SECURE else ""),
        )
        line = Line(config, endpoints, processes)
        line.start_broker()
        line.start_actor("echo1")
        line.start_actor("uplink")
        yield line, broker
    finally:
        processes.cleanup()
        broker.stop()


@pytest.fixture
def plant(uplink: tuple[Line, Mosquitto]) -> Iterator[Plant]:
    client = Plant(uplink[1])
    try:
        yield client
    finally:
        client.close()


def test_presence_and_events_appear_under_the_namespace(
    uplink: tuple[Line, Mosquitto], plant: Plant
) -> None:
    line, mosquitto = uplink
    plant.subscribe(f"{NS}/#")
    # Live or retained, depending on whether the bridge published before this subscription.
    plant.wait_topic(f"{NS}/status", online=True)
    plant.wait_topic(f"{NS}/echo1/presence", state="up")
    late = Plant(mosquitto)  # subscribes after both were published: gets the retained copies
    try:
        late.subscribe(f"{NS}/#")
        assert late.wait_topic(f"{NS}/status", online=True).retain
        presence = late.wait_topic(f"{NS}/echo1/presence", state="up")
        assert presence.retain and presence.json()["kind"] == "echo"
    finally:
        late.close()
    with line.client() as client:
        client.call("echo1", "emit", event="other", data=0)  # not a bridged prefix
        client.call("echo1", "emit", event="tick", count=2, data={"v": 1.5})
    first = plant.wait_topic(f"{NS}/echo1/event/tick")
    body = first.json()
    assert body["topic"] == "echo1.tick" and body["src"] == "echo1"
    assert body["data"] == {"v": 1.5} and isinstance(body["ts"], float)
    assert first.qos == 1 and not first.retain  # QoS of its prefix
    ticks = plant.wait_for(
        lambda m: m.topic == f"{NS}/echo1/event/tick" and m.json()["seq"] == body["seq"] + 1,
        "the second tick, seq kept",
    )
    assert ticks.json()["epoch"] == body["epoch"]
    assert not plant.messages(lambda m: "/event/other" in m.topic)


def test_request_gets_progress_and_reply(uplink: tuple[Line, Mosquitto], plant: Plant) -> None:
    progress, final = plant.request(f"{NS}/echo1/cmd/work", {"steps": 3, "step_s": 0.05})
    assert final.user["type"] == "reply" and final.json() == {
        "type": "reply",
        "result": {"steps": 3},
    }
    assert [m.json()["data"]["done"] for m in progress] == [1, 2, 3]
    _, added = plant.request(f"{NS}/echo1/cmd/add", {"a": 2, "b": 3})
    assert added.json()["result"] == 5


def test_typed_errors_and_commands_not_exposed(
    uplink: tuple[Line, Mosquitto], plant: Plant
) -> None:
    _, failed = plant.request(f"{NS}/echo1/cmd/fail", {"message": "jammed"})
    body = failed.json()
    assert failed.user["type"] == "error"
    assert body["code"] == "device_fault" and body["message"].endswith("jammed")
    assert body["details"]["device_code"] == "SIMULATED"
    _, refused = plant.request(f"{NS}/echo1/cmd/crash")
    assert refused.json()["code"] == "forbidden"
    assert refused.json()["details"]["rule"] == "expose"
    _, bad = plant.request(f"{NS}/echo1/cmd/add", {"a": "two"})
    assert bad.json()["code"] == "invalid_arguments"


def test_retained_state_survives_restart_and_will_fires_on_kill(
    uplink: tuple[Line, Mosquitto], plant: Plant
) -> None:
    line, broker = uplink
    plant.subscribe(f"{NS}/#")
    plant.wait_topic(f"{NS}/status", online=True)
    with line.client() as client:
        client.call("echo1", "emit", event="state", data={"mode": "run", "count": 7})
    state = plant.wait_topic(f"{NS}/echo1/state")
    assert state.json()["data"] == {"mode": "run", "count": 7}
    # An orderly stop says so on the status topic; the retained state stays.
    bridge = line.actors["uplink"]
    bridge.send_signal(signal.SIGTERM)
    bridge.wait(timeout=scaled(15))
    plant.wait_topic(f"{NS}/status", online=False, reason="stopped")
    # A request sent while the bridge is away waits in its persistent session.
    pending = plant.send_request(f"{NS}/echo1/cmd/add", {"a": 40, "b": 2})
    line.start_actor("uplink")
    assert plant.answers(pending)[1].json() == {"type": "reply", "result": 42}
    late = Plant(broker)
    try:
        late.subscribe(f"{NS}/#")
        kept = late.wait_topic(f"{NS}/echo1/state")
        assert kept.retain and kept.json()["data"] == {"mode": "run", "count": 7}
        late.wait_topic(f"{NS}/status", online=True)
        # kill -9: no last words, the broker publishes the will.
        os.kill(line.actors["uplink"].pid, signal.SIGKILL)
        # (Not the retained {"online": false} of the orderly stop this client may have got on
        # subscribing: the will arrives live, so without the retain flag.)
        will = late.wait_for(
            lambda m: m.topic == f"{NS}/status" and not m.retain and m.json()["online"] is False,
            "the will",
        )
        assert "reason" not in will.json()
    finally:
        late.close()
        line.start_actor("uplink")  # for the tests after this one


def test_calls_run_under_the_bridges_identity(uplink: tuple[Line, Mosquitto], plant: Plant) -> None:
    _, answer = plant.request(f"{NS}/echo1/cmd/echo", {"value": "hi"})
    if SECURE:  # exposed by the bridge, refused by the line's access list for the bridge's key
        body = answer.json()
        assert body["code"] == "forbidden" and body["details"]["identity"] == "uplink"
        assert body["details"]["rule"] != "expose"
    else:
        assert answer.json() == {"type": "reply", "result": "hi"}
