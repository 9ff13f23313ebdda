"""The remote-lab actor end to end through the broker, against the simulator: the seed's
tutorial through the ``clients.remotelab`` facade, every fault as a typed error with the actor
still usable afterwards, SSH re-opened after a drop, and re-attaching after a restart.

One simulator, broker and actor serve the whole module (each process costs a second to start);
each test books its own instance, or uses the deployments' faults with ``count=1``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.errors import Cancelled
from clients.remotelab import (
    APIClient,
    BusyWorkspaceDeployment,
    BusyWorkspaceInstance,
    Error,
    Instance,
    InstanceNotFound,
    WrongAuthToken,
)
from tests.conftest import Endpoints, Line, Processes, scaled, wait_ready_line, write_config

pytestmark = pytest.mark.integration

#: The simulator's deployment of type "null": cam add-on, 2 cameras, no mistyproxy.
NULL_WD = "f06c8740-fb20-4d2f-a3b4-9d5e3c2a0c51"
#: The Misty arena of the seed's tutorial: cam, mistyproxy, drive.
MISTY_WD = "3a65acd4-4aef-4ffc-b7f9-d50e48fc5541"


class Lab:
    """The running simulator, broker and actor of this module."""

    def __init__(self, line: Line, base_uri: str, token: str, state_file: Path) -> None:
        self.line = line
        self.base_uri = base_uri
        self.token = token
        self.state_file = state_file

    def sim(self, method: str, path: str, body: Any = None) -> Any:
        """Call one of the simulator's test endpoints (``/_sim/...``)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_uri + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def fault(self, kind: str, **fields: Any) -> None:
        """Inject one fault (fires once unless ``count`` says otherwise)."""
        self.sim("POST", "/_sim/faults", {"kind": kind, "count": 1, **fields})

    def clear_faults(self) -> None:
        self.sim("DELETE", "/_sim/faults")

    def apic(self, bus: Any) -> APIClient:
        return APIClient(bus=bus, service="lab", timeout=scaled(20))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("remotelab")
    processes = Processes()
    try:
        token_file = tmp / "sim-token"
        sim = processes.start(
            "-m",
            "actors.remotelab.simulator",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            str(token_file),
            "--state-dir",
            str(tmp / "sandboxes"),
            "--ready-delay-s",
            "0.3",
            "--addon-delay-s",
            "0.2",
            stdout=subprocess.PIPE,
        )
        ready = wait_ready_line(sim, scaled(20))
        state_file = tmp / "state" / "lab.json"
        endpoints = Endpoints.fresh()
        actor = {
            "name": "lab",
            "kind": "remotelab",
            "options": {
                "base_uri": ready["base_uri"],
                "api_token_file": str(token_file),
                "state_file": str(state_file),
                "request_timeout_s": 1.0,
                "retries": 2,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.2,
                "ready_poll_s": 0.1,
                "ssh_connect_timeout_s": 3.0,
                "ssh_auth_timeout_s": 5.0,
            },
        }
        config = write_config(tmp / "lab.toml", endpoints, [actor], heartbeat_s=0.5)
        line = Line(config, endpoints, processes)
        line.start_broker()
        line.start_actor("lab")
        yield Lab(line, ready["base_uri"], token_file.read_text().strip(), state_file)
    finally:
        processes.cleanup()


@pytest.fixture
def bus(lab: Lab) -> Iterator[Any]:
    lab.clear_faults()
    with lab.line.client(timeout=20) as client:
        yield client


def _wait_active(status: Any) -> None:
    deadline = time.monotonic() + scaled(10)
    while status()["status"] != "active":
        assert time.monotonic() < deadline, "add-on never became active"
        time.sleep(0.05)


def _ready_instance(apic: APIClient, wd: str = NULL_WD) -> Instance:
    rri = Instance(wdeployment_id=wd, apic=apic)
    rri.wait_until_ready(timeout=scaled(20))
    return rri


