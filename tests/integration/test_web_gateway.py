"""The HTTP/JSON gateway and ``linebus up`` with a ``[web]`` table, on one secured line.

The line runs under ``linebus up`` (broker, ``echo1``, and ``linebus web`` from the config's
``[web]`` table), with CURVE, access lists and a tokens file: ``tester`` is an operator,
``viewer`` a known identity whose access list forbids ``echo1.add``. The gateway tests run the
app in this process (uvicorn in a thread, as ``linebus web`` would, settings from the same config
through ``bus.web.launch``), so one line serves both; the ``linebus up`` test asks the web
process that ``up`` started. Secured in both passes, so the file is in SAME_IN_BOTH_PASSES.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from bus import config as config_mod
from bus.client import Client, ClientKeys
from bus.security.files import write_private_file
from bus.security.keys import generate_keypair
from bus.web.app import create_app
from bus.web.launch import launch_settings
from bus.web.openapi import document
from tests.conftest import (
    ECHO,
    KEY_VARIABLES,
    ROOT,
    Endpoints,
    free_port,
    scaled,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

TOKENS = {"tester": "tester-token-0123456789", "viewer": "viewer-token-0123456789"}
SECURITY = """
[security]
key = "keys/broker.key_secret"
keys = "keys"

[security.acl]
operators = ["tester"]

