"""The simulator's SSH side: one paramiko SSH/SFTP server per instance on a loopback port.

What a rerobots instance offers its user (reference/rerobots-client.md §6-7): user ``root``,
public-key authentication with the one key the API issued (or the one the request supplied), a
host key the API publishes in ``hostkeys[0]``, ``exec`` requests with stdout, stderr, EOF and an
exit status, and the ``sftp`` subsystem. Nothing else: no password, no pty, no shell, no
forwarding.

Commands run as the simulator's own user through ``/bin/sh -c`` with ``cwd`` and ``HOME`` set to
the instance's sandbox directory; stdin is forwarded until the client sends EOF, and a command
whose channel closes (the client's cancel or timeout) is killed with its process group. SFTP is
confined to the sandbox: ``/`` is the sandbox and a relative path starts there too, so a file put
as ``x.txt`` is the file a command sees as ``x.txt``; absolute paths differ between the two (a
command's ``/tmp`` is the host's), which is the simulator's one deliberate departure.

Fault: when a file is opened over SFTP, ``drop_budget()`` (the simulator's ``ssh_drop`` fault) may
give a byte count; the TCP connection is cut once that transfer has moved that many bytes, as a
dropped network link would.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import paramiko
import structlog
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.pkey import PublicBlob
from paramiko.sftp import SFTP_FAILURE, SFTP_OK
from paramiko.sftp_attr import SFTPAttributes

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["SandboxSSHServer", "host_key_line", "public_key_from_line"]

log = structlog.get_logger()

_CHUNK = 32 * 1024
_EXEC_POLL_S = 0.1
_CLOSE_GRACE_S = 1.0  # how long a finished command's channel waits for the client to close it


class _ClientResets(logging.Filter):
    """Keeps a client's reset out of the error log of paramiko's server transports.

    A client that closes while the server's last messages are still on their way (the
    channel-close answer to its own close) resets the connection, and paramiko logs that as an
    ERROR "Socket exception: Connection reset by peer". sshd logs a reset client at INFO; so
    does the simulator (``rlsim_ssh_client_reset``). Every other record passes.
    """

    _RESET = f"Socket exception: {os.strerror(errno.ECONNRESET)}"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(self._RESET):
            log.info("rlsim_ssh_client_reset")
            return False
        return True


def _quiet_client_resets() -> None:
    """Install ``_ClientResets`` on paramiko's transport logger, once per process."""
    transport_log = logging.getLogger("paramiko.transport")
    if not any(isinstance(f, _ClientResets) for f in transport_log.filters):
        transport_log.addFilter(_ClientResets())


def host_key_line(key: paramiko.PKey, comment: str) -> str:
    """The OpenSSH public-key line of ``key`` with single spaces, as ``hostkeys`` carries it."""
    return f"{key.get_name()} {key.get_base64()} {comment}"


def public_key_from_line(line: str) -> paramiko.PKey:
    """Parse an OpenSSH public-key line (``ssh-rsa AAAA... comment``).

    Raises:
        ValueError: not a public-key line paramiko knows.
    """
    try:
        blob = PublicBlob.from_string(line.strip())
        return paramiko.PKey.from_type_string(blob.key_type, blob.key_blob)
    except (paramiko.SSHException, ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"not an OpenSSH public key line: {exc}") from exc


