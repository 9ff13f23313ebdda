"""The remote-lab driver against the simulator, in-process: the SSH trust rules (the published
host key or nothing, the issued key or nothing), and the HTTP session's reuse of connections."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from actors.remotelab import protocol, sim_ssh
from actors.remotelab.config import RemoteLabOptions
from actors.remotelab.driver import ApiSession, SshSession
from actors.remotelab.protocol import Api, InstanceConnection
from actors.remotelab.simulator import RemoteLabSimulator
from bus.errors import DeviceFault
from bus.options import from_table

pytestmark = pytest.mark.integration

NULL_WD = "f06c8740-fb20-4d2f-a3b4-9d5e3c2a0c51"


@pytest.fixture
def sim() -> Iterator[RemoteLabSimulator]:
    with RemoteLabSimulator(token="driver-test", ready_delay_s=0.05) as simulator:
        yield simulator


def _config(sim: RemoteLabSimulator) -> RemoteLabOptions:
    return from_table(
        RemoteLabOptions,
        {"base_uri": sim.base_uri, "api_token": sim.token, "ssh_connect_timeout_s": 3.0},
        "t",
        noun="option",
    )


def _ready(http: ApiSession, api: Api, deadline: float) -> tuple[str, str, InstanceConnection]:
    booked = http.call(api.request_instance(NULL_WD), protocol.parse_new_instance, deadline)
    while True:
        info = http.call(
            api.get_instance_info(booked["id"]), protocol.parse_instance_info, deadline
        )
        conn = InstanceConnection.from_info(info)
        if info["status"] == "READY" and conn is not None:
            return booked["id"], booked["sshkey"], conn
        time.sleep(0.05)


def test_ssh_trusts_only_the_published_host_key_and_the_issued_key(
    sim: RemoteLabSimulator,
) -> None:
    """A host key other than the published one is refused (BadHostKeyException), as is a key
    other than the issued one (AuthenticationException); with both right, exec and SFTP work."""
    config = _config(sim)
    http, api = ApiSession(config), Api(sim.token)
    try:
        deadline = time.monotonic() + 20
        _, key, conn = _ready(http, api, deadline)
        stranger = paramiko.ECDSAKey.generate()
        forged = InstanceConnection(
            conn.ipv4, conn.port, f"{stranger.get_name()} {stranger.get_base64()} x"
        )
        session = SshSession(forged, key, config)
        with pytest.raises(DeviceFault) as caught:
            session.connect()
        assert caught.value.details["exception"] == "BadHostKeyException"
        session.close()

        other_key = paramiko.RSAKey.generate(2048)
        with io.StringIO() as pem:
            other_key.write_private_key(pem)
            wrong = SshSession(conn, pem.getvalue(), config)
        with pytest.raises(DeviceFault) as caught:
            wrong.connect()
        assert caught.value.details["exception"] == "AuthenticationException"
        wrong.close()

        good = SshSession(conn, key, config)
        try:
            cancel = threading.Event()
            result = good.exec("echo hi; echo err >&2; exit 2", deadline, cancel)
            assert (result.exit_status, result.stdout, result.stderr) == (2, b"hi\n", b"err\n")
            assert good.put("f.bin", b"x" * 100_000, deadline, cancel) == 100_000
            assert good.get("f.bin", deadline, cancel) == b"x" * 100_000
            assert good.connects == 1
        finally:
            good.close()
    finally:
        http.close()


def test_http_reuses_one_connection(sim: RemoteLabSimulator) -> None:
    """Many calls, one TCP connection (the published client opens one per call)."""
    config = _config(sim)
    http, api = ApiSession(config), Api(sim.token)
    try:
        deadline = time.monotonic() + 10
        for _ in range(5):
            assert "null" in http.call(api.get_wtypes(), protocol.parse_wtypes, deadline)
        adapter = http._session.get_adapter(sim.base_uri)
        pools = list(adapter.poolmanager.pools._container.values())
        assert len(pools) == 1 and pools[0].num_connections == 1
    finally:
        http.close()


def test_a_command_that_ends_before_the_exec_answer_still_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paramiko answers an exec request from its transport thread after the server's
    check_channel_exec_request returned. Here that thread is held back until the command has
    run (as a loaded machine may do): the server must not close the channel before the answer
    has gone, or the client's exec_command fails with "Channel closed." though the command ran."""
    original = sim_ssh._Server.check_channel_exec_request

    def answered_late(self: Any, channel: paramiko.Channel, command: bytes) -> bool:
        accepted = original(self, channel, command)
        # Until the server closed the channel (at once, before the fix), or 0.5 s.
        channel.status_event.wait(0.5)
        return accepted

    monkeypatch.setattr(sim_ssh._Server, "check_channel_exec_request", answered_late)
    host_key, client_key = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    server = sim_ssh.SandboxSSHServer(
        sandbox=tmp_path, host_key=host_key, authorized_key=client_key
    )
    server.start()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            server.host,
            server.port,
            username="root",
            pkey=client_key,
            timeout=10,
            allow_agent=False,
            look_for_keys=False,
        )
        _, stdout, _ = client.exec_command("echo ran", timeout=10)
        assert stdout.read() == b"ran\n"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()
        server.stop()