[security.acl.identity.viewer]
call = ["*.*", "!echo1.add"]
"""


@dataclass
class WebLine:
    """The line, the URL of its ``linebus up`` web process, and an in-process gateway's URL."""

    folder: Path
    config: Path
    up_url: str
    url: str

    def client(self, identity: str = "tester") -> httpx.Client:
        """An HTTP client of the in-process gateway carrying ``identity``'s token."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {TOKENS[identity]}"},
            timeout=scaled(15),
        )


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, scaled(15), "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=scaled(15))


@pytest.fixture(scope="module")
def web_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebLine]:
    folder = tmp_path_factory.mktemp("web-line")
    keys = folder / "keys"
    generate_keypair(keys, "viewer")  # a known identity, no operator
    write_private_file(
        folder / "tokens", "".join(f"{who} {token}\n" for who, token in TOKENS.items()).encode()
    )
    up_port = free_port()
    config = write_config(
        folder / "line.toml",
        Endpoints.fresh(),
        [{"name": "echo1", **ECHO}],
        extra=SECURITY + f'\n[web]\nlisten = "127.0.0.1:{up_port}"\ntokens = "tokens"\n',
    )
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    up = subprocess.Popen(
        [sys.executable, "-m", "bus.cli", "up", str(config)],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = config_mod.load(config)
        wait_until(lambda: (keys / "tester.key_secret").exists(), scaled(20), "the line's keys")
        tester = ClientKeys.load(
            key_file=keys / "tester.key_secret", broker_key_file=keys / "broker.key"
        )
        with Client(line.broker.command, timeout=scaled(2), keys=tester) as bus:

            def echo1_up() -> bool:
                return any(
                    r["name"] == "echo1" and r["state"] == "up" for r in bus.services(timeout=1)
                )

            wait_until(echo1_up, scaled(30), "echo1 up", ignore=(Exception,))
        launch = launch_settings(
            line,
            key=str(keys / "web.key_secret"),
            broker_key=str(keys / "broker.key"),
            call_timeout_s=scaled(10),
        )
        app = create_app(launch.settings)
        with _serving(app) as url:
            yield WebLine(folder, config, f"http://127.0.0.1:{up_port}", url)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait(timeout=10)


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event name, decoded data) of each Server-Sent Event read from ``lines``."""
    name, data = "message", ""
    for line in lines:
        if line.startswith("event:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data += line.partition(":")[2].strip()
        elif not line and data:
            yield name, json.loads(data)
            name, data = "message", ""


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace").split("\0")[:-1]
    except OSError:  # gone meanwhile
        return []


# --- linebus up with [web] -----------------------------------------------------------------


def test_linebus_up_serves_the_page_and_the_gateway(web_line: WebLine) -> None:
    """The web process `linebus up` started from [web] serves the page and, with a token,
    the gateway through its own identity's key (made by `up`)."""

    def page() -> httpx.Response | None:
        try:
            return httpx.get(web_line.up_url + "/", timeout=2)
        except httpx.TransportError:
            return None  # still starting on a loaded machine

    response = wait_until(page, scaled(20), "the web process of linebus up")
    # It runs at a lower CPU priority than the line ([web] nice, 10 by default).
    argv = ["bus.cli", "web", "--config", str(web_line.config)]
    web_pid = next(
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and _cmdline(int(entry))[-4:] == argv
    )
    assert os.getpriority(os.PRIO_PROCESS, web_pid) == min(
        19, os.getpriority(os.PRIO_PROCESS, 0) + 10
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>linebus" in response.text
    assert httpx.get(web_line.up_url + "/api/services").status_code == 401
    rows = httpx.get(
        web_line.up_url + "/api/services",
        headers={"Authorization": f"Bearer {TOKENS['viewer']}"},
    ).json()["services"]
    assert {"echo1": "up"}.items() <= {r["name"]: r["state"] for r in rows}.items()


# --- the gateway -----------------------------------------------------------------------------


def test_tokens(web_line: WebLine) -> None:
    """Without a valid token: 401 with a typed error; the OpenAPI document is public."""
    for headers in ({}, {"Authorization": "Bearer not-a-token-at-all"}):
        response = httpx.get(web_line.url + "/api/services", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(web_line.url + "/api/openapi.json").json() == document()
    query = {"access_token": TOKENS["viewer"]}
    assert httpx.get(web_line.url + "/api/services", params=query).status_code == 200


def test_the_access_list_applies_to_a_tokens_identity(web_line: WebLine) -> None:
    """viewer's access list forbids echo1.add: the bus's typed `forbidden`, as 403; what it
    allows works; the operator (tester) may call echo1.add."""
    with web_line.client("viewer") as http:
        refused = http.post("/api/call/echo1/add", json={"a": 1, "b": 2})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        assert http.post("/api/call/echo1/echo", json={"value": "hi"}).json() == {"result": "hi"}
    with web_line.client("tester") as http:
        assert http.post("/api/call/echo1/add", json={"a": 1, "b": 2}).json() == {"result": 3}


def test_services_and_describe(web_line: WebLine) -> None:
    with web_line.client() as http:
        rows = http.get("/api/services").json()["services"]
        assert "echo1" in {row["name"] for row in rows}
        described = http.get("/api/services/echo1").json()
        assert described["name"] == "echo1"
        assert [a["name"] for a in described["commands"]["add"]["args"]] == ["a", "b"]
        missing = http.get("/api/services/no-such-service")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_service"


def test_call_bytes_in_and_out(web_line: WebLine) -> None:
    """Bytes go in as {"base64"} or as a file upload, and come out as {"$bytes", "base64"}."""
    with web_line.client() as http:
        sent = http.post("/api/call/echo1/length", json={"data": {"base64": "aGVsbG8="}})
        assert sent.json() == {"result": 5}
        uploaded = http.post("/api/call/echo1/length", files={"data": ("fw.bin", b"\x00" * 1000)})
        assert uploaded.json() == {"result": 1000}
        assert http.post("/api/call/echo1/blob", json={"size": 3}).json() == {
            "result": {"$bytes": 3, "base64": "eHh4"}
        }
        form = http.post("/api/call/echo1/add", files={"a": (None, "2"), "b": (None, "40")})
        assert form.json() == {"result": 42}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        (
            "/api/call/echo1/add",
            b"{not json",
            {"Content-Type": "application/json"},
            400,
            "bad_request",
        ),
        (
            "/api/call/echo1/add",
            b"[1, 2]",
            {"Content-Type": "application/json"},
            400,
            "bad_request",
        ),
        (
            "/api/call/echo1/add",
            b'{"a": "x"}',
            {"Content-Type": "application/json"},
            400,
            "invalid_arguments",
        ),
        (
            "/api/call/echo1/add",
            b"a=1",
            {"Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            "/api/call/echo1/length",
            b'{"data": {"base64": "%%%"}}',
            {"Content-Type": "application/json"},
            400,
            "bad_request",
        ),
        (
            "/api/call/echo1/echo",
            b'{"value": 123456789012345678901234567890}',
            {"Content-Type": "application/json"},
            400,
            "bad_request",
        ),
        (
            "/api/call/echo1/add?timeout=-1",
            b"{}",
            {"Content-Type": "application/json"},
            400,
            "bad_request",
        ),
        (
            "/api/call/echo1/add?timeout=soon",
            b"{}",
            {"Content-Type": "application/json"},
            400,
            "bad_request",
        ),
        (
            "/api/call/no-such-service/add",
            b"{}",
            {"Content-Type": "application/json"},
            404,
            "unknown_service",
        ),
        (
            "/api/call/echo1/no_such_command",
            b"{}",
            {"Content-Type": "application/json"},
            404,
            "unknown_command",
        ),
        ("/api/call/echo1/fail", b"{}", {"Content-Type": "application/json"}, 502, "device_fault"),
        (
            "/api/call/echo1/length",
            b'{"data": {"base64": "' + b"A" * (17 << 20) + b'"}}',
            {"Content-Type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
def test_bad_input_gets_a_typed_error(
    web_line: WebLine, path: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    with web_line.client() as http:
        response = http.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


def test_unknown_route_and_method(web_line: WebLine) -> None:
    with web_line.client() as http:
        assert http.get("/api/nothing").json()["error"]["code"] == "not_found"
        wrong = http.delete("/api/services")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_deadline(web_line: WebLine) -> None:
    with web_line.client() as http:
        late = http.post(
            "/api/call/echo1/work", params={"timeout": 0.3}, json={"steps": 20, "step_s": 0.1}
        )
    assert late.status_code == 504
    assert late.json()["error"]["code"] == "deadline_exceeded"


def test_progress_as_server_sent_events(web_line: WebLine) -> None:
    with (
        web_line.client() as http,
        http.stream(
            "POST",
            "/api/call/echo1/work",
            json={"steps": 3, "step_s": 0.01},
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(_sse(response.iter_lines()))
    assert events == [
        ("progress", {"done": 1, "total": 3}),
        ("progress", {"done": 2, "total": 3}),
        ("progress", {"done": 3, "total": 3}),
        ("result", {"result": {"steps": 3}}),
    ]
    with (
        web_line.client() as http,
        http.stream(
            "POST", "/api/call/echo1/fail", json={}, headers={"Accept": "text/event-stream"}
        ) as response,
    ):
        [(name, body)] = list(_sse(response.iter_lines()))
    assert name == "error"
    assert body["error"]["code"] == "device_fault"
    assert body["error"]["http_status"] == 502


def test_events_as_server_sent_events(web_line: WebLine) -> None:
    """Events of the prefix arrive with topic, src, seq, ts and data, after `ready`."""
    with (
        web_line.client() as http,
        http.stream("GET", "/api/events", params={"prefix": "echo1.tick"}) as response,
    ):
        events = _sse(response.iter_lines())
        assert next(events) == ("ready", {"prefixes": ["echo1.tick"]})
        emitted = http.post("/api/call/echo1/emit", json={"event": "tick", "count": 2, "data": 7})
        assert emitted.json() == {"result": 2}
        first, second = next(events), next(events)
    for (name, body), seq in ((first, 1), (second, 2)):
        assert name == "message"
        assert (body["topic"], body["src"], body["seq"], body["data"]) == (
            "echo1.tick",
            "echo1",
            seq,
            7,
        )
        assert body["ts"] > 0


# --- schemathesis against the OpenAPI document ---------------------------------------------


#: The document the gateway serves (test_tokens checks that it is this one), without the
#: endless event stream (test_events_as_server_sent_events reads it). Loaded from the dict:
#: schemathesis' ``from_fixture`` does not run under pytest 9.
schema = schemathesis.openapi.from_dict(document()).exclude(path="/api/events")


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_gateway_conforms_to_its_openapi_document(case: Any, web_line: WebLine) -> None:
    case.call_and_validate(
        base_url=web_line.url, headers={"Authorization": f"Bearer {TOKENS['tester']}"}
    )
