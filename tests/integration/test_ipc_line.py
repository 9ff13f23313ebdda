"""A line whose broker also listens on Unix sockets (``[broker] ipc_dir``, ``bus.ipc``).

The config's TCP endpoints lead nowhere in these tests: the broker is told to bind other ports
(``--bind``), so an actor run from the config reaches it through the ``ipc_dir`` sockets or not
at all. Real processes; in the secured pass the sockets carry CURVE, as the TCP ones do.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from bus import ipc
from tests.conftest import (
    ECHO,
    Endpoints,
    Line,
    Processes,
    scaled,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration


def _broker(line: Line, binds: Endpoints, stderr: int | None = None) -> subprocess.Popen[bytes]:
    """``linebus broker`` of the line's config, bound to ``binds`` instead of its endpoints."""
    return line.processes.start(
        *("-m", "bus.cli", "broker", "--config", str(line.config)),
        *("--bind", binds.command, "--publish-bind", binds.publish),
        *("--subscribe-bind", binds.subscribe),
        stderr=stderr,
    )


#: Heartbeats slow enough that an actor's death noticed within a second was noticed by its
#: closed connection, not by its silence (declared down after 2.5 x this).
HEARTBEAT_S = 4.0


@pytest.fixture
def ipc_line(tmp_path: Path, processes: Processes) -> Line:
    """A line with ``ipc_dir = "run"``; its ``endpoints`` are the Unix sockets."""
    config = write_config(
        tmp_path / "line.toml",
        Endpoints.fresh(),  # nobody binds these
        [{"name": "echo1", **ECHO}],
        heartbeat_s=HEARTBEAT_S,
        broker={"ipc_dir": "run"},
    )
    local = ipc.endpoints(tmp_path / "run")
    return Line(config, Endpoints(**local), processes)


def test_an_actor_of_the_config_is_called_and_heard_over_the_unix_sockets(
    ipc_line: Line,
) -> None:
    ipc_line.broker = _broker(ipc_line, Endpoints.fresh())
    ipc_line.wait_broker()
    ipc_line.start_actor("echo1")
    with ipc_line.client() as bus, bus.subscribe("echo1.") as sub:
        sub.wait_ready()
        assert bus.call("echo1", "add", a=2, b=3) == 5
        assert bus.call("echo1", "length", data=b"\x01" * 300_000) == 300_000
        bus.call("echo1", "emit", event="tick", count=2, data=7)
        first, second = sub.next(scaled(5)), sub.next(scaled(5))
    assert (first.topic, first.data, second.seq - first.seq) == ("echo1.tick", 7, 1)
    # Stopped in order, the broker takes its sockets away (libzmq would leave them).
    folder = Path(ipc_line.config).parent / "run"
    assert sorted(p.name for p in folder.iterdir()) == ["command", "publish", "subscribe"]
    ipc_line.broker.terminate()
    assert ipc_line.broker.wait(timeout=scaled(15)) == 0
    assert list(folder.iterdir()) == []


def test_a_second_broker_on_the_same_ipc_dir_refuses_and_the_first_keeps_its_sockets(
    ipc_line: Line,
) -> None:
    ipc_line.broker = _broker(ipc_line, Endpoints.fresh())
    ipc_line.wait_broker()
    ipc_line.start_actor("echo1")
    second = _broker(ipc_line, Endpoints.fresh(), stderr=subprocess.PIPE)
    _, err = second.communicate(timeout=scaled(30))
    assert second.returncode != 0
    assert b"another broker listens on" in err and b"/run/command" in err
    with ipc_line.client() as bus:
        assert bus.call("echo1", "echo", value="still here") == "still here"


def test_a_broker_killed_leaves_its_sockets_and_the_next_one_takes_them_over(
    ipc_line: Line,
) -> None:
    ipc_line.broker = _broker(ipc_line, Endpoints.fresh())
    ipc_line.wait_broker()
    actor = ipc_line.start_actor("echo1")
    ipc_line.broker.send_signal(signal.SIGKILL)
    ipc_line.broker.wait(timeout=scaled(10))
    assert (Path(ipc_line.config).parent / "run" / "command").is_socket()  # left behind
    ipc_line.broker = _broker(ipc_line, Endpoints.fresh())
    ipc_line.wait_broker()
    ipc_line.wait_up("echo1", pid=actor.pid)  # the same process came back, over the socket
    with ipc_line.client() as bus:
        assert bus.call("echo1", "add", a=1, b=1) == 2


def test_an_actor_killed_is_noticed_by_its_closed_socket_not_its_silence(ipc_line: Line) -> None:
    ipc_line.broker = _broker(ipc_line, Endpoints.fresh())
    ipc_line.wait_broker()
    actor = ipc_line.start_actor("echo1")
    with ipc_line.client() as bus:
        actor.send_signal(signal.SIGKILL)
        killed = time.monotonic()

        def down() -> bool:
            return any(r["name"] == "echo1" and r["state"] != "up" for r in bus.services())

        wait_until(down, scaled(HEARTBEAT_S * 2.5), "echo1 declared down")
        assert time.monotonic() - killed < HEARTBEAT_S * 2.5 / 2