class TestTutorial:
    def test_the_seed_tutorial_over_the_bus(self, lab: Lab, bus: Any, tmp_path: Path) -> None:
        """Deployments, an instance, READY, details, a camera frame, SSH exec, put/get, terminate."""
        apic = lab.apic(bus)
        found = apic.get_wdeployments(query="misty")
        assert {d["id"] for d in found} >= {MISTY_WD}
        assert set(found[0]) == {"id", "type", "region", "queuelen"}
        info = apic.get_wdeployment_info(NULL_WD)
        assert "cam" in info["supported_addons"]

        rri = Instance(wdeployment_id=NULL_WD, apic=apic)
        statuses: list[str] = []
        details = rri.wait_until_ready(
            timeout=scaled(20), on_status=lambda status, _s: statuses.append(status)
        )
        assert statuses[0] == "INIT" and statuses[-1] == "READY"
        assert rri.get_status() == "READY"
        conn = rri.get_details()["conn"]
        assert details["conn"] == conn and conn["type"] == "sshtun"
        assert isinstance(conn["port"], int) and conn["hostkeys"]

        rri.activate_addon_cam()
        deadline = time.monotonic() + scaled(10)
        while rri.status_addon_cam()["status"] != "active":
            assert time.monotonic() < deadline, "cam add-on never became active"
            time.sleep(0.1)
        frame = rri.get_snapshot_cam()
        assert frame["format"] == "JPEG" and frame["coding"] is None
        assert frame["data"][:2] == b"\xff\xd8" and frame["data"][-2:] == b"\xff\xd9"
        assert isinstance(rri.get_snapshot_cam(coding="base64")["data"], str)
        if importlib.util.find_spec("numpy") and importlib.util.find_spec("PIL"):
            array = rri.get_snapshot_cam(dformat="ndarray")
            assert array["format"] == "ndarray" and array["data"].shape[2] == 3
            assert array["data"].dtype.name == "uint8"

        rri.start_sshclient()
        assert rri.exec_ssh("pwd").strip()
        local = tmp_path / "up.bin"
        local.write_bytes(os.urandom(100_000))
        seen: list[tuple[int, int]] = []
        attrs = rri.put_file(local, "up.bin", progress=lambda d, t: seen.append((d, t)))
        assert attrs.st_size == 100_000 and seen[-1] == (100_000, 100_000)
        assert rri.exec_ssh("wc -c < up.bin").strip() == b"100000"
        rri.get_file("up.bin", tmp_path / "down.bin")
        assert (tmp_path / "down.bin").read_bytes() == local.read_bytes()

        rri.terminate()
        assert apic.get_instance_info(rri.id)["status"] == "TERMINATED"
        assert rri.id not in apic.get_instances()
        assert rri.id in apic.get_instances(include_terminated=True)

    def test_exec_streams_output_stderr_and_exit_status(self, lab: Lab, bus: Any) -> None:
        """stdout and stderr arrive as progress while the command runs; its exit status comes back."""
        rri = _ready_instance(lab.apic(bus))
        try:
            rri.start_sshclient()
            chunks: list[tuple[str, bytes]] = []
            _, out, err = rri.exec_ssh(
                "echo one; echo two >&2; sleep 0.2; echo three",
                get_files=True,
                on_output=lambda s, d: chunks.append((s, d)),
            )
            assert out.read() == b"one\nthree\n" and err.read() == b"two\n"
            assert ("stderr", b"two\n") in chunks
            result = bus.call(
                "lab", "exec_ssh", {"instance_id": rri.id, "command": "exit 3"}, timeout=10
            )
            assert result["exit_status"] == 3
        finally:
            rri.terminate()

    def test_exec_timeout_and_cancel(self, lab: Lab, bus: Any) -> None:
        """A command past its timeout is stopped (TimeoutError); a cancelled one too."""
        rri = _ready_instance(lab.apic(bus))
        try:
            rri.start_sshclient()
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                rri.exec_ssh("sleep 30", timeout=0.5)
            assert time.monotonic() - started < scaled(5)
            call = bus.start(
                "lab",
                "exec_ssh",
                {"instance_id": rri.id, "command": "echo go; sleep 30"},
                timeout=20,
            )
            first = next(iter(call.updates(timeout=scaled(10))))
            assert first == {"stream": "stdout", "data": b"go\n"}
            call.cancel()
            with pytest.raises(Cancelled):
                call.result()
            assert rri.exec_ssh("echo still usable") == b"still usable\n"
        finally:
            rri.terminate()

    def test_addons_firewall_reservations_and_vpn(self, lab: Lab, bus: Any) -> None:
        """mistyproxy URLs change on each activation; drive commands, firewall rules and a
        reservation; a VPN client comes with its ovpn text; vnc starts and stops."""
        apic = lab.apic(bus)
        rri = Instance(wdeployment_id=MISTY_WD, apic=apic)
        try:
            rri.wait_until_ready(timeout=scaled(20))
            assert rri.status_addon_mistyproxy() == {"status": "notfound"}
            urls = []
            for _ in range(2):
                rri.activate_addon_mistyproxy()
                deadline = time.monotonic() + scaled(10)
                while (status := rri.status_addon_mistyproxy())["status"] != "active":
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                urls.append(status["url"])
                rri.deactivate_addon_mistyproxy()
            assert urls[0] != urls[1] and len(urls[0]) == 2
            rri.activate_addon_drive()
            _wait_active(rri.status_addon_drive)
            rri.send_drive_command({"linearv": 0.1, "angularv": 0})
            rri.send_drive_command()
            rri.add_firewall_rule("DROP", "10.0.0.0/8")
            rri.add_firewall_rule("ACCEPT")
            assert [r["action"] for r in rri.get_firewall_rules()] == ["DROP", "ACCEPT"]
            rri.flush_firewall_rules()
            assert rri.get_firewall_rules() == []
            with pytest.raises(Error, match="unrecognized firewall action"):
                rri.add_firewall_rule("ALLOW")
            reservation = apic.request_instance(MISTY_WD, reserve=True)
            assert reservation["success"] is False
            assert reservation["id"] in [r["id"] for r in apic.get_reservations()]
            apic.cancel_reservation(reservation["id"])
            assert reservation["id"] not in [r["id"] for r in apic.get_reservations()]
        finally:
            rri.terminate()
        vpn = apic.request_instance(NULL_WD, vpn=True)
        try:
            assert "-----BEGIN RSA PRIVATE KEY-----" in vpn["sshkey"]
            rri = Instance(instance_id=vpn["id"], apic=apic)
            rri.wait_until_ready(timeout=scaled(20))
            client = apic.get_vpn_newclient(vpn["id"])
            assert client["client_id"] and client["ovpn"]
            rri.activate_addon_vnc()
            _wait_active(rri.status_addon_vnc)
            rri.start_addon_vnc()
            rri.stop_addon_vnc()
            rri.deactivate_addon_vnc()
            assert rri.status_addon_vnc() == {"status": "notfound"}
        finally:
            apic.terminate_instance(vpn["id"])

    def test_paging_types_and_instance_by_type(self, lab: Lab, bus: Any) -> None:
        """Paged lists come back as (items, page_count); Instance(workspace_types=...) takes the
        first deployment of those types; attaching by id reads its status."""
        apic = lab.apic(bus)
        page, count = apic.get_wdeployments(max_per_page=1, page=2)
        assert len(page) == 1 and count == 3
        assert [d["id"] for d in apic.get_wdeployments(types=["null"])] == [NULL_WD]
        assert "null" in apic.get_wtypes()
        rri = Instance(workspace_types=["null"], apic=apic)
        try:
            again = Instance(instance_id=rri.id, apic=apic)
            assert again.get_status() in ("INIT", "READY")
            ids, pages = apic.get_instances(max_per_page=10)
            assert rri.id in ids and pages == 1
        finally:
            rri.terminate()
        with pytest.raises(ValueError):
            Instance(apic=apic)
        # The tutorial's APIClient(api_token=...) works; the token stays here, the actor's is used.
        assert "null" in APIClient(api_token="not-sent", bus=bus, service="lab").get_wtypes()


