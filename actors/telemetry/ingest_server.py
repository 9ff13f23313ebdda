"""The reference upstream: a small HTTP ingest service speaking docs/INGEST_PROTOCOL.md.

Run it as ``python -m actors.telemetry.ingest_server --port 0 --db ingest.sqlite`` (or
``linebus ingest``; ``--listen 127.0.0.1:8080`` sets host and port in one); once listening it
prints one JSON line ``{"event": "ready", "url": "http://127.0.0.1:PORT"}`` and serves until
SIGTERM/SIGINT.

It is what the integration tests and the demo forward to, and the model for a plant's own
service. Beyond the device endpoints it has operator endpoints (set desired properties, read
what a device sent) and test hooks that make the next N device requests fail with 500, 429 or
503 (with ``Retry-After``), or hold the answer back after the upload was stored, which is how
tests cut a device off between "server stored it" and "device heard the ack".
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from actors.telemetry.codec import decode_upload, decompress
from actors.telemetry.ingest_db import IngestDatabase
from bus.logs import configure_logging
from bus.options import secret_from_file

__all__ = [
    "HttpProblem",
    "IngestServer",
    "body_length",
    "json_object",
    "main",
    "route",
    "upload_document",
]

log = structlog.get_logger()

MAX_BODY_BYTES = 64 * 1024 * 1024
#: How many of the latest device requests the test log keeps.
REQUEST_LOG_SIZE = 1000


class HttpProblem(Exception):
    """An RFC 9457 problem answer (raised inside handlers, rendered by the dispatcher).

    What the request handling raises for a request it refuses: ``status`` is the HTTP status
    answered, ``title`` and ``detail`` the problem document's.
    """

    def __init__(
        self, status: int, title: str, detail: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


@dataclass(slots=True)
class _Fault:
    status: int | None  # 500/429/503 answer, or None to hold the answer back
    count: int
    retry_after: str | None
    hold_s: float
    path: str  # applies to device requests whose path contains this ("" = all)


class _Faults:
    """Test hooks: the next device requests fail or are held, in the order the hooks were set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Fault] = []
        #: The latest device requests (``GET /v1/test/requests``), the oldest dropped past
        #: ``REQUEST_LOG_SIZE``: a server that runs for days must not grow with every upload.
        self.requests: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=REQUEST_LOG_SIZE
        )

    def add(self, fault: _Fault) -> None:
        with self._lock:
            self._queue.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    def take(self, method: str, path: str, encoding: str | None) -> _Fault | None:
        """Log a device request and consume the first fault that applies to it, if any."""
        with self._lock:
            fault = next((f for f in self._queue if f.path in path), None)
            if fault is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._queue.remove(fault)
            held = fault is not None and fault.status is None
            self.requests.append(
                {
                    "t": time.monotonic(),
                    "method": method,
                    "path": path,
                    "encoding": encoding,
                    "fault": fault.status if fault else None,
                    "held": held,
                }
            )
            return fault


Route = tuple[str, re.Pattern[str], str]
_ROUTES: list[Route] = [
    ("POST", re.compile(r"^/v1/provisioning$"), "provision"),
    ("POST", re.compile(r"^/v1/registration/refresh$"), "refresh"),
    (
        "PUT",
        re.compile(r"^/v1/devices/(?P<device>[^/]+)/uploads/(?P<upload>[A-Za-z0-9_.\-]{1,128})$"),
        "upload",
    ),
    ("GET", re.compile(r"^/v1/devices/(?P<device>[^/]+)/twin/desired$"), "get_desired"),
    ("POST", re.compile(r"^/v1/devices/(?P<device>[^/]+)/twin/reported$"), "post_reported"),
    ("PUT", re.compile(r"^/v1/operator/devices/(?P<device>[^/]+)/twin/desired$"), "set_desired"),
    ("GET", re.compile(r"^/v1/operator/devices/(?P<device>[^/]+)/twin$"), "get_twin"),
    ("GET", re.compile(r"^/v1/operator/devices/(?P<device>[^/]+)/messages$"), "get_messages"),
    ("GET", re.compile(r"^/v1/operator/devices/(?P<device>[^/]+)/batches$"), "get_batches"),
    ("GET", re.compile(r"^/v1/operator/stats$"), "get_stats"),
    ("POST", re.compile(r"^/v1/test/faults$"), "add_fault"),
    ("DELETE", re.compile(r"^/v1/test/faults$"), "clear_faults"),
    ("GET", re.compile(r"^/v1/test/requests$"), "get_requests"),
]