class SandboxSSHServer:
    """An SSH server on ``host`` (a free port) for one instance.

    Args:
        sandbox: Working directory of commands and root of SFTP (created if missing, with an
            ``etc/hosts`` as a host has).
        host_key: The server's host key (published by the API).
        authorized_key: The only client key accepted, for user ``root``.
        host: Address to listen on.
        port: Port to listen on; 0 (or a port now taken) picks a free one at ``start()``.
        name: Label in logs (the instance id).
        drop_budget: Asked at each SFTP file open: bytes before the connection is cut, or None.
    """

    def __init__(
        self,
        *,
        sandbox: Path,
        host_key: paramiko.PKey,
        authorized_key: paramiko.PKey,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "",
        drop_budget: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.sandbox = sandbox
        self.host_key = host_key
        self.authorized_key = authorized_key
        self.name = name
        self.host, self.port = host, port
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._connections: list[tuple[paramiko.Transport, socket.socket]] = []
        self._stopping = threading.Event()
        self._commands: set[subprocess.Popen[bytes]] = set()
        self._drop_budget = drop_budget
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"rlsim-ssh-{name[:8]}", daemon=True
        )
        self.connections = 0
        self.drops = 0

    def start(self) -> None:
        """Listen (the port is then known) and accept connections from a background thread."""
        self.sandbox.mkdir(parents=True, exist_ok=True)
        # A host's own /etc/hosts, as on an instance (the tutorial downloads it with get_file).
        hosts = self.sandbox / "etc" / "hosts"
        if not hosts.exists():
            hosts.parent.mkdir(exist_ok=True)
            hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n")
        try:
            listener = socket.create_server((self.host, self.port))
        except OSError:
            if not self.port:
                raise
            listener = socket.create_server((self.host, 0))  # the old port is taken
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        _quiet_client_resets()
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close every connection (running commands are killed)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
        self.drop_connections()
        with self._lock:
            commands = list(self._commands)
        for proc in commands:  # do not leave them to the exec threads' next poll
            _kill(proc)

    def _take_drop(self) -> int | None:
        return self._drop_budget()

    def drop_connections(self) -> int:
        """Close every open SSH connection abruptly (as a network failure would); how many."""
        with self._lock:
            connections, self._connections = self._connections, []
        live = sum(transport.is_active() for transport, _ in connections)
        for _, sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for transport, sock in connections:
            transport.close()
            sock.close()
        if live:
            self.drops += 1
            log.info("rlsim_ssh_dropped", instance=self.name, connections=live)
        return live

    def _drop_socket(self, sock: socket.socket) -> None:
        """Cut one connection from a server thread (its transport thread closes itself)."""
        self.drops += 1
        log.info("rlsim_ssh_drop_mid_transfer", instance=self.name)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            try:
                transport = paramiko.Transport(sock)
                transport.add_server_key(self.host_key)
                transport.set_subsystem_handler(
                    "sftp", paramiko.SFTPServer, _SandboxSFTP, self, sock
                )
                transport.start_server(event=threading.Event(), server=_Server(self))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                log.info("rlsim_ssh_handshake_failed", instance=self.name, error=str(exc))
                sock.close()
                continue
            with self._lock:
                # Connections that ended closed their sockets themselves (paramiko does).
                self._connections = [c for c in self._connections if c[0].is_active()]
                self._connections.append((transport, sock))
            self.connections += 1


class _Server(paramiko.ServerInterface):
    def __init__(self, owner: SandboxSSHServer) -> None:
        self._owner = owner

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == "root" and key.asbytes() == self._owner.authorized_key.asbytes():
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(
            target=_run_command,
            args=(channel, command.decode("utf-8", "replace"), self._owner),
            name="rlsim-exec",
            daemon=True,
        ).start()
        return True


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _run_command(channel: paramiko.Channel, command: str, owner: SandboxSSHServer) -> None:
    """Run ``command`` in the sandbox, streaming its output; then exit status, EOF and close."""
    sandbox = owner.sandbox
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(sandbox),
        "LANG": "C.UTF-8",
        "USER": "root",
    }
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=sandbox,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        with contextlib.suppress(OSError, EOFError):
            channel.sendall_stderr(f"sh: {exc}\n".encode())
            channel.send_exit_status(127)
            channel.shutdown_write()
        _close_after_the_client(channel)
        return
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    with owner._lock:
        owner._commands.add(proc)
    pumps = [
        threading.Thread(target=_pump_out, args=(proc.stdout, channel.sendall), daemon=True),
        threading.Thread(target=_pump_out, args=(proc.stderr, channel.sendall_stderr), daemon=True),
    ]
    feeder = threading.Thread(target=_pump_in, args=(channel, proc.stdin), daemon=True)
    for thread in (*pumps, feeder):
        thread.start()
    while True:
        try:
            status = proc.wait(_EXEC_POLL_S)
            break
        except subprocess.TimeoutExpired:
            transport = channel.get_transport()
            if channel.closed or transport is None or not transport.is_active():
                _kill(proc)
    with owner._lock:
        owner._commands.discard(proc)
    for thread in pumps:
        thread.join(2)
    proc.stdout.close()
    proc.stderr.close()
    with contextlib.suppress(OSError):
        proc.stdin.close()
    with contextlib.suppress(OSError, EOFError):
        channel.send_exit_status(status if status >= 0 else 128 - status)
        channel.shutdown_write()
    _close_after_the_client(channel)
    feeder.join(2)


def _close_after_the_client(channel: paramiko.Channel) -> None:
    """Close a finished command's channel once the client closed it, or after a grace period.

    paramiko answers the exec request only after check_channel_exec_request returned, from its
    transport thread; a quick command on a loaded machine can end before that answer is sent,
    and a CLOSE that overtakes it fails the client's exec_command ("Channel closed.") though the
    command ran. The client has the exit status and EOF, so it closes first (``status_event`` is
    set when its CLOSE arrives); one that does not gets ours after the grace period.
    """
    channel.status_event.wait(_CLOSE_GRACE_S)
    channel.close()


