"""A broker's Unix-socket endpoints: the quicker way in for the processes on its own host.

With ``[broker] ipc_dir = "/run/linebus"`` the broker binds each of its three sockets twice: on
its TCP endpoint, for other hosts, and on ``ipc:///run/linebus/command`` (``publish``,
``subscribe``) for the actors and clients beside it. A round trip over a Unix socket skips the
kernel's TCP work on both ends: on a 2-core machine 5-10 % more commands per second, and a
lower worst-case latency beside bulk transfers (docs/BENCHMARKS.md, "Fifth session of
2026-12-06").
The sockets carry the same protocol with the same security: CURVE and the access list apply to
a socket, whatever its transport.

The layout is fixed (``bus.protocol.IPC_ROLES``), so a client given ``ipc://DIR/command`` finds
the subscribe socket beside it (``bus.protocol.subscribe_beside``), as ``tcp://host:P`` finds
``P + 2``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path
from typing import Final

from bus.errors import ConfigError
from bus.protocol import IPC_ROLES

__all__ = [
    "MAX_PATH_BYTES",
    "SocketFiles",
    "claim",
    "endpoints",
    "listening",
    "unsafe_directory",
]

#: Longest Unix socket path Linux accepts (``sun_path`` is 108 bytes with its final NUL).
MAX_PATH_BYTES: Final = 107


def endpoints(folder: Path) -> dict[str, str]:
    """The broker's ``ipc://`` endpoints in ``folder``, by role.

    Raises:
        ConfigError: a socket's path would be longer than a Unix socket path can be.
    """
    found = {role: folder / role for role in IPC_ROLES}
    size, longest = max((len(os.fsencode(path)), path) for path in found.values())
    if size > MAX_PATH_BYTES:
        raise ConfigError(
            f"ipc_dir {str(folder)!r} is too long: the socket {str(longest)!r} would be"
            f" {size} bytes, and a Unix socket path holds at most"
            f" {MAX_PATH_BYTES}; choose a shorter directory, e.g. /run/linebus"
        )
    return {role: f"ipc://{path}" for role, path in found.items()}


def listening(folder: Path) -> bool:
    """Whether a broker's command socket is in ``folder`` (its host is this one)."""
    try:
        return stat.S_ISSOCK(os.stat(folder / IPC_ROLES[0]).st_mode)
    except OSError:
        return False


def claim(folder: Path) -> None:
    """Make ``folder`` ready for a broker's sockets, or refuse: before any socket is bound.

    libzmq removes whatever sits at an ``ipc://`` path before it binds there, so without this
    check a second broker given the same directory would silently take the first one's
    sockets from it (two brokers on one TCP port fail; this makes ipc fail the same way).
    A socket file nobody listens on (a broker that was killed) is left for libzmq to replace.

    The directory itself must be safe to listen in: whoever may replace a file in it could put
    a socket of their own where the line's processes connect. So it must belong to this user or
    root, and not be writable by every user unless sticky (as /tmp is: then only a file's owner
    may remove or rename it). A group may write to it: a group of the line's users.

    Raises:
        ConfigError: the directory cannot be made or is not safe (``unsafe_directory``), a path
            in it is not a socket, or a live broker listens there.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        found = os.stat(folder)
    except OSError as exc:
        raise ConfigError(f"ipc_dir {str(folder)!r}: cannot create it ({exc.strerror})") from None
    problem = unsafe_directory(found, os.geteuid())
    if problem is not None:
        raise ConfigError(
            f"ipc_dir {str(folder)!r} is {problem}: another user could replace the broker's"
            " sockets there; choose a directory of the broker's user (e.g. /run/linebus)"
        )
    for role in IPC_ROLES:
        path = folder / role
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(mode):
            raise ConfigError(
                f"ipc_dir {str(folder)!r}: {str(path)!r} exists and is not a socket;"
                " the broker will not replace it"
            )
        if _answers(path):
            raise ConfigError(
                f"ipc_dir {str(folder)!r}: another broker listens on {str(path)!r}"
                " (stop it, or give this line another ipc_dir)"
            )


def unsafe_directory(found: os.stat_result, uid: int) -> str | None:
    """Why a directory with the status ``found`` is no place for the sockets of a broker run by
    ``uid`` (see ``claim``); None if it is one."""
    if not stat.S_ISDIR(found.st_mode):
        return "not a directory"
    if found.st_uid not in (uid, 0):
        return f"owned by another user (uid {found.st_uid})"
    if found.st_mode & stat.S_IWOTH and not found.st_mode & stat.S_ISVTX:
        return "writable by every user (and not sticky)"
    return None


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fsencode(path))
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise ConfigError(f"cannot check the socket {str(path)!r}: {exc.strerror}") from None
        return True


class SocketFiles:
    """The socket files a broker bound in its ``ipc_dir``, removed when it stops.

    libzmq leaves them behind; a broker that stops in order takes them away, so that no actor
    started later on this host takes them for a broker that is there. Each is removed only if
    it is still the file this broker bound (a file put there since, by whatever, stays).
    """

    def __init__(self, folder: Path) -> None:
        self._bound: dict[Path, tuple[int, int]] = {}
        for role in IPC_ROLES:
            path = folder / role
            with contextlib.suppress(OSError):
                found = os.lstat(path)
                self._bound[path] = (found.st_dev, found.st_ino)

    def remove(self) -> None:
        """Remove the files that are still this broker's; once."""
        bound, self._bound = self._bound, {}
        for path, identity in bound.items():
            with contextlib.suppress(OSError):
                found = os.lstat(path)
                if (found.st_dev, found.st_ino) == identity:
                    path.unlink()