# --- request parsing: pure functions of what arrived, so they are tested and fuzzed alone ---


def route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The name of the ``IngestServer`` method serving ``method path``, and the path's parameters.

    Raises:
        HttpProblem: 404 for a path no route has, 405 for a path with routes for other methods.
    """
    allowed = False
    for route_method, pattern, name in _ROUTES:
        match = pattern.match(path)
        if match:
            allowed = True
            if route_method == method:
                return name, match.groupdict()
    raise HttpProblem(
        405 if allowed else 404, "Method not allowed" if allowed else "Not found", path
    )


def body_length(content_length: str | None) -> int:
    """The body size a request announces in its ``Content-Length`` (absent or empty: 0).

    Raises:
        HttpProblem: 400 when it is not a decimal number of bytes (a negative one would make
            the server read until the client closes), 413 when over ``MAX_BODY_BYTES``.
    """
    text = (content_length or "").strip()
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()):
        raise HttpProblem(
            400, "Bad Content-Length", f"{text[:40]!r} is not a decimal number of bytes"
        )
    length = int(text)
    if length > MAX_BODY_BYTES:
        raise HttpProblem(413, "Body too large", f"limit {MAX_BODY_BYTES} bytes")
    return length


def json_object(body: bytes) -> dict[str, Any]:
    """The JSON object a request's body holds (an empty body is ``{}``).

    Raises:
        HttpProblem: 400 when the body is not JSON (invalid UTF-8, nested too deep for the
            parser included) or not an object.
    """
    try:
        value = json.loads(body or b"{}")
    except ValueError as exc:
        raise HttpProblem(400, "Body is not JSON", str(exc)) from exc
    except RecursionError:
        raise HttpProblem(400, "Body is not JSON", "nested too deep") from None
    if not isinstance(value, dict):
        raise HttpProblem(400, "Body must be a JSON object")
    return value


def upload_document(body: bytes, content_encoding: str | None) -> dict[str, Any]:
    """The upload document of a ``PUT .../uploads/{id}`` body (``codec.decode_upload``).

    Raises:
        HttpProblem: 400 for an unknown encoding, a corrupt deflate stream, or a body that is
            not an upload document.
    """
    try:
        return decode_upload(decompress(body, content_encoding))
    except ValueError as exc:
        raise HttpProblem(400, "Malformed upload", str(exc)) from exc


class IngestServer:
    """The ingest service on a ``ThreadingHTTPServer``; ``start()`` serves from a thread.

    Args:
        db_path: Its SQLite file.
        host: Address to bind (loopback by default).
        port: Port to bind; 0 picks a free one (see ``url``).
        provisioning_tokens: Tokens accepted for provisioning; empty accepts any non-empty token.
        token_ttl_s: Lifetime of registration tokens.
    """

    def __init__(
        self,
        db_path: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        provisioning_tokens: Sequence[str] = (),
        token_ttl_s: float = 30 * 86400,
    ) -> None:
        self.db = IngestDatabase(db_path, token_ttl_s=token_ttl_s)
        self.faults = _Faults()
        self.provisioning_tokens = frozenset(provisioning_tokens)
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL devices use."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Serve from a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="ingest-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, release held answers, close the socket and the database."""
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self.db.close()

    # -- device endpoints ---------------------------------------------------------------------

    def provision(self, request: _Request) -> dict[str, Any]:
        body = request.json()
        token = body.get("provisioning_token")
        if (
            not isinstance(token, str)
            or not token
            or (self.provisioning_tokens and token not in self.provisioning_tokens)
        ):
            raise HttpProblem(401, "Provisioning Token is invalid")
        device_id = body.get("device_id")
        if device_id is not None and not re.fullmatch(r"[0-9A-Za-z\-_.]{4,90}", str(device_id)):
            raise HttpProblem(400, "Invalid device id", "4-90 characters of [0-9a-zA-Z-_.]")
        return self.db.provision(device_id)

    def refresh(self, request: _Request) -> dict[str, Any]:
        return self.db.refresh(request.device())

    def upload(self, request: _Request) -> dict[str, Any]:
        device_id = request.device(request.params["device"])
        document = upload_document(request.body, request.headers.get("Content-Encoding"))
        answer = self.db.ingest(device_id, request.params["upload"], document)
        log.info(
            "ingest_upload",
            device_id=device_id,
            upload_id=request.params["upload"],
            acked=len(answer["acked"]),
            duplicate=answer["duplicate"],
        )
        return answer

    def get_desired(self, request: _Request) -> dict[str, Any]:
        return self.db.desired(request.device(request.params["device"]))

    def post_reported(self, request: _Request) -> dict[str, Any]:
        device_id = request.device(request.params["device"])
        try:
            acked = self.db.report(device_id, request.json()["updates"])
        except (KeyError, TypeError, ValueError) as exc:
            raise HttpProblem(400, "Malformed reported update", str(exc)) from exc
        return {"acked": acked}

    # -- operator and test endpoints ----------------------------------------------------------

    def set_desired(self, request: _Request) -> dict[str, Any]:
        values = request.json().get("values")
        if not isinstance(values, dict):
            raise HttpProblem(400, 'Body must be {"values": {...}}')
        return {"version": self.db.set_desired(request.params["device"], values)}

    def get_twin(self, request: _Request) -> dict[str, Any]:
        device_id = request.params["device"]
        return {"desired": self.db.desired(device_id), "reported": self.db.reported(device_id)}

    def get_messages(self, request: _Request) -> dict[str, Any]:
        rows = self.db.messages(request.params["device"])
        for row in rows:
            payload = bytes(row.pop("payload"))
            try:
                row["payload"] = payload.decode()
            except UnicodeDecodeError:
                row["payload_hex"] = payload.hex()
        return {"messages": rows}

    def get_batches(self, request: _Request) -> dict[str, Any]:
        return {"batches": self.db.batches(request.params["device"])}

    def get_stats(self, request: _Request) -> dict[str, Any]:
        return self.db.stats()

    def add_fault(self, request: _Request) -> dict[str, Any]:
        body = request.json()
        status = body.get("status")
        if status not in (None, 500, 429, 503):
            raise HttpProblem(400, "status must be 500, 429, 503 or null (hold)")
        retry_after = body.get("retry_after")
        fault = _Fault(
            status,
            int(body.get("count", 1)),
            None if retry_after is None else str(retry_after),
            float(body.get("hold_s", 30)),
            str(body.get("path", "")),
        )
        self.faults.add(fault)
        return {"ok": True}

    def clear_faults(self, request: _Request) -> dict[str, Any]:
        self.faults.clear()
        return {"ok": True}

    def get_requests(self, request: _Request) -> dict[str, Any]:
        return {"requests": list(self.faults.requests)}


