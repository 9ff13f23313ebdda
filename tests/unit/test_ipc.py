"""``bus.ipc``: the layout of a broker's Unix sockets, and the checks before it binds them."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bus import ipc
from bus.client import default_endpoints
from bus.config import loads
from bus.errors import ConfigError
from bus.protocol import subscribe_beside


@contextmanager
def listener(path: Path) -> Iterator[socket.socket]:
    """A Unix socket listening at ``path`` (as a live broker's is)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen()
        yield sock


def stale_socket(path: Path) -> None:
    """Leave a socket file nobody listens on (as a broker killed with SIGKILL does)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


class TestLayout:
    def test_each_role_has_its_socket_in_the_folder(self) -> None:
        assert ipc.endpoints(Path("/run/linebus")) == {
            "command": "ipc:///run/linebus/command",
            "publish": "ipc:///run/linebus/publish",
            "subscribe": "ipc:///run/linebus/subscribe",
        }

    def test_a_folder_too_long_for_a_socket_path_is_refused_with_the_limit(self) -> None:
        folder = Path("/" + "d" * (ipc.MAX_PATH_BYTES - len("/subscribe")))  # one byte over
        with pytest.raises(
            ConfigError, match="108 bytes, and a Unix socket path holds at most 107"
        ):
            ipc.endpoints(folder)
        ipc.endpoints(Path(str(folder)[:-1]))  # the longest that fits

    @pytest.mark.parametrize(
        ("command", "subscribe"),
        [
            ("tcp://10.0.0.5:7750", "tcp://10.0.0.5:7752"),
            ("ipc:///run/linebus/command", "ipc:///run/linebus/subscribe"),
            ("ipc:///run/other", None),  # not a broker's layout
            ("inproc://x", None),
        ],
    )
    def test_the_subscribe_socket_is_found_beside_the_command_one(
        self, command: str, subscribe: str | None
    ) -> None:
        assert subscribe_beside(command) == subscribe

    def test_a_client_given_only_the_ipc_command_endpoint_subscribes_beside_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("LINEBUS_SUBSCRIBE", raising=False)
        assert default_endpoints("ipc:///run/l/command") == (
            "ipc:///run/l/command",
            "ipc:///run/l/subscribe",
        )


class TestClaim:
    def test_the_folder_is_made(self, tmp_path: Path) -> None:
        ipc.claim(tmp_path / "a" / "b")
        assert (tmp_path / "a" / "b").is_dir()

    def test_a_live_broker_s_socket_is_not_taken(self, tmp_path: Path) -> None:
        with (
            listener(tmp_path / "publish"),
            pytest.raises(ConfigError, match=r"another broker listens on .*/publish"),
        ):
            ipc.claim(tmp_path)

    def test_a_dead_broker_s_socket_is_left_for_the_bind_to_replace(self, tmp_path: Path) -> None:
        stale_socket(tmp_path / "command")
        ipc.claim(tmp_path)
        assert (tmp_path / "command").is_socket()

    def test_a_file_that_is_no_socket_is_not_replaced(self, tmp_path: Path) -> None:
        (tmp_path / "subscribe").write_text("keep me")
        with pytest.raises(ConfigError, match="exists and is not a socket"):
            ipc.claim(tmp_path)
        assert (tmp_path / "subscribe").read_text() == "keep me"

    def test_a_folder_every_user_may_write_to_is_refused_unless_sticky(
        self, tmp_path: Path
    ) -> None:
        folder = tmp_path / "open"
        folder.mkdir()
        folder.chmod(0o777)
        with pytest.raises(ConfigError, match=r"writable by every user .*replace the broker's"):
            ipc.claim(folder)
        folder.chmod(0o1777)  # as /tmp: only a file's owner may remove or rename it
        ipc.claim(folder)
        folder.chmod(0o770)  # a group of the line's users
        ipc.claim(folder)

    @pytest.mark.parametrize(
        ("mode", "owner", "problem"),
        [
            (stat.S_IFDIR | 0o755, 1000, None),  # the broker's user's
            (stat.S_IFDIR | 0o755, 0, None),  # root's: /run
            (stat.S_IFDIR | 0o755, 1001, "owned by another user (uid 1001)"),
            (stat.S_IFDIR | 0o757, 1000, "writable by every user (and not sticky)"),
            (stat.S_IFDIR | 0o1777, 0, None),
            (stat.S_IFREG | 0o644, 1000, "not a directory"),
        ],
    )
    def test_who_may_replace_the_sockets_decides(
        self, mode: int, owner: int, problem: str | None
    ) -> None:
        found = os.stat_result((mode, 0, 0, 2, owner, 0, 4096, 0, 0, 0))
        assert ipc.unsafe_directory(found, uid=1000) == problem

    def test_a_folder_that_cannot_be_made_is_named(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(ConfigError, match="cannot create it"):
            ipc.claim(tmp_path / "file" / "run")


class TestConfig:
    def test_a_relative_ipc_dir_is_taken_from_the_config_s_folder(self, tmp_path: Path) -> None:
        config = loads('[broker]\nipc_dir = "run"\n', str(tmp_path / "line.toml"))
        assert config.broker.ipc_dir == tmp_path / "run"
        assert config.broker.ipc_endpoints()["command"] == f"ipc://{tmp_path}/run/command"

    def test_without_ipc_dir_there_are_no_ipc_endpoints(self) -> None:
        assert loads("").broker.ipc_endpoints() == {}

    def test_a_too_long_ipc_dir_fails_the_config(self) -> None:
        with pytest.raises(ConfigError, match=r"line.toml \[broker\]: ipc_dir .* is too long"):
            loads(f'[broker]\nipc_dir = "/{"x" * 120}"\n', "line.toml")

    def test_a_process_on_the_broker_s_host_reaches_it_over_the_socket(
        self, tmp_path: Path
    ) -> None:
        config = loads(f'[broker]\nipc_dir = "{tmp_path}"\n')
        with listener(tmp_path / "command"):
            assert config.broker.endpoints_from_here() == ipc.endpoints(tmp_path)

    def test_elsewhere_without_the_broker_s_socket_it_takes_the_tcp_endpoints(
        self, tmp_path: Path
    ) -> None:
        config = loads(f'[broker]\nipc_dir = "{tmp_path}"\ncommand = "tcp://10.1.2.3:7750"\n')
        (tmp_path / "command").write_text("")  # a file, but no socket: not a broker's
        assert config.broker.endpoints_from_here() == {
            "command": "tcp://10.1.2.3:7750",
            "publish": "tcp://127.0.0.1:7751",
            "subscribe": "tcp://127.0.0.1:7752",
        }


class TestSocketFiles:
    def test_the_files_bound_are_removed_and_a_successor_s_is_kept(self, tmp_path: Path) -> None:
        for role in ("command", "publish"):
            stale_socket(tmp_path / role)  # "subscribe" was never bound: nothing to record
        files = ipc.SocketFiles(tmp_path)
        stale_socket(tmp_path / "other")
        (tmp_path / "other").replace(tmp_path / "publish")  # put there since: not ours
        files.remove()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["publish"]
        files.remove()  # a second stop removes nothing more
        assert (tmp_path / "publish").is_socket()