class TestFaults:
    def test_wrong_token(self, lab: Lab, bus: Any) -> None:
        """A refused token is WrongAuthToken on any endpoint; the next call works."""
        apic = lab.apic(bus)
        lab.fault("wrong_token")
        with pytest.raises(WrongAuthToken, match="wrong authorization token") as caught:
            apic.get_wtypes()
        assert caught.value.details["status"] == 400
        assert "null" in apic.get_wtypes()

    def test_5xx_html_is_retried_for_a_get_and_typed_for_a_post(self, lab: Lab, bus: Any) -> None:
        """A GET is retried past one 502 page; a POST is not retried and fails device_unavailable."""
        apic = lab.apic(bus)
        lab.fault("http_5xx", path="/workspaces")
        assert "null" in apic.get_wtypes()
        lab.fault("http_5xx", path="/new/", status=500)
        with pytest.raises(Error) as caught:
            apic.request_instance(NULL_WD)
        assert caught.value.code == "device_unavailable"
        assert caught.value.details["status"] == 500
        assert apic.get_wdeployment_info(NULL_WD)["queuelen"] == 0

    def test_slow_answer_is_a_device_timeout(self, lab: Lab, bus: Any) -> None:
        """An answer later than request_timeout_s (and its retries) fails device_timeout."""
        apic = lab.apic(bus)
        lab.fault("slow", path="/workspaces", delay_s=3.0, count=3)
        started = time.monotonic()
        with pytest.raises(Error) as caught:
            apic.get_wtypes()
        assert caught.value.code == "device_timeout"
        assert time.monotonic() - started < scaled(6)
        lab.clear_faults()
        assert "null" in apic.get_wtypes()

    def test_busy_deployment_busy_instance_and_unknown_instance(self, lab: Lab, bus: Any) -> None:
        """BusyWorkspaceDeployment, BusyWorkspaceInstance and InstanceNotFound, as named."""
        apic = lab.apic(bus)
        lab.fault("busy_deployments")
        with pytest.raises(BusyWorkspaceDeployment):
            Instance(wdeployment_id=NULL_WD, apic=apic)
        rri = Instance(wdeployment_id=NULL_WD, apic=apic)
        with pytest.raises(BusyWorkspaceDeployment):  # the deployment holds one instance
            apic.request_instance(NULL_WD)
        lab.fault("busy_instance")
        with pytest.raises(BusyWorkspaceInstance):
            rri.terminate()
        rri.terminate()
        with pytest.raises(InstanceNotFound):
            apic.get_instance_info("no-such-instance")
        with pytest.raises(InstanceNotFound):
            Instance(instance_id="no-such-instance", apic=apic)