class _Request:
    """What a route handler sees: path parameters, headers, body, and the auth check."""

    def __init__(
        self, server: IngestServer, params: dict[str, str], headers: Any, body: bytes
    ) -> None:
        self.server, self.params, self.headers, self.body = server, params, headers, body

    def json(self) -> dict[str, Any]:
        """The body's JSON object (``json_object``)."""
        return json_object(self.body)

    def device(self, expected: str | None = None) -> str:
        """The device of the bearer token; 401 if invalid, 403 if it is not ``expected``."""
        auth = self.headers.get("Authorization", "")
        device_id = self.server.db.authenticate(auth[7:]) if auth.startswith("Bearer ") else None
        if device_id is None:
            raise HttpProblem(
                401, "InvalidRegistrationToken", "registration token missing, unknown or expired"
            )
        if expected is not None and expected != device_id:
            raise HttpProblem(403, "Forbidden", "token belongs to another device")
        return device_id


def _make_handler(server: IngestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the forwarder's session reuses connections
        # Buffer each response into one write (http.server flushes after every request): written
        # as separate small header and body writes, the body waited ~40 ms for the client's
        # delayed ACK on a kept-alive connection, which capped forwarding at ~20 uploads/s.
        wbufsize = 64 * 1024

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ingest_http", client=self.client_address[0], line=format % args)

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            try:
                body = self._read_body()
                name, params = route(method, path)
                handler: Callable[[_Request], dict[str, Any]] = getattr(server, name)
                device_facing = not path.startswith(("/v1/operator/", "/v1/test/"))
                fault = (
                    server.faults.take(method, path, self.headers.get("Content-Encoding"))
                    if device_facing
                    else None
                )
                if fault is not None and fault.status is not None:
                    headers = (
                        {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    )
                    raise HttpProblem(fault.status, "Injected fault", "test hook", headers)
                answer = handler(_Request(server, params, self.headers, body))
                if fault is not None:  # hold: the work is done and stored, the answer comes late
                    server.stopping.wait(fault.hold_s)
                self._send(200, answer)
            except HttpProblem as problem:
                document = {
                    "type": "about:blank",
                    "title": problem.title,
                    "status": problem.status,
                    "detail": problem.detail,
                }
                self._send(problem.status, document, problem.headers, "application/problem+json")
            except Exception:
                log.exception("ingest_handler_failed", method=method, path=path)
                self._send(
                    500,
                    {"type": "about:blank", "title": "Internal error", "status": 500},
                    content_type="application/problem+json",
                )

        def _read_body(self) -> bytes:
            try:
                length = body_length(self.headers.get("Content-Length"))
            except HttpProblem:
                self.close_connection = True  # the body is not read: the stream is out of step
                raise
            return self.rfile.read(length) if length else b""

        def _send(
            self,
            status: int,
            body: dict[str, Any],
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ingest service until SIGTERM/SIGINT (the ``linebus ingest`` command)."""
    parser = argparse.ArgumentParser(
        prog="linebus ingest", description="Reference telemetry ingest service (HTTP)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address and port to bind (overrides --host and --port)",
    )
    parser.add_argument("--db", required=True, help="SQLite file to store into")
    parser.add_argument(
        "--provisioning-token",
        action="append",
        default=[],
        help="accepted provisioning token (repeatable; none: accept any)",
    )
    parser.add_argument(
        "--provisioning-token-file",
        action="append",
        default=[],
        help="accepted provisioning token, read from this file (created 0600 with a random token"
        " if missing; repeatable): keeps it out of the command line",
    )
    parser.add_argument(
        "--token-ttl-s", type=float, default=30 * 86400, help="registration token lifetime"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `linebus ingest -- --port 0 ...` passes the separator through
        argv = argv[1:]
    args = parser.parse_args(argv)
    if args.listen is not None:
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            parser.error(f"--listen {args.listen!r}: expected HOST:PORT")
        args.host, args.port = host, int(port)
    configure_logging()  # to stderr: stdout carries only the ready line
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)  # e.g. var/ on a fresh checkout
    tokens = [
        *args.provisioning_token,
        *(secret_from_file(path, create=True) for path in args.provisioning_token_file),
    ]
    server = IngestServer(
        args.db,
        host=args.host,
        port=args.port,
        provisioning_tokens=tokens,
        token_ttl_s=args.token_ttl_s,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    server.start()
    print(json.dumps({"event": "ready", "url": server.url}), flush=True)
    log.info("ingest_ready", url=server.url, db=args.db)
    done.wait()
    server.stop()
    log.info("ingest_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
