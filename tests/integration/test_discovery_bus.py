"""FLUX discovery end to end: two simulator processes announce (unicast, every 0.3 s) to the
discovery actor's listener; the ``UpnpDiscover``/``UpnpTask`` facades and raw events over a real
broker see them appear, change status, be renamed, and go silent.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from actors.flux.config import FluxConfig
from actors.flux.driver import FluxDriver
from actors.flux.fcode import build_fcode
from actors.flux.testing import free_udp_port, random_loopback
from actors.fluxfamily import crypto
from clients.discovery import ManagerError, UpnpDiscover, UpnpTask
from tests.conftest import (
    ECHO,
    Endpoints,
    Line,
    Processes,
    free_port,
    scaled,
    wait_ready_line,
    write_config,
)

pytestmark = pytest.mark.integration


def _start_sim(
    processes: Processes, address: str, udp: int, *extra: str
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    port = free_port()  # management (TCP) and discovery (UDP) share the number, as on a real device
    sim = processes.start(
        "-m",
        "actors.flux.simulator",
        "--address",
        address,
        "--robot-port",
        str(free_port()),
        "--manage-port",
        str(port),
        "--udp-port",
        str(port),
        "--group",
        "",
        "--announce-to",
        f"127.0.0.1:{udp}",
        "--announce-interval",
        "0.3",
        *extra,
        stdout=subprocess.PIPE,
    )
    return sim, wait_ready_line(sim, scaled(20))


def _events(sub: Any, until: Any, timeout: float) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        event = sub.next(max(0.0, end - time.monotonic()))
        if event is None:
            break
        seen.append({"topic": event.topic, **event.data})
        if until(seen):
            return seen
    summary = [(e["topic"], e.get("event"), e.get("st_id")) for e in seen]
    pytest.fail(f"condition not met within {timeout} s; events: {summary}")


async def _run_job(host: str, port: int, key: Any) -> None:
    async with FluxDriver(host, key, FluxConfig(port=port, reply_timeout_s=5.0)) as driver:
        await driver.upload_file(build_fcode(b"G1 X1\n" * 100, {"AUTHOR": "test"}), "#")
        await driver.start_play()


def test_devices_appear_change_and_go(tmp_path: Path, processes: Processes) -> None:
    key = crypto.new_key()
    key_file = tmp_path / "trusted.pem"
    key_file.write_bytes(crypto.public_pem(key))
    udp = free_udp_port()
    endpoints = Endpoints.fresh()
    disc = {
        "name": "disc",
        "kind": "discovery",
        "options": {
            "group": "",
            "listen": "127.0.0.1",
            "port": udp,
            "timeout_s": 2.0,
            "key": str(tmp_path / "client.pem"),
            "subscribe": endpoints.subscribe,
        },
    }
    line = Line(
        write_config(tmp_path / "disc.toml", endpoints, [disc, {"name": "echo1", **ECHO}]),
        endpoints,
        processes,
    )
    line.start_broker()
    line.start_actor("disc")
    with line.client(timeout=10) as bus:
        sub = bus.subscribe("disc.")
        sub.wait_ready(scaled(5))
        a1, a2 = random_loopback(), random_loopback()
        sim1, ready1 = _start_sim(
            processes,
            a1,
            udp,
            "--name",
            "alpha",
            "--password",
            "pw1",
            "--trust",
            str(key_file),
            "--job-duration",
            "3",
        )
        sim2, ready2 = _start_sim(processes, a2, udp, "--name", "beta", "--password", "pw1")
        uuids = {ready1["uuid"]: "alpha", ready2["uuid"]: "beta"}

        # both appear, with the seed's metadata
        seen = _events(
            sub,
            lambda evs: {e["uuid"] for e in evs if e.get("event") == "appeared"} >= set(uuids),
            scaled(10),
        )
        appeared = {e["uuid"]: e for e in seen if e.get("event") == "appeared"}
        for uuid, name in uuids.items():
            device = appeared[uuid]
            assert device["topic"] == f"disc.device.{uuid}"
            assert device["name"] == name and device["st_id"] == 0 and device["st_label"] == "IDLE"
            assert {
                "serial",
                "model_id",
                "version",
                "ipaddr",
                "endpoint",
                "has_password",
                "st_ts",
                "st_prog",
            } <= set(device)
            # idle and without error: the seed's optional keys are absent
            assert "head_module" not in device and "error_label" not in device
            assert isinstance(device["st_ts"], int)
        with UpnpDiscover(bus, "disc") as discover:
            found = {str(d["uuid"].hex): d for d in discover.devices(timeout=0.5)}
        assert set(found) == set(uuids) and found[ready1["uuid"]]["endpoint"][0] == a1
        assert bus.call("disc", "get", {"uuid": ready2["uuid"]})["name"] == "beta"
        assert bus.call("disc", "touch", {"uuid": ready2["uuid"]})["name"] == "beta"

        # one starts a job: status events
        host, port = ready1["robot"].rsplit(":", 1)
        asyncio.run(_run_job(host, int(port), key))
        seen = _events(
            sub,
            lambda evs: any(
                e.get("event") == "status" and e["uuid"] == ready1["uuid"] and e["st_id"] == 16
                for e in evs
            ),
            scaled(10),
        )

        # a management command through UpnpTask: a wrong password is a typed error, then rename
        with pytest.raises(ManagerError) as caught:
            UpnpTask(
                ready2["uuid"],
                bus=bus,
                service="disc",
                backend_options={"password": "wrong"},
                lookup_timeout=1,
            )
        assert caught.value.err_symbol[0] == "AUTH_ERROR"
        task = UpnpTask(
            ready2["uuid"],
            bus=bus,
            service="disc",
            backend_options={"password": lambda task: "pw1"},
        )
        assert task.name == "beta"
        task.rename("gamma")
        assert len(task.get_wifi_list()) == 2
        assert any(entry["label"].startswith("linebus") for entry in task.list_trust())
        _events(
            sub,
            lambda evs: any(e.get("event") == "changed" and e["name"] == "gamma" for e in evs),
            scaled(10),
        )

        # presence of other actors is republished
        line.start_actor("echo1")
        _events(
            sub,
            lambda evs: any(
                e["topic"] == "disc.actor.echo1" and e.get("state") == "up" for e in evs
            ),
            scaled(10),
        )

        # the other goes silent: gone
        sim2.send_signal(signal.SIGKILL)
        _events(
            sub,
            lambda evs: any(e.get("event") == "gone" and e["uuid"] == ready2["uuid"] for e in evs),
            scaled(10),
        )
        assert [d["uuid"] for d in bus.call("disc", "list")] == [ready1["uuid"]]
        sub.close()
        sim1.terminate()