class TestSsh:
    def test_dead_connection_is_reopened(self, lab: Lab, bus: Any) -> None:
        """After the server cuts the connection, the next exec re-opens it."""
        rri = _ready_instance(lab.apic(bus))
        try:
            rri.start_sshclient()
            assert rri.exec_ssh("echo a") == b"a\n"
            lab.sim("POST", f"/_sim/instance/{rri.id}/ssh/drop")
            time.sleep(0.2)
            assert rri.exec_ssh("echo b") == b"b\n"
        finally:
            rri.terminate()

    def test_drop_mid_transfer_is_typed_and_the_next_transfer_works(
        self, lab: Lab, bus: Any, tmp_path: Path
    ) -> None:
        """A connection cut during put_file fails it device_unavailable; the retry succeeds."""
        rri = _ready_instance(lab.apic(bus))
        try:
            rri.start_sshclient()
            local = tmp_path / "big.bin"
            local.write_bytes(os.urandom(512 * 1024))
            lab.fault("ssh_drop", after_bytes=64 * 1024)
            with pytest.raises(Error) as caught:
                rri.put_file(local, "big.bin")
            assert caught.value.code == "device_unavailable"
            assert rri.put_file(local, "big.bin").st_size == 512 * 1024
            with pytest.raises(FileNotFoundError):
                rri.get_file("no-such-file", tmp_path / "x")
        finally:
            rri.terminate()

    def test_instances_and_ssh_survive_an_actor_restart(self, lab: Lab, bus: Any) -> None:
        """Killed and started again, the actor re-attaches from its state file (0600)."""
        rri = _ready_instance(lab.apic(bus))
        try:
            rri.start_sshclient()
            rri.exec_ssh("echo before > mark.txt")
            assert lab.state_file.stat().st_mode & 0o077 == 0
            assert lab.token not in lab.state_file.read_text()
            old = lab.line.actors["lab"]
            old.send_signal(signal.SIGKILL)
            old.wait(timeout=10)
            lab.line.start_actor("lab")
            assert rri.id in bus.call("lab", "describe")["instances"]
            assert rri.exec_ssh("cat mark.txt") == b"before\n"
        finally:
            rri.terminate()

    def test_an_instance_ended_elsewhere_is_forgotten(self, lab: Lab, bus: Any) -> None:
        """Terminated behind the actor's back, the instance leaves its state file when seen."""
        apic = lab.apic(bus)
        booked = apic.request_instance(NULL_WD)
        assert booked["id"] in bus.call("lab", "describe")["instances"]
        request = urllib.request.Request(
            f"{lab.base_uri}/terminate/{booked['id']}",
            method="POST",
            headers={"Authorization": f"Bearer {lab.token}"},
        )
        urllib.request.urlopen(request, timeout=5).close()
        assert apic.get_instance_info(booked["id"])["status"] == "TERMINATED"
        assert booked["id"] not in bus.call("lab", "describe")["instances"]
        assert booked["id"] not in lab.state_file.read_text()

    def test_token_and_keys_never_in_describe(self, lab: Lab, bus: Any) -> None:
        """describe says where the token comes from, never the token or a key."""
        text = json.dumps(bus.call("lab", "describe"), default=str)
        assert lab.token not in text and "PRIVATE KEY" not in text
        assert bus.call("lab", "describe")["api"]["token"] == "options"
