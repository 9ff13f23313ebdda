"""The remote-lab simulator's own logic, in-process: fault specs, the command line, the JPEG
encoder, HTTP odds the published client never exercises (every endpoint refuses a foreign token,
unknown routes, test endpoints), and the SSH server's SFTP confinement and mid-download drop.
The published client against the simulator process is tests/integration/
test_remotelab_published_client.py.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import requests

from actors.remotelab.sim_ssh import _ClientResets, _quiet_client_resets
from actors.remotelab.simulator import (
    BUSY_DEPLOYMENTS_MESSAGE,
    DEFAULT_DEPLOYMENTS,
    WRONG_TOKEN_MESSAGE,
    ApiError,
    Fault,
    RemoteLabSimulator,
    _parse_args,
)
from actors.simsupport.jpeg import FRAME_HEIGHT, FRAME_WIDTH, camera_frame, encode_jpeg

TOKEN = "unit-test-token"
WD = DEFAULT_DEPLOYMENTS[0].id


@pytest.fixture
def sim() -> Iterator[RemoteLabSimulator]:
    with RemoteLabSimulator(token=TOKEN, ready_delay_s=60, addon_delay_s=0) as simulator:
        yield simulator


def _call(
    sim: RemoteLabSimulator,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    body: Any = None,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with requests.Session() as session:
        session.trust_env = False  # loopback, whatever HTTP(S)_PROXY says
        return session.request(method, sim.base_uri + path, headers=headers, json=body, timeout=10)


def _connect(info: dict[str, Any], private_key: str) -> paramiko.SSHClient:
    """An SSH client to the instance ``info`` describes, checking its published host key."""
    host, port = info["fwd"]["ipv4"], info["fwd"]["port"]
    key_type, key_b64, _ = info["hostkeys"][0].split(" ")
    ssh = paramiko.SSHClient()
    host_key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    ssh.get_host_keys().add(f"[{host}]:{port}", key_type, host_key)
    ssh.connect(
        host,
        port=port,
        username="root",
        pkey=paramiko.RSAKey.from_private_key(io.StringIO(private_key)),
        look_for_keys=False,
        allow_agent=False,
    )
    return ssh


def test_fault_specs() -> None:
    assert Fault.parse("slow:delay_s=3,count=2,path=/instances") == Fault(
        "slow", count=2, path="/instances", delay_s=3.0
    )
    assert Fault.parse("wrong_token") == Fault("wrong_token", count=-1)
    assert Fault.from_json({"kind": "http_5xx", "status": 503}).status == 503
    for bad in ("nope", "slow:delay_s", "slow:kind=x", "slow:bogus=1", "http_5xx:status=404"):
        with pytest.raises(ValueError):
            Fault.parse(bad)
    with pytest.raises(ValueError):
        Fault.from_json({"count": 1})


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse_args(
        ["--listen", "127.0.0.1:0", "--token-file", "t", "--fault", "ssh_drop:after_bytes=10"]
    )
    assert (args.host, args.port) == ("127.0.0.1", 0)
    assert args.faults == [Fault("ssh_drop", after_bytes=10)]
    for argv in (["--listen", "nowhere"], ["--fault", "nope"]):
        with pytest.raises(SystemExit) as exited:
            _parse_args(["--token-file", "t", *argv])
        assert exited.value.code == 2
    assert "unknown fault" in capsys.readouterr().err


def _sof0(data: bytes) -> tuple[int, int, int]:
    offset = 2
    while True:
        marker, length = struct.unpack(">HH", data[offset : offset + 4])
        if marker == 0xFFC0:
            height, width, components = struct.unpack(">HHB", data[offset + 5 : offset + 10])
            return width, height, components
        offset += 2 + length


def test_jpeg_frames() -> None:
    frame = camera_frame(0, 1.0)
    assert frame[:2] == b"\xff\xd8" and frame[-2:] == b"\xff\xd9"
    assert _sof0(frame) == (FRAME_WIDTH, FRAME_HEIGHT, 3)
    assert camera_frame(0, 1.0) == frame
    assert camera_frame(0, 2.0) != frame  # the bar moves
    assert camera_frame(1, 1.0) != frame  # another camera, another tint
    odd = encode_jpeg(3, 2, bytes(range(18)))  # sides that are not multiples of 8
    assert _sof0(odd) == (3, 2, 3)
    with pytest.raises(ValueError):
        encode_jpeg(2, 2, b"\x00" * 11)


def test_jpeg_decodes_with_pillow() -> None:
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not a linebus dependency")
    image = image_module.open(io.BytesIO(camera_frame(0, 1.0)))
    image.load()
    assert image.mode == "RGB" and image.size == (FRAME_WIDTH, FRAME_HEIGHT)
    red, green, blue = image.getpixel((0, 0))
    assert red < 8 and green < 8 and abs(blue - 96) < 8
    assert image.getpixel((4, 20)) == pytest.approx((255, 255, 255), abs=8)  # the bar at t=1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/workspaces"),
        ("GET", "/deployments?info=t"),
        ("GET", f"/deployment/{WD}"),
        ("GET", "/instances"),
        ("POST", f"/new/{WD}"),
        ("POST", "/terminate/x"),
        ("GET", "/addon/cam/x/0/img"),
        ("GET", "/_sim/state"),
    ],
)
def test_every_endpoint_refuses_a_foreign_token(
    sim: RemoteLabSimulator, method: str, path: str
) -> None:
    for token in ("someone-else", "", None):
        answer = _call(sim, method, path, token=token)
        assert answer.status_code == 400
        assert answer.json() == {"error_message": WRONG_TOKEN_MESSAGE}
    assert sim.state()["instances"] == {}


def test_http_odds(sim: RemoteLabSimulator) -> None:
    assert _call(sim, "GET", "//workspaces").status_code == 200  # trailing-slash base_uri
    assert _call(sim, "GET", "/nowhere").json() == {"error_message": "not found"}
    assert _call(sim, "PUT", "/workspaces").status_code == 405
    assert _call(sim, "GET", "/deployments?maxlen=x").status_code == 400
    assert _call(sim, "GET", "/deployments?max_per_page=x").status_code == 400
    bad_key = _call(sim, "POST", f"/new/{WD}", body={"sshkey": "ssh-rsa notbase64", "reserve": 0})
    assert bad_key.status_code == 400 and "bad sshkey" in bad_key.json()["result_message"]
    assert _call(sim, "POST", "/new/nothing", body={}).status_code == 404

    created = _call(sim, "POST", f"/new/{WD}", body={"reserve": False}).json()
    instance_id = created["id"]
    info = _call(sim, "GET", f"/instance/{instance_id}").json()
    assert info["status"] == "INIT" and "fwd" not in info and "hostkeys" not in info
    assert _call(sim, "POST", f"/addon/cam/{instance_id}").status_code == 400  # not READY yet
    assert _call(sim, "POST", f"/vpn/{instance_id}").status_code == 400
    assert _call(sim, "GET", f"/instance/{instance_id}/sshkey").json() == {"key": created["sshkey"]}
    assert (
        _call(sim, "POST", "/_sim/instance/nope/status", body={"status": "READY"}).status_code
        == 404
    )
    assert (
        _call(sim, "POST", f"/_sim/instance/{instance_id}/status", body={"status": "X"}).status_code
        == 400
    )
    assert _call(sim, "POST", f"/_sim/instance/{instance_id}/status", body={"status": "READY"}).ok
    assert _call(sim, "GET", f"/instance/{instance_id}").json()["fwd"]["port"] > 0
    busy = _call(sim, "POST", f"/new/{WD}", body={"reserve": False})
    assert busy.status_code == 503 and busy.json() == {"result_message": BUSY_DEPLOYMENTS_MESSAGE}

    assert (
        _call(sim, "POST", f"/firewall/{instance_id}", body={"action": "NOPE"}).status_code == 400
    )
    assert _call(
        sim, "POST", f"/firewall/{instance_id}", body={"action": "DROP", "src": "10.0.0.1"}
    ).ok
    assert _call(sim, "GET", f"/firewall/{instance_id}").json() == {
        "rules": [{"action": "DROP", "source": "10.0.0.1"}]
    }
    assert _call(sim, "DELETE", f"/firewall/{instance_id}").ok
    assert _call(sim, "GET", f"/firewall/{instance_id}").json() == {"rules": []}
    assert _call(sim, "POST", f"/addon/vnc/{instance_id}").status_code == 400  # not supported
    assert _call(sim, "POST", f"/addon/drive/{instance_id}").ok
    assert _call(sim, "POST", f"/addon/drive/{instance_id}/tx", body={"linearv": 1}).ok
    assert sim.state()["instances"][instance_id]["drive_commands"] == [{"linearv": 1}]
    assert _call(sim, "DELETE", f"/addon/drive/{instance_id}").ok
    assert _call(sim, "DELETE", f"/addon/drive/{instance_id}").status_code == 404
    assert _call(sim, "GET", f"/vpn/{instance_id}").json() == {"status": "nil"}

    assert _call(sim, "POST", "/_sim/faults", body={"kind": "nope"}).status_code == 400
    sim.add_fault(Fault("http_5xx", count=1, status=503, path="/workspaces"))
    assert _call(sim, "GET", "/deployments").ok  # another path: not this fault's
    broken = _call(sim, "GET", "/workspaces")
    assert broken.status_code == 503 and broken.headers["Content-Type"] == "text/html"
    assert _call(sim, "GET", "/workspaces").ok
    assert _call(sim, "POST", f"/terminate/{instance_id}").ok
    assert _call(sim, "POST", f"/terminate/{instance_id}").ok  # again: still fine
    assert [r["status"] for r in sim.state()["requests"][-2:]] == [200, 200]
    with pytest.raises(ApiError) as unknown:
        sim.drop_ssh("nope")
    assert unknown.value.status == 404


def test_sftp_is_confined_and_a_download_can_be_cut(sim: RemoteLabSimulator) -> None:
    created = _call(sim, "POST", f"/new/{WD}", body={"reserve": False}).json()
    instance_id = created["id"]
    sim.set_status(instance_id, "READY")
    info = _call(sim, "GET", f"/instance/{instance_id}").json()

    def connect() -> paramiko.SSHClient:
        return _connect(info, created["sshkey"])

    ssh = connect()
    try:
        sftp = ssh.open_sftp()
        assert sftp.normalize(".") == "/"
        assert sftp.normalize("../../etc") == "/etc"  # inside the sandbox: no way out
        with pytest.raises(FileNotFoundError):
            sftp.stat("/etc/passwd")
        with sftp.open("/etc/hosts", "rb") as handle:  # as on an instance (the tutorial's file)
            assert handle.read().startswith(b"127.0.0.1\tlocalhost\n")
        sftp.mkdir("sub")
        with sftp.open("sub/data.bin", "wb") as handle:
            handle.write(b"x" * 200_000)
        sftp.rename("sub/data.bin", "/sub/moved.bin")
        assert sftp.listdir("/sub") == ["moved.bin"]
        sim.add_fault(Fault("ssh_drop", count=1, after_bytes=50_000, path=instance_id))
        with (
            pytest.raises((OSError, EOFError, paramiko.SSHException)),
            sftp.open("sub/moved.bin", "rb") as handle,
        ):
            handle.read()
    finally:
        ssh.close()
    ssh = connect()  # a new connection after the cut
    try:
        sftp = ssh.open_sftp()
        with sftp.open("sub/moved.bin", "rb") as handle:
            assert len(handle.read()) == 200_000
        sftp.remove("sub/moved.bin")
        sftp.rmdir("sub")
        assert sftp.listdir(".") == ["etc"]  # what a sandbox starts with: etc/hosts
        assert sim.drop_ssh(instance_id) == 1  # cut from the outside, as the test hook does
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            sftp.listdir(".")
    finally:
        ssh.close()
    assert sim.state()["instances"][instance_id]["ssh_drops"] == 2


def test_an_instance_ends_after_its_duration(sim: RemoteLabSimulator) -> None:
    created = _call(sim, "POST", f"/new/{WD}", body={"reserve": False, "expire_d": 0.2}).json()
    deadline = time.monotonic() + 10
    while (info := _call(sim, "GET", f"/instance/{created['id']}").json())[
        "status"
    ] != "TERMINATED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "endtime" in info
    assert _call(sim, "GET", f"/deployment/{WD}").json()["queuelen"] == 0


def test_instances_outlive_a_restart_of_the_simulator(tmp_path: Path) -> None:
    """With a state directory, a new simulator process takes the instances (and keys) back."""
    with RemoteLabSimulator(token=TOKEN, state_dir=tmp_path, ready_delay_s=60) as first:
        created = _call(first, "POST", f"/new/{WD}", body={"reserve": False}).json()
        instance_id = created["id"]
        first.set_status(instance_id, "READY")
        before = _call(first, "GET", f"/instance/{instance_id}").json()
        ended = _call(first, "POST", f"/new/{DEFAULT_DEPLOYMENTS[1].id}", body={}).json()["id"]
        assert _call(first, "POST", f"/terminate/{ended}").ok
        reserved = _call(first, "POST", f"/new/{WD}", body={"reserve": True}).json()
        assert reserved["success"] is False
    state_file = tmp_path / "simulator.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    saved = json.loads(state_file.read_text())["instances"]
    assert created["sshkey"] in [i["private_key"] for i in saved]  # so the file is private
    (tmp_path / "instances" / instance_id / "kept.txt").write_text("still here\n")

    with RemoteLabSimulator(token=TOKEN, state_dir=tmp_path, ready_delay_s=60) as second:
        after = _call(second, "GET", f"/instance/{instance_id}").json()
        assert after["status"] == "READY" and after["hostkeys"] == before["hostkeys"]
        assert after["starttime"] == before["starttime"]
        assert _call(second, "GET", f"/instance/{ended}").json()["status"] == "TERMINATED"
        assert _call(second, "GET", "/instances").json()["workspace_instances"] == [instance_id]
        assert _call(second, "GET", f"/deployment/{WD}").json()["queuelen"] == 1
        assert [r["id"] for r in _call(second, "GET", "/reservations").json()["reservations"]] == [
            reserved["id"]
        ]
        ssh = _connect(after, created["sshkey"])
        try:
            _, stdout, _ = ssh.exec_command("cat kept.txt")
            assert stdout.read() == b"still here\n"
        finally:
            ssh.close()


def test_a_client_that_resets_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """paramiko's server transport logs a client's reset as an ERROR; the simulator lets every
    other record of that logger through (and installs its filter once however often asked)."""
    transport_log = logging.getLogger("paramiko.transport")
    _quiet_client_resets()
    _quiet_client_resets()
    try:
        with caplog.at_level(logging.DEBUG, logger="paramiko.transport"):
            transport_log.error("Socket exception: Connection reset by peer (104)")
            transport_log.error("Socket exception: Broken pipe (32)")
        messages = [r.getMessage() for r in caplog.records if r.name == "paramiko.transport"]
        assert messages == ["Socket exception: Broken pipe (32)"]
        assert sum(isinstance(f, _ClientResets) for f in transport_log.filters) == 1
    finally:
        for installed in [f for f in transport_log.filters if isinstance(f, _ClientResets)]:
            transport_log.removeFilter(installed)
