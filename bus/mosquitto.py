"""A real Mosquitto broker as a child process, for tests, benchmarks and the MQTT demo.

The MQTT uplink (the ``mqtt`` bridge actor, telemetry's MQTT upstream) is tested against Debian's
``mosquitto`` (installed by ``.ci/run``), never a mock. ``Mosquitto`` writes a config into a
folder of the caller's, starts the broker on a free loopback port, waits until it accepts TCP
connections, and stops, kills or restarts it (same port, so clients reconnect)::

    with Mosquitto(tmp_path) as broker:            # anonymous, plain TCP
        client.connect(broker.host, broker.port)

    broker = Mosquitto(tmp_path, users={"line1": "s3cret"}, tls=True, require_certificate=True)
    broker.start()
    broker.ca_file, broker.client_cert("line1")    # PEM files for the client's TLS settings
    broker.restart()                                # e.g. "nothing lost across a broker restart"
    broker.stop()

``python -m bus.mosquitto --listen 127.0.0.1:21883 --folder var/demo/mosquitto`` runs one in the
foreground (the plant broker of ``configs/demo-mqtt.toml``, started there as a simulator: it
prints the ``{"event": "ready"}`` line the supervisor waits for, and stops with SIGTERM).

Only the standard library here; TLS files are made with ``cryptography`` (a dependency of
several actor extras) when ``tls`` is asked for.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from bus._programs import find_program
from bus.testing import free_port, wait_until

__all__ = ["Mosquitto", "MosquittoMissing", "find_mosquitto", "main", "password_hash"]


class MosquittoMissing(RuntimeError):
    """No ``mosquitto`` executable on this machine (``apt-get install mosquitto``)."""


def find_mosquitto() -> str | None:
    """The path of the ``mosquitto`` executable, or None when it is not installed."""
    return find_program("mosquitto")


def password_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """``password`` in the ``$7$`` form of Mosquitto 2's password files (PBKDF2-SHA512), as
    ``mosquitto_passwd`` writes it; made here so the password never shows in a process's
    arguments."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class Mosquitto:
    """One Mosquitto broker on 127.0.0.1, its config, log and TLS files in ``folder``.

    Args:
        folder: A directory of the caller's (created if missing); holds ``mosquitto.conf``,
            ``mosquitto.log``, the password file and TLS files.
        port: The listener's port; a free one (``bus.testing.free_port``) when None.
        users: Username -> password; when given, anonymous clients are refused.
        tls: Serve TLS on the port with a server certificate of a CA made here (``ca_file``).
        require_certificate: With ``tls``: clients must present a certificate of that CA
            (``client_cert``), and its common name is their username.
        max_queued_messages: Mosquitto's per-client queue beyond the in-flight window
            (its default 1000 drops the surplus; 0 is unlimited).
        persistence: Keep retained messages and sessions across ``restart`` (a database file
            in ``folder``), as a production broker does.
        extra: More config lines, appended as they are.
    """

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        tls: bool = False,
        require_certificate: bool = False,
        max_queued_messages: int = 1000,
        persistence: bool = False,
        extra: str = "",
    ) -> None:
        if require_certificate and not tls:
            raise ValueError("require_certificate needs tls=True")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.users = dict(users or {})
        self.tls = tls
        self.require_certificate = require_certificate
        self.max_queued_messages = max_queued_messages
        self.persistence = persistence
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    # --- files ------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        """The generated ``mosquitto.conf``."""
        return self.folder / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        """The broker's log (what it printed: connections, drops, errors)."""
        return self.folder / "mosquitto.log"

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) that signed the server's and clients' certificates."""
        return self.folder / "ca.pem"

    def log(self) -> str:
        """The broker's log so far (for a failing test's message)."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def client_cert(self, name: str) -> tuple[Path, Path]:
        """A client certificate of the CA with common name ``name``: ``(cert_file, key_file)``."""
        from bus import _testtls

        return _testtls.issue(self.folder, name, server=False)

    def write_config(self) -> Path:
        """Write ``mosquitto.conf`` (and the password and TLS files it names)."""
        lines = [
            # Running as root, Mosquitto would switch to the user "mosquitto", who cannot read
            # the caller's folder; it only honours ``user`` when started as root.
            f"user {_current_user()}",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users or self.require_certificate else 'true'}",
            f"max_queued_messages {self.max_queued_messages}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
        ]
        if self.users:
            passwords = self.folder / "passwords"
            passwords.write_text(
                "".join(f"{user}:{password_hash(pw)}\n" for user, pw in self.users.items())
            )
            passwords.chmod(0o600)
            lines.append(f"password_file {passwords}")
        if self.tls:
            from bus import _testtls

            _testtls.ensure_ca(self.folder)
            cert, key = _testtls.issue(self.folder, "localhost", server=True)
            lines += [f"cafile {self.ca_file}", f"certfile {cert}", f"keyfile {key}"]
            if self.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.folder}/"]
        else:
            lines.append("persistence false")
        if self.extra:
            lines.append(self.extra)
        self.config_file.write_text("\n".join(lines) + "\n")
        return self.config_file

    # --- process ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start the broker and wait until it accepts connections on its port.

        Raises:
            MosquittoMissing: ``mosquitto`` is not installed.
            RuntimeError: it exited at once (its log is in the message).
            bus.testing.WaitTimeout: it did not accept connections within ``timeout``.
        """
        executable = find_mosquitto()
        if executable is None:
            raise MosquittoMissing("mosquitto is not installed (apt-get install mosquitto)")
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"mosquitto already running on port {self.port}")
        self.write_config()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [executable, "-c", str(self.config_file)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        process = self.process

        def accepting() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {process.returncode}; its log:\n{self.log()[-2000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until(accepting, timeout, f"mosquitto to accept connections on port {self.port}")
        return self

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM: it saves its database when persistent), then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash or a power cut would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def restart(self, timeout: float = 10.0, *, down_s: float = 0.0) -> Mosquitto:
        """Stop the broker, stay down ``down_s`` seconds, and start it again on the same port."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        return self.start(timeout)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Mosquitto {self.host}:{self.port} {state}>"


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def main(argv: list[str] | None = None) -> int:
    """Run one Mosquitto in the foreground until SIGTERM or SIGINT (see the module docstring)."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m bus.mosquitto", description=main.__doc__)
    parser.add_argument("--listen", default="127.0.0.1:1883", help="127.0.0.1:PORT")
    parser.add_argument("--folder", required=True, help="its config, log and database")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if host != "127.0.0.1" or not port.isdigit():
        parser.error(f"--listen must be 127.0.0.1:PORT, got {args.listen!r}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    broker = Mosquitto(Path(args.folder), port=int(port))
    try:
        broker.start()
    except (MosquittoMissing, RuntimeError) as exc:
        print(f"mosquitto: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "ready", "listen": args.listen}), flush=True)
    try:
        while not stop.wait(0.5) and broker.running:
            pass
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
