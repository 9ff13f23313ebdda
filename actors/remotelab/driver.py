"""The remote lab's I/O: HTTP to the rerobots API with requests, SSH and SFTP to instances with paramiko.

Everything here blocks; the actor runs it in worker threads and passes each call a deadline
(``time.monotonic()`` seconds) and a ``threading.Event`` that cancels it.

- ``ApiSession``: one ``requests.Session`` (connections reused), a deadline on every request,
  retries with back-off only for safe (GET) requests and for requests that never reached the
  server (no connection); every failure a typed error (``device_timeout``, ``device_unavailable``,
  or the API's own as ``protocol.ApiError``).
- ``SshSession``: one instance's SSH connection. The host key is checked against the one the API
  published (``hostkeys[0]``), never accepted blindly; the key is the one the API issued. Exec
  streams stdout and stderr as they come, with a timeout and cancel; SFTP put and get report
  progress. A dead connection is noticed (the transport is no longer active, or opening a
  channel fails) and opened again before the next operation; one that dies during an operation
  fails it with ``device_unavailable`` and is re-opened by the next.
- ``InstanceStore``: the small JSON file (0600) where the actor keeps its instances' ids, SSH
  keys and connection details, so that it re-attaches after a restart.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paramiko
import requests
import structlog
import urllib3.exceptions

from actors.remotelab.config import RemoteLabOptions
from actors.remotelab.protocol import HttpRequest, HttpResponse, InstanceConnection
from bus.backoff import Backoff
from bus.errors import (
    Cancelled,
    DeviceError,
    DeviceFault,
    DeviceTimeout,
    DeviceUnavailable,
    StorageError,
)
from bus.security.files import ensure_private, write_private_file

__all__ = ["ApiSession", "ExecResult", "InstanceRecord", "InstanceStore", "SshSession"]

log = structlog.get_logger()

T = TypeVar("T")

#: How often a running command or transfer looks at its cancel event and deadline.
_POLL_S = 0.05
_READ_BYTES = 32 * 1024
#: Paramiko's own errors, and the OS's, when a connection breaks under it.
_LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)

Output = Callable[[str, bytes], None]
Progress = Callable[[int, int], None]


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


# ---------------------------------------------------------------- HTTP


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the request cannot have reached the server (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


class ApiSession:
    """The HTTP side: sends ``HttpRequest`` s to ``base_uri`` over one ``requests.Session``."""

    def __init__(self, config: RemoteLabOptions) -> None:
        self.config = config
        self._session = requests.Session()
        self._session.verify = config.verify_tls
        self.requests_sent = 0
        self.retried = 0

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def send(
        self, request: HttpRequest, deadline: float, cancel: threading.Event | None = None
    ) -> HttpResponse:
        """Send ``request`` and return the answer (any status), retrying where that is safe.

        Raises:
            DeviceTimeout: no answer before the deadline (or ``request_timeout_s``).
            DeviceUnavailable: no connection to the API (after the retries allowed).
            Cancelled: ``cancel`` was set between attempts.
        """
        config = self.config
        backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        url = request.url(config.base_uri)
        attempts = 1 + config.retries
        for attempt in range(1, attempts + 1):
            timeout = min(config.request_timeout_s, _remaining(deadline))
            if timeout <= 0:
                raise DeviceTimeout(
                    f"{request.operation}: no answer from the API before the deadline",
                    details={"exception": "Error", "operation": request.operation},
                )
            failure: DeviceError
            retry = request.safe
            try:
                self.requests_sent += 1
                answer = self._session.request(
                    request.method,
                    url,
                    params=None,
                    data=request.body,
                    headers=dict(request.headers),
                    timeout=timeout,
                    allow_redirects=False,
                )
            except requests.Timeout as exc:
                retry = retry or isinstance(exc, requests.ConnectTimeout)
                failure = DeviceTimeout(
                    f"{request.operation}: the API did not answer within {timeout:.1f} s",
                    details={"exception": "Error", "operation": request.operation},
                )
            except requests.ConnectionError as exc:
                retry = retry or _never_sent(exc)
                failure = DeviceUnavailable(
                    f"{request.operation}: cannot reach the API at {config.base_uri}: "
                    f"{type(exc).__name__}",
                    details={"exception": "Error", "operation": request.operation},
                )
            except requests.RequestException as exc:
                raise DeviceUnavailable(
                    f"{request.operation}: {type(exc).__name__}: {exc}",
                    details={"exception": "Error", "operation": request.operation},
                ) from None
            else:
                response = HttpResponse(answer.status_code, answer.content)
                answer.close()
                if not (request.safe and response.status in (502, 503, 504)) or attempt == attempts:
                    return response
                failure = DeviceUnavailable(f"HTTP {response.status}")
            if not retry or attempt == attempts:
                raise failure
            delay = min(backoff.next_delay(), max(0.0, _remaining(deadline)))
            self.retried += 1
            log.info(
                "remotelab_http_retry",
                operation=request.operation,
                attempt=attempt,
                delay_s=round(delay, 3),
                error=failure.message,
            )
            if cancel is not None and cancel.wait(delay):
                raise Cancelled(f"{request.operation} cancelled")
            if cancel is None:
                time.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def call(
        self,
        request: HttpRequest,
        parse: Callable[[HttpRequest, HttpResponse], T],
        deadline: float,
        cancel: threading.Event | None = None,
    ) -> T:
        """Send ``request`` and parse its answer with ``parse`` (a ``protocol.parse_*``)."""
        return parse(request, self.send(request, deadline, cancel))


# ---------------------------------------------------------------- SSH


@dataclass(frozen=True, slots=True)
class ExecResult:
    """How a remote command ended, and all it wrote."""

    exit_status: int
    stdout: bytes
    stderr: bytes


def load_private_key(text: str) -> paramiko.PKey:
    """The private key the API issued (RSA as the published client needs; others accepted too)."""
    classes: tuple[type[paramiko.PKey], ...] = (
        paramiko.RSAKey,
        paramiko.ECDSAKey,
        paramiko.Ed25519Key,
    )
    for cls in classes:
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise DeviceFault(
        "the instance's SSH key is not a private key paramiko can read",
        device_code="Error",
        details={"exception": "Error"},
    )


def _lost(what: str, exc: BaseException) -> DeviceUnavailable:
    return DeviceUnavailable(
        f"SSH connection lost during {what}: {type(exc).__name__}: {exc}",
        details={"exception": "SSHException"},
    )


def _sftp_error(path: str, exc: OSError) -> DeviceFault:
    name = "FileNotFoundError" if isinstance(exc, FileNotFoundError) else "OSError"
    return DeviceFault(
        f"{path}: {exc.strerror or exc}",
        device_code=name,
        details={"exception": name, "path": path},
    )


class SshSession:
    """The SSH connection to one instance, opened on first use and re-opened when it dies.

    Args:
        conn: Where the instance's SSH server is, and the host key the API published for it.
        private_key: The private key (PEM) the API issued for the instance.
        config: Timeouts and the SFTP chunk size.
    """

    def __init__(
        self, conn: InstanceConnection, private_key: str, config: RemoteLabOptions
    ) -> None:
        self.conn = conn
        self._key = load_private_key(private_key)
        self.config = config
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        #: Connections opened, the first included.
        self.connects = 0

    @property
    def alive(self) -> bool:
        """Whether the connection is open and its transport still active."""
        client = self._client
        transport = client.get_transport() if client is not None else None
        return transport is not None and transport.is_active()

    def connect(self) -> None:
        """Open the connection (closing a dead one first), checking the server's host key.

        Raises:
            DeviceFault: the host key is not the published one (``BadHostKeyException``), or our
                key was refused (``AuthenticationException``).
            DeviceUnavailable: the server cannot be reached.
        """
        with self._lock:
            if self.alive:
                return
            self.close()
            key_type, blob = self.conn.key_type_and_data()
            try:
                hostkey = paramiko.PKey.from_type_string(key_type, blob)
            except (paramiko.SSHException, ValueError) as exc:
                raise DeviceFault(
                    f"the published host key cannot be read: {exc}",
                    device_code="SSHException",
                    details={"exception": "SSHException"},
                ) from None
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            name = (
                self.conn.ipv4 if self.conn.port == 22 else f"[{self.conn.ipv4}]:{self.conn.port}"
            )
            client.get_host_keys().add(name, key_type, hostkey)
            try:
                client.connect(
                    self.conn.ipv4,
                    port=self.conn.port,
                    username="root",
                    pkey=self._key,
                    timeout=self.config.ssh_connect_timeout_s,
                    banner_timeout=self.config.ssh_auth_timeout_s,
                    auth_timeout=self.config.ssh_auth_timeout_s,
                    look_for_keys=False,
                    allow_agent=False,
                )
            except paramiko.BadHostKeyException:
                client.close()
                raise DeviceFault(
                    f"{name} presented a host key other than the one the API published",
                    device_code="BadHostKeyException",
                    details={"exception": "BadHostKeyException"},
                ) from None
            except paramiko.AuthenticationException as exc:
                client.close()
                raise DeviceFault(
                    f"{name} refused the instance's key: {exc}",
                    device_code="AuthenticationException",
                    details={"exception": "AuthenticationException"},
                ) from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                raise DeviceUnavailable(
                    f"cannot open SSH to {name}: {type(exc).__name__}: {exc}",
                    details={"exception": "SSHException"},
                ) from None
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(max(1, round(self.config.ssh_keepalive_s)))
            self._client = client
            self.connects += 1
            if self.connects > 1:
                log.info("remotelab_ssh_reopened", host=name, connects=self.connects)

    def close(self) -> None:
        """Close SFTP and SSH; idempotent."""
        with self._lock:
            sftp, client = self._sftp, self._client
            self._sftp = self._client = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            client.close()

    def _transport(self) -> paramiko.Transport:
        self.connect()
        client = self._client
        transport = client.get_transport() if client is not None else None
        if transport is None:
            raise DeviceUnavailable("SSH connection closed", details={"exception": "SSHException"})
        return transport

    def _channel(self) -> paramiko.Channel:
        """A new session channel; a connection that proves dead is re-opened once."""
        for attempt in (1, 2):
            transport = self._transport()
            try:
                return transport.open_session(timeout=self.config.ssh_auth_timeout_s)
            except _LINK_ERRORS as exc:
                self.close()
                if attempt == 2:
                    raise _lost("open channel", exc) from None
        raise AssertionError("unreachable")

    def exec(
        self,
        command: str,
        deadline: float,
        cancel: threading.Event,
        on_output: Output | None = None,
    ) -> ExecResult:
        """Run ``command``; stream its output to ``on_output(stream, bytes)``; return how it ended.

        Raises:
            DeviceTimeout: still running at ``deadline`` (the channel is closed, which ends it).
            Cancelled: ``cancel`` was set (the channel is closed).
            DeviceUnavailable: the connection died meanwhile.
        """
        channel = self._channel()
        out, err = bytearray(), bytearray()
        try:
            channel.exec_command(command)
            while True:
                if cancel.is_set():
                    raise Cancelled("exec_ssh cancelled; the remote command was stopped")
                if _remaining(deadline) <= 0:
                    raise DeviceTimeout(
                        f"{command[:60]!r} still running at its timeout; it was stopped",
                        details={"exception": "TimeoutError"},
                    )
                select.select([channel], [], [], min(_POLL_S * 2, max(0.0, _remaining(deadline))))
                progressed = False
                while channel.recv_ready():
                    chunk = channel.recv(_READ_BYTES)
                    out += chunk
                    progressed = True
                    if on_output is not None and chunk:
                        on_output("stdout", chunk)
                while channel.recv_stderr_ready():
                    chunk = channel.recv_stderr(_READ_BYTES)
                    err += chunk
                    progressed = True
                    if on_output is not None and chunk:
                        on_output("stderr", chunk)
                drained = not (channel.recv_ready() or channel.recv_stderr_ready())
                if channel.exit_status_ready() and not progressed and drained:
                    break
                if channel.closed and not channel.exit_status_ready():
                    raise _lost("exec", EOFError("channel closed without an exit status"))
                if not self.alive and not channel.exit_status_ready():
                    raise _lost("exec", EOFError("transport closed"))
            return ExecResult(channel.recv_exit_status(), bytes(out), bytes(err))
        except (DeviceError, Cancelled):  # DeviceTimeout is an OSError (TimeoutError) too
            raise
        except _LINK_ERRORS as exc:
            if not self.alive:
                self.close()
            raise _lost("exec", exc) from None
        finally:
            channel.close()

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is not None and self.alive:
                return self._sftp
            for attempt in (1, 2):
                transport = self._transport()
                try:
                    sftp = paramiko.SFTPClient.from_transport(transport)
                except _LINK_ERRORS as exc:
                    self.close()
                    if attempt == 2:
                        raise _lost("open SFTP", exc) from None
                    continue
                if sftp is None:
                    raise DeviceUnavailable(
                        "the server refused the sftp subsystem",
                        details={"exception": "SSHException"},
                    )
                self._sftp = sftp
                return sftp
        raise AssertionError("unreachable")

    def _sftp_failure(self, what: str, path: str, exc: BaseException) -> DeviceError:
        """A failed transfer: the connection died (re-opened next time), or the file is the problem."""
        if self.alive and isinstance(exc, OSError) and not isinstance(exc, EOFError):
            return _sftp_error(path, exc)
        self.close()
        return _lost(what, exc)

    def put(
        self,
        remotepath: str,
        data: bytes,
        deadline: float,
        cancel: threading.Event,
        on_progress: Progress | None = None,
    ) -> int:
        """Write ``data`` to ``remotepath`` and confirm its size with ``stat``; return the size."""
        total = len(data)
        chunk = self.config.transfer_chunk_bytes
        with self._lock:
            sftp = self._sftp_client()
            try:
                with sftp.open(remotepath, "wb") as handle:
                    handle.set_pipelined(True)
                    done = 0
                    if on_progress is not None:
                        on_progress(0, total)
                    while done < total:
                        self._check(cancel, deadline, "put_file")
                        handle.write(data[done : done + chunk])
                        done = min(total, done + chunk)
                        if on_progress is not None:
                            on_progress(done, total)
                size = sftp.stat(remotepath).st_size
            except (DeviceError, Cancelled):
                raise
            except _LINK_ERRORS as exc:
                raise self._sftp_failure("put_file", remotepath, exc) from None
        if size != total:
            raise DeviceFault(
                f"{remotepath}: {size} bytes on the instance, {total} sent",
                device_code="OSError",
                details={"exception": "OSError", "path": remotepath},
            )
        return total

    def get(
        self,
        remotepath: str,
        deadline: float,
        cancel: threading.Event,
        on_progress: Progress | None = None,
    ) -> bytes:
        """Read ``remotepath``; report ``(done, total)`` as it comes."""
        with self._lock:
            sftp = self._sftp_client()
            try:
                total = sftp.stat(remotepath).st_size or 0
                buffer = bytearray()
                if on_progress is not None:
                    on_progress(0, total)
                with sftp.open(remotepath, "rb") as handle:
                    handle.prefetch(total)
                    while True:
                        self._check(cancel, deadline, "get_file")
                        chunk = handle.read(self.config.transfer_chunk_bytes)
                        if not chunk:
                            break
                        buffer += chunk
                        if on_progress is not None:
                            on_progress(len(buffer), max(total, len(buffer)))
            except (DeviceError, Cancelled):
                raise
            except _LINK_ERRORS as exc:
                raise self._sftp_failure("get_file", remotepath, exc) from None
        return bytes(buffer)

    @staticmethod
    def _check(cancel: threading.Event, deadline: float, what: str) -> None:
        if cancel.is_set():
            raise Cancelled(f"{what} cancelled")
        if _remaining(deadline) <= 0:
            raise DeviceTimeout(
                f"{what} did not finish in time", details={"exception": "TimeoutError"}
            )


# ---------------------------------------------------------------- state


@dataclass(slots=True)
class InstanceRecord:
    """What the actor keeps of one instance it started or attached to."""

    instance_id: str
    deployment: str | None = None
    sshkey: str | None = None
    conn: InstanceConnection | None = None

    def to_json(self) -> dict[str, Any]:
        conn = self.conn
        return {
            "deployment": self.deployment,
            "sshkey": self.sshkey,
            "conn": None
            if conn is None
            else {"ipv4": conn.ipv4, "port": conn.port, "hostkey": conn.hostkey},
        }

    @classmethod
    def from_json(cls, instance_id: str, data: Any) -> InstanceRecord:
        if not isinstance(data, dict):
            return cls(instance_id)
        conn = data.get("conn")
        connection = None
        if isinstance(conn, dict):
            ipv4, port, hostkey = conn.get("ipv4"), conn.get("port"), conn.get("hostkey")
            if isinstance(ipv4, str) and isinstance(port, int) and isinstance(hostkey, str):
                connection = InstanceConnection(ipv4, port, hostkey)
        deployment, sshkey = data.get("deployment"), data.get("sshkey")
        return cls(
            instance_id,
            deployment if isinstance(deployment, str) else None,
            sshkey if isinstance(sshkey, str) else None,
            connection,
        )


class InstanceStore:
    """The instances of this actor, in memory and (with a path) in a 0600 JSON file."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._records: dict[str, InstanceRecord] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        """Read the file if it exists (made private if it was not).

        Raises:
            StorageError: the file cannot be read or is not this store's JSON.
        """
        if self.path is None or not self.path.exists():
            return
        try:
            if ensure_private(self.path):
                log.warning("remotelab_state_file_made_private", path=str(self.path))
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read the state file {self.path}: {exc}") from None
        instances = data.get("instances") if isinstance(data, dict) else None
        if not isinstance(instances, dict):
            raise StorageError(f"{self.path} is not a remote-lab state file")
        with self._lock:
            self._records = {
                str(iid): InstanceRecord.from_json(str(iid), rec) for iid, rec in instances.items()
            }

    def _save(self) -> None:
        if self.path is None:
            return
        data = {"instances": {iid: rec.to_json() for iid, rec in self._records.items()}}
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private_file(self.path, json.dumps(data, indent=1).encode(), overwrite=True)
        except OSError as exc:
            raise StorageError(f"cannot write the state file {self.path}: {exc}") from None

    def get(self, instance_id: str) -> InstanceRecord | None:
        """The record of ``instance_id``, if this actor knows it."""
        with self._lock:
            return self._records.get(instance_id)

    def put(self, record: InstanceRecord) -> None:
        """Add or replace a record and save."""
        with self._lock:
            self._records[record.instance_id] = record
            self._save()

    def remove(self, instance_id: str) -> None:
        """Forget an instance (terminated) and save."""
        with self._lock:
            if self._records.pop(instance_id, None) is not None:
                self._save()

    def ids(self) -> list[str]:
        """The instances known, in the order they were added."""
        with self._lock:
            return list(self._records)
