"""The published rerobots client (PyPI ``rerobots`` 0.11.0) against the remote-lab simulator.

One simulator process (``python -m actors.remotelab.simulator``) serves the module; the client
talks to it as it would to https://api.rerobots.net: the seed's tutorial end to end (deployments,
an instance, READY, details, a camera frame, SSH exec, put/get, terminate), its exception types
on errors, and the injected faults (slow answers, non-JSON 5xx, wrong token, busy deployments and
instances, INIT_FAIL, an SSH connection cut mid-transfer).
"""

from __future__ import annotations

import base64
import os
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
import requests

from tests.conftest import ROOT, scaled, wait_ready_line

rerobots_api = pytest.importorskip("rerobots.api", reason="the `test` extra installs rerobots")
import rerobots  # noqa: E402  (after the importorskip that explains a missing install)

pytestmark = pytest.mark.integration

MISTY = "3a65acd4-4aef-4ffc-b7f9-d50e48fc5541"  # the tutorial's deployment (basic_misty2fieldtrial)
FIXED = "2c0873b5-1da1-46e6-9658-c40379774edf"  # fixed_misty2
NULL = "f06c8740-fb20-4d2f-a3b4-9d5e3c2a0c51"  # type null, two cameras, no mistyproxy


@dataclass
class Lab:
    """The running simulator: where it is, its token, and its test endpoints."""

    base_uri: str
    token: str
    token_file: Path
    ready: dict[str, Any]

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = requests.request(
            method,
            self.base_uri + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=scaled(10),
        )
        answer.raise_for_status()
        return answer.json()

    def fault(self, kind: str, **values: Any) -> None:
        self.control("POST", "/_sim/faults", {"kind": kind, **values})

    def apic(self, **kwargs: Any) -> Any:
        return rerobots_api.APIClient(api_token=self.token, base_uri=self.base_uri, **kwargs)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("rlsim")
    token_file = home / "token"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actors.remotelab.simulator",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            str(token_file),
            "--state-dir",
            str(home / "state"),
            "--ready-delay-s",
            "0.3",
            "--addon-delay-s",
            "0.2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        ready = wait_ready_line(proc, scaled(20))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the client honours HTTP(S)_PROXY
            patch.delenv("REROBOTS_API_TOKEN", raising=False)
            yield Lab(ready["base_uri"], token_file.read_text().strip(), token_file, ready)
    finally:
        proc.terminate()
        try:
            proc.wait(scaled(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def lab(simulator: Lab) -> Iterator[Lab]:
    """The module's simulator, with no fault armed and every instance terminated afterwards."""
    simulator.control("DELETE", "/_sim/faults")
    yield simulator
    simulator.control("DELETE", "/_sim/faults")
    for instance_id, info in simulator.control("GET", "/_sim/state")["instances"].items():
        if info["status"] in ("INIT", "READY"):
            simulator.control("POST", f"/terminate/{instance_id}")


def _wait_status(rri: Any, wanted: str, timeout: float = 10) -> None:
    end = time.monotonic() + scaled(timeout)
    while (status := rri.get_status()) != wanted:
        assert time.monotonic() < end, f"instance still {status}, wanted {wanted}"
        time.sleep(0.05)


def _jpeg_frame(data: bytes) -> tuple[int, int, int]:
    """(width, height, components) from a baseline JPEG's SOF0, checking its structure."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    offset = 2
    while offset < len(data):
        marker, length = struct.unpack(">HH", data[offset : offset + 4])
        if marker == 0xFFC0:
            height, width, components = struct.unpack(">HHB", data[offset + 5 : offset + 10])
            return width, height, components
        assert marker >> 8 == 0xFF and marker != 0xFFDA, f"no SOF0 before {marker:#06x}"
        offset += 2 + length
    raise AssertionError("no SOF0 segment")


def test_tutorial_end_to_end(lab: Lab, tmp_path: Path) -> None:
    """The seed's tutorial, step by step, with the published client and its Instance class."""
    apic = lab.apic()
    found = apic.get_wdeployments(query="misty")
    assert {d["id"] for d in found} == {MISTY, FIXED}
    assert all(set(d) == {"id", "type", "region", "queuelen"} for d in found)
    info = apic.get_wdeployment_info(MISTY)
    assert info["type"] == "basic_misty2fieldtrial"
    assert "cam" in info["supported_addons"] and info["queuelen"] == 0

    rri = rerobots.Instance(wdeployment_id=MISTY, apic=apic)
    assert rri.get_status() == "INIT"
    assert apic.get_wdeployment_info(MISTY)["queuelen"] == 1  # the deployment is now busy
    _wait_status(rri, "READY")
    details = rri.get_details()
    assert details["status"] == "READY" and details["type"] == "basic_misty2fieldtrial"
    conn = details["conn"]
    assert conn["type"] == "sshtun" and conn["ipv4"] == "127.0.0.1"
    assert isinstance(conn["port"], int) and conn["port"] != 22
    assert conn["hostkeys"][0].startswith("ecdsa-sha2-nistp256 AAAA")

    rri.activate_addon_cam()
    end = time.monotonic() + scaled(10)
    while rri.status_addon_cam()["status"] != "active":
        assert time.monotonic() < end
        time.sleep(0.05)
    snapshot = rri.get_snapshot_cam()
    assert snapshot["success"] is True and snapshot["format"] == "JPEG"
    assert isinstance(snapshot["data"], bytes) and snapshot["coding"] is None
    assert _jpeg_frame(snapshot["data"]) == (64, 48, 3)  # RGB: the ndarray path reshapes (h, w, 3)
    as_jpeg = rri.get_snapshot_cam(dformat="jpeg")
    assert as_jpeg["format"] == "JPEG"

    rri.start_sshclient()
    sandbox = lab.control("GET", "/_sim/state")["instances"][rri._id]["sandbox"]
    assert rri.exec_ssh("pwd") == f"{sandbox}\n".encode()
    payload = os.urandom(100_000)  # several 32 KiB SFTP writes, and a prefetched get
    (tmp_path / "local.bin").write_bytes(payload)
    attrs = rri.put_file(str(tmp_path / "local.bin"), "remote.bin")
    assert attrs.st_size == len(payload)
    assert rri.exec_ssh("wc -c < remote.bin").strip() == b"100000"
    rri.get_file("remote.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == payload
    assert rri.exec_ssh("cat remote.bin") == payload

    assert apic.get_instances() == [rri._id]
    rri.terminate()
    assert rri.get_status() == "TERMINATED"
    assert "endtime" in apic.get_instance_info(rri._id)
    assert rri._id not in apic.get_instances()
    assert rri._id in apic.get_instances(include_terminated=True)
    assert apic.get_wdeployment_info(MISTY)["queuelen"] == 0  # free again


def test_exec_streams_stdout_stderr_and_exit_status(lab: Lab) -> None:
    rri = rerobots.Instance(wdeployment_id=FIXED, apic=lab.apic())
    _wait_status(rri, "READY")
    rri.start_sshclient()
    try:
        stdin, stdout, stderr = rri.exec_ssh(
            "read x; echo out $x; echo err >&2; exit 3", get_files=True
        )
        stdin.write("hello\n")
        stdin.flush()
        stdin.channel.shutdown_write()
        assert stdout.read() == b"out hello\n"
        assert stderr.read() == b"err\n"
        assert stdout.channel.recv_exit_status() == 3
        with pytest.raises(TimeoutError):  # the client's timeout; the server kills the command
            rri.exec_ssh("sleep 30", timeout=0.3)
    finally:
        rri.terminate()


def test_ssh_accepts_only_the_issued_key_and_publishes_its_host_key(lab: Lab) -> None:
    apic = lab.apic()
    mine = paramiko.RSAKey.generate(2048)
    answer = apic.request_instance(FIXED, sshkey=f"ssh-rsa {mine.get_base64()} me@test")
    assert answer["success"] is True and "sshkey" not in answer  # a key was given: none issued
    instance_id = answer["id"]
    end = time.monotonic() + scaled(10)
    while (info := apic.get_instance_info(instance_id))["status"] != "READY":
        assert time.monotonic() < end
        time.sleep(0.05)
    host, port = info["fwd"]["ipv4"], info["fwd"]["port"]
    key_type, key_b64, _ = info["hostkeys"][0].split(" ")

    def client(host_key: paramiko.PKey) -> paramiko.SSHClient:
        ssh = paramiko.SSHClient()
        ssh.get_host_keys().add(f"[{host}]:{port}", key_type, host_key)
        return ssh

    published = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    ssh = client(published)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            ssh.connect(
                host,
                port=port,
                username="root",
                pkey=paramiko.RSAKey.generate(2048),
                look_for_keys=False,
                allow_agent=False,
                timeout=5,
            )
    finally:
        ssh.close()
    ssh = client(published)
    try:
        with pytest.raises(paramiko.AuthenticationException):  # the right key, another user
            ssh.connect(
                host, port=port, username="pi", pkey=mine, look_for_keys=False, allow_agent=False
            )
    finally:
        ssh.close()
    ssh = client(paramiko.ECDSAKey.generate())  # a host key other than the published one
    try:
        with pytest.raises(paramiko.BadHostKeyException):
            ssh.connect(
                host, port=port, username="root", pkey=mine, look_for_keys=False, allow_agent=False
            )
    finally:
        ssh.close()
    ssh = client(published)
    try:
        ssh.connect(
            host, port=port, username="root", pkey=mine, look_for_keys=False, allow_agent=False
        )
        _, stdout, _ = ssh.exec_command("echo ok")
        assert stdout.read() == b"ok\n"
    finally:
        ssh.close()
    apic.terminate_instance(instance_id)


def test_listing_filters_and_paging(lab: Lab) -> None:
    apic = lab.apic()
    assert sorted(apic.get_wtypes()) == ["basic_misty2fieldtrial", "fixed_misty2", "null"]
    everything = apic.get_wdeployments()
    assert {d["id"] for d in everything} == {MISTY, FIXED, NULL}
    assert [d["id"] for d in apic.get_wdeployments(types=["null"])] == [NULL]
    assert NULL not in {d["id"] for d in apic.get_wdeployments(types=["!null"])}
    pages = [apic.get_wdeployments(max_per_page=2, page=page) for page in (1, 2, 9)]
    assert [len(items) for items, _ in pages] == [2, 1, 1]  # a page past the last is the last
    assert {count for _, count in pages} == {2}
    assert apic.get_wdeployments(max_per_page=0) == (everything, 1)

    rri = rerobots.Instance(workspace_types=["null"], apic=apic)
    try:
        assert {d["id"] for d in apic.get_wdeployments(maxlen=0)} == {MISTY, FIXED}
        assert apic.get_wdeployments(types=["null"])[0]["queuelen"] == 1
        assert apic.get_instances(max_per_page=1) == ([rri._id], 1)
    finally:
        rri.terminate()
    assert apic.get_instances() == []
    ids, count = apic.get_instances(include_terminated=True, max_per_page=1, page=1)
    assert ids == [rri._id] and count >= 1  # newest first


def test_addons_mistyproxy_and_vpn(lab: Lab) -> None:
    apic = lab.apic()
    answer = apic.request_instance(MISTY, vpn=True, duration=600, event_url="http://x.invalid/")
    instance_id = answer["id"]
    assert answer["sshkey"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    request = lab.control("GET", "/_sim/state")["instances"][instance_id]["request"]
    assert request == {
        "vpn": True,
        "reserve": False,
        "expire_d": 600,
        "eurl": "http://x.invalid/",
    }
    rri = rerobots.Instance(instance_id=instance_id, apic=apic)
    _wait_status(rri, "READY")
    assert rri.status_addon_mistyproxy() == {"status": "notfound"}
    rri.activate_addon_mistyproxy()
    first = rri.status_addon_mistyproxy()
    assert first["status"] in ("starting", "active") and len(first["url"]) == 2
    with pytest.raises(rerobots_api.Error, match="already applied"):
        rri.activate_addon_mistyproxy()
    rri.deactivate_addon_mistyproxy()
    assert rri.status_addon_mistyproxy() == {"status": "notfound"}
    rri.activate_addon_mistyproxy()
    second = rri.status_addon_mistyproxy()
    assert set(second["url"]).isdisjoint(first["url"])  # new URLs on each activation

    with pytest.raises(rerobots_api.Error, match="not found, or cam add-on not active"):
        rri.get_snapshot_cam()
    one, two = rri.get_vpn_newclient(), rri.get_vpn_newclient()
    assert one["client_id"] != two["client_id"]
    assert one["ovpn"].startswith("client\n") and "remote 127.0.0.1 1194" in one["ovpn"]
    apic.terminate_instance(instance_id)


def test_errors_are_the_clients_exception_types(lab: Lab) -> None:
    apic = lab.apic()
    stranger = rerobots_api.APIClient(api_token="not-the-token", base_uri=lab.base_uri)
    with pytest.raises(rerobots_api.WrongAuthToken):
        stranger.get_instances()
    anonymous = rerobots_api.APIClient(base_uri=lab.base_uri, ignore_env=True)
    with pytest.raises(rerobots_api.WrongAuthToken):
        anonymous.get_instances()
    with pytest.raises(rerobots_api.InstanceNotFound):
        apic.get_instance_info("00000000-0000-0000-0000-000000000000")
    with pytest.raises(rerobots_api.Error, match="instance not found"):
        apic.terminate_instance("00000000-0000-0000-0000-000000000000")

    rri = rerobots.Instance(wdeployment_id=FIXED, apic=apic)
    with pytest.raises(rerobots_api.BusyWorkspaceDeployment):
        rerobots.Instance(wdeployment_id=FIXED, apic=apic)
    with pytest.raises(rerobots_api.BusyWorkspaceDeployment):  # by type: no other is free
        apic.request_instance("fixed_misty2")
    reserved = apic.request_instance("fixed_misty2", reserve=True)
    assert reserved["success"] is False
    assert [r["id"] for r in apic.get_reservations()] == [reserved["id"]]
    apic.cancel_reservation(reserved["id"])

    lab.fault("busy_instance", count=1)
    with pytest.raises(rerobots_api.BusyWorkspaceInstance):
        rri.terminate()
    rri.terminate()
    assert rri.get_status() == "TERMINATED"


def test_faults(lab: Lab, tmp_path: Path) -> None:
    apic = lab.apic()
    lab.fault("wrong_token", count=1, path="/instances")
    with pytest.raises(rerobots_api.WrongAuthToken):
        apic.get_instances()
    assert apic.get_instances() == []

    lab.fault("http_5xx", count=2)
    with pytest.raises(rerobots_api.Error, match="502 Bad Gateway") as caught:
        apic.get_instances()
    assert type(caught.value) is rerobots_api.Error
    with pytest.raises(rerobots_api.Error, match=r"^Response 502: b'<html>"):
        apic.request_instance(NULL)

    lab.fault("slow", count=1, delay_s=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):  # what a deadline sees
        requests.get(
            lab.base_uri + "/workspaces",
            headers={"Authorization": f"Bearer {lab.token}"},
            timeout=0.3,
        )
    started = time.monotonic()
    assert apic.get_wtypes()  # the fault fired once
    assert time.monotonic() - started < 0.9

    lab.fault("busy_deployments", count=1)
    with pytest.raises(rerobots_api.BusyWorkspaceDeployment):
        apic.request_instance(NULL)

    lab.fault("init_fail", count=1)
    failed = rerobots.Instance(wdeployment_id=NULL, apic=apic)
    assert failed.get_status() == "INIT_FAIL"
    with pytest.raises(Exception, match="instance not ready"):
        failed.start_sshclient()

    rri = rerobots.Instance(wdeployment_id=NULL, apic=apic)  # the failed one freed it
    _wait_status(rri, "READY")
    rri.start_sshclient()
    (tmp_path / "big.bin").write_bytes(os.urandom(300_000))
    lab.fault("ssh_drop", count=1, after_bytes=100_000, path=rri._id)
    with pytest.raises((OSError, EOFError, paramiko.SSHException)):
        rri.put_file(str(tmp_path / "big.bin"), "big.bin")
    rri.stop_sshclient()
    state = lab.control("GET", "/_sim/state")["instances"][rri._id]
    assert state["ssh_drops"] == 1
    rri.start_sshclient()  # the instance is still there: a new connection works
    rri.put_file(str(tmp_path / "big.bin"), "big.bin")
    assert rri.exec_ssh("wc -c < big.bin").strip() == b"300000"
    assert lab.control("POST", f"/_sim/instance/{rri._id}/ssh/drop") == {"dropped": 1}
    with pytest.raises((OSError, EOFError, paramiko.SSHException)):
        rri.exec_ssh("true")
    rri.terminate()


def test_token_file_is_created_private_and_never_printed(lab: Lab) -> None:
    assert stat.S_IMODE(lab.token_file.stat().st_mode) == 0o600
    assert len(lab.token) >= 16
    assert lab.token not in repr(lab.ready)
    assert lab.ready["deployments"] == [FIXED, MISTY, NULL] or set(lab.ready["deployments"]) == {
        FIXED,
        MISTY,
        NULL,
    }


# Pillow 13 deprecates Image.getdata(), which the published client's ndarray path calls.
@pytest.mark.filterwarnings("ignore:.*getdata.*:DeprecationWarning")
def test_tutorial_snapshot_as_ndarray(lab: Lab) -> None:
    """The tutorial's ``get_snapshot_cam(dformat='ndarray')``: Pillow decodes the frame."""
    pytest.importorskip("numpy", reason="the published client's ndarray path needs numpy")
    pytest.importorskip("PIL.Image", reason="Pillow is not a linebus dependency")
    rri = rerobots.Instance(wdeployment_id=NULL, apic=lab.apic())
    try:
        _wait_status(rri, "READY")
        rri.activate_addon_cam()
        end = time.monotonic() + scaled(10)
        while rri.status_addon_cam()["status"] != "active":
            assert time.monotonic() < end
            time.sleep(0.05)
        for camera in (0, 1):
            res = rri.get_snapshot_cam(camera_id=camera, dformat="ndarray")
            assert res["format"] == "ndarray" and res["data"].shape == (48, 64, 3)
            assert res["data"].dtype.name == "uint8"
        with pytest.raises(rerobots_api.Error, match="not found, or cam add-on not active"):
            rri.get_snapshot_cam(camera_id=2)
    finally:
        rri.terminate()