def _pump_out(stream: IO[bytes], send: Callable[[bytes], None]) -> None:
    try:
        while chunk := os.read(stream.fileno(), _CHUNK):
            send(chunk)
    except (OSError, EOFError, ValueError):  # the channel closed: the command is being killed
        pass


def _pump_in(channel: paramiko.Channel, stdin: IO[bytes]) -> None:
    try:
        while data := channel.recv(_CHUNK):
            stdin.write(data)
            stdin.flush()
    except (OSError, EOFError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


class _SandboxSFTP(paramiko.SFTPServerInterface):
    """SFTP over the sandbox directory (``/`` is the sandbox; nothing outside is reachable)."""

    def __init__(
        self, server: paramiko.ServerInterface, owner: SandboxSSHServer, sock: socket.socket
    ) -> None:
        super().__init__(server)
        self._owner = owner
        self._sock = sock
        self._root = os.path.realpath(owner.sandbox)

    def _real(self, path: str) -> str:
        virtual = os.path.normpath("/" + path).lstrip("/")
        real = os.path.realpath(os.path.join(self._root, virtual))
        if os.path.commonpath([real, self._root]) != self._root:
            raise PermissionError(path)
        return real

    def canonicalize(self, path: str) -> str:
        return os.path.normpath("/" + path)

    def _attrs(self, path: str, *, follow: bool = True) -> SFTPAttributes | int:
        try:
            real = self._real(path)
            stat = os.stat(real) if follow else os.lstat(real)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)
        return SFTPAttributes.from_stat(stat, os.path.basename(real))

    def stat(self, path: str) -> SFTPAttributes | int:
        return self._attrs(path)

    def lstat(self, path: str) -> SFTPAttributes | int:
        return self._attrs(path, follow=False)

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        try:
            real = self._real(path)
            return [
                SFTPAttributes.from_stat(os.lstat(os.path.join(real, name)), name)
                for name in os.listdir(real)
            ]
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> paramiko.SFTPHandle | int:
        try:
            real = self._real(path)
            mode = getattr(attr, "st_mode", None) or 0o644
            fd = os.open(real, flags | getattr(os, "O_BINARY", 0), mode & 0o7777)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)
        if flags & os.O_WRONLY:
            fmode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            fmode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            fmode = "rb"
        try:
            handle_file = os.fdopen(fd, fmode)
        except OSError as exc:
            os.close(fd)
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)
        budget = self._owner._take_drop()
        return _Handle(handle_file, flags, budget, lambda: self._owner._drop_socket(self._sock))

    def remove(self, path: str) -> int:
        return self._call(os.remove, path)

    def rmdir(self, path: str) -> int:
        return self._call(os.rmdir, path)

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        return self._call(lambda real: os.mkdir(real, 0o755), path)

    def rename(self, oldpath: str, newpath: str) -> int:
        try:
            os.rename(self._real(oldpath), self._real(newpath))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)
        return SFTP_OK

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self.rename(oldpath, newpath)

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        try:
            paramiko.SFTPServer.set_file_attr(self._real(path), attr)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)
        return SFTP_OK

    def _call(self, action: Callable[[str], object], path: str) -> int:
        try:
            action(self._real(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)
        return SFTP_OK


class _Handle(paramiko.SFTPHandle):
    """An open file; with a byte budget, the connection is cut once the budget is spent."""

    def __init__(
        self, file: IO[bytes], flags: int, budget: int | None, drop: Callable[[], None]
    ) -> None:
        super().__init__(flags)
        self._file = file
        self._budget = budget
        self._drop = drop
        self.readfile = file
        self.writefile = file

    def _spend(self, count: int) -> bool:
        if self._budget is None:
            return True
        self._budget -= count
        if self._budget < 0:
            self._budget = None
            self._drop()
            return False
        return True

    def read(self, offset: int, length: int) -> bytes | int:
        if not self._spend(length):
            return SFTP_FAILURE
        return super().read(offset, length)

    def write(self, offset: int, data: ReadableBuffer) -> int:
        if not self._spend(memoryview(data).nbytes):
            return SFTP_FAILURE
        return super().write(offset, data)

    def stat(self) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.fstat(self._file.fileno()))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno or 0)

    def chattr(self, attr: SFTPAttributes) -> int:
        return SFTP_OK
