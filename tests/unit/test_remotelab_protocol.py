"""The rerobots API, sans-io: the requests built match what the published client (0.11.0) sends,
and answers parse into its return values or into typed errors named as its exceptions
(../shared/reference/rerobots-client.md)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from actors.remotelab import protocol
from actors.remotelab.config import RemoteLabOptions
from actors.remotelab.driver import InstanceRecord, InstanceStore
from actors.remotelab.protocol import (
    Api,
    ApiError,
    ApiUnavailable,
    HttpRequest,
    HttpResponse,
    InstanceConnection,
)
from bus.errors import ConfigError, DeviceFault, DeviceUnavailable, InvalidArguments
from bus.options import from_table
from tests.conftest import free_port

TOKEN = "eyJhbGciOi.fake.jwt"
BASE = "https://api.rerobots.net"


def _json(status: int, body: object) -> HttpResponse:
    return HttpResponse(status, json.dumps(body).encode())


def _query(request: HttpRequest) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(request.url(BASE)).query, keep_blank_values=True)


@pytest.fixture
def api() -> Api:
    return Api(TOKEN)


class TestRequests:
    def test_every_request_carries_the_bearer_token(self, api: Api) -> None:
        """Authorization: Bearer <token> on every request; none without a token."""
        assert api.get_wtypes().headers["Authorization"] == f"Bearer {TOKEN}"
        assert "Authorization" not in Api(None).get_wtypes().headers
        assert "Authorization" not in Api("").get_wtypes().headers

    def test_repr_never_shows_the_token(self, api: Api) -> None:
        """Neither the builder nor a request shows the token in its repr."""
        assert TOKEN not in repr(api)
        assert TOKEN not in repr(api.get_instances())

    def test_wdeployments_query(self, api: Api) -> None:
        """info=t always; page only with max_per_page; types comma-joined (%2C)."""
        request = api.get_wdeployments(query="misty", maxlen=2, types=["a", "b"], page=3)
        assert request.method == "GET" and request.path == "/deployments"
        assert _query(request) == [("info", "t"), ("q", "misty"), ("maxlen", "2"), ("types", "a,b")]
        assert "types=a%2Cb" in request.url(BASE)
        paged = api.get_wdeployments(page=2, max_per_page=5)
        assert _query(paged) == [("info", "t"), ("max_per_page", "5"), ("page", "2")]

    def test_instances_query_keeps_a_blank_include_terminated(self, api: Api) -> None:
        """include_terminated is sent with an empty value, as the published client does."""
        assert _query(api.get_instances()) == []
        request = api.get_instances(include_terminated=True, page=2, max_per_page=10)
        assert _query(request) == [
            ("include_terminated", ""),
            ("max_per_page", "10"),
            ("page", "2"),
        ]

    def test_request_instance_body(self, api: Api) -> None:
        """POST /new/{wd} with reserve always present, vpn only when true, expire_d and eurl."""
        plain = api.request_instance("wd-1")
        assert plain.method == "POST" and plain.path == "/new/wd-1"
        assert json.loads(plain.body or b"") == {"reserve": False}
        full = api.request_instance(
            "wd-1",
            sshkey="ssh-rsa AAAA x",
            vpn=True,
            reserve=True,
            event_url="http://e",
            duration=60,
        )
        assert json.loads(full.body or b"") == {
            "sshkey": "ssh-rsa AAAA x",
            "expire_d": 60,
            "vpn": True,
            "reserve": True,
            "eurl": "http://e",
        }
        assert not full.safe and plain.headers["Content-Type"] == "application/json"

    @pytest.mark.parametrize(
        ("build", "method", "path"),
        [
            (lambda a: a.get_wtypes(), "GET", "/workspaces"),
            (lambda a: a.get_wdeployment_info("wd"), "GET", "/deployment/wd"),
            (lambda a: a.get_instance_info("i1"), "GET", "/instance/i1"),
            (lambda a: a.terminate_instance("i1"), "POST", "/terminate/i1"),
            (lambda a: a.get_vpn_newclient("i1"), "POST", "/vpn/i1"),
            (lambda a: a.addon("cam", "activate", "i1"), "POST", "/addon/cam/i1"),
            (lambda a: a.addon("cam", "status", "i1"), "GET", "/addon/cam/i1"),
            (lambda a: a.addon("mistyproxy", "deactivate", "i1"), "DELETE", "/addon/mistyproxy/i1"),
            (lambda a: a.get_snapshot_cam("i1", 2), "GET", "/addon/cam/i1/2/img"),
            (lambda a: a.vnc("start", "i1"), "POST", "/addon/vnc/i1/start"),
            (lambda a: a.get_firewall_rules("i1"), "GET", "/firewall/i1"),
            (lambda a: a.flush_firewall_rules("i1"), "DELETE", "/firewall/i1"),
            (lambda a: a.get_reservations(), "GET", "/reservations"),
            (lambda a: a.cancel_reservation("r1"), "DELETE", "/reservation/r1"),
        ],
    )
    def test_paths(self, api: Api, build, method, path) -> None:
        """Each operation's method and path; only GETs are safe to retry."""
        request = build(api)
        assert (request.method, request.path) == (method, path)
        assert request.safe == (method == "GET")
        assert request.body is None

    def test_drive_and_firewall_bodies(self, api: Api) -> None:
        """A drive command's JSON (none: stop); firewall rules checked before anything is sent."""
        stop = api.send_drive_command("i1")
        assert (stop.method, stop.path) == ("POST", "/addon/drive/i1/tx")
        assert json.loads(stop.body or b"") == {"linearv": 0, "angularv": 0}
        rule = api.add_firewall_rule("i1", "DROP", "10.0.0.0/8")
        assert json.loads(rule.body or b"") == {"src": "10.0.0.0/8", "action": "DROP"}
        assert json.loads(api.add_firewall_rule("i1", "ACCEPT").body or b"") == {"action": "ACCEPT"}
        with pytest.raises(InvalidArguments, match="unrecognized firewall action"):
            api.add_firewall_rule("i1", "ALLOW")

    def test_ids_are_escaped_and_base_slash_not_doubled(self, api: Api) -> None:
        """An id cannot change the path; a trailing slash in base_uri gives no //."""
        assert api.get_instance_info("../x").path == "/instance/..%2Fx"
        assert api.get_wtypes().url("http://127.0.0.1:9/") == "http://127.0.0.1:9/workspaces"
        with pytest.raises(InvalidArguments):
            api.get_instance_info("")


class TestAnswers:
    def test_deployments(self, api: Api) -> None:
        """{id, type, region, queuelen} per id; page_count may be absent."""
        request = api.get_wdeployments()
        body = {
            "workspace_deployments": ["a"],
            "info": {"a": {"type": "fixed_misty2", "region": "us:cali", "queuelen": 0, "desc": ""}},
        }
        rows, pages = protocol.parse_deployments(request, _json(200, body))
        assert [r.as_dict() for r in rows] == [
            {"id": "a", "type": "fixed_misty2", "region": "us:cali", "queuelen": 0}
        ]
        assert pages is None
        _, pages = protocol.parse_deployments(request, _json(200, {**body, "page_count": 3}))
        assert pages == 3

    def test_deployment_without_info_is_an_error(self, api: Api) -> None:
        """An id the info map does not describe is the API's fault: Error, not a KeyError."""
        with pytest.raises(ApiError, match="no info"):
            protocol.parse_deployments(
                api.get_wdeployments(), _json(200, {"workspace_deployments": ["a"], "info": {}})
            )

    def test_instances_and_info(self, api: Api) -> None:
        """Instance ids with page_count; the instance's JSON as it is."""
        ids, pages = protocol.parse_instances(
            api.get_instances(), _json(200, {"workspace_instances": ["i1", "i2"], "page_count": 1})
        )
        assert (ids, pages) == (["i1", "i2"], 1)
        info = {
            "status": "READY",
            "fwd": {"ipv4": "127.0.0.1", "port": 2210},
            "hostkeys": ["ssh-rsa QUJD c"],
        }
        assert protocol.parse_instance_info(api.get_instance_info("i1"), _json(200, info)) == info
        conn = InstanceConnection.from_info(info)
        assert conn == InstanceConnection("127.0.0.1", 2210, "ssh-rsa QUJD c")
        assert conn.key_type_and_data() == ("ssh-rsa", b"ABC")
        assert InstanceConnection.from_info({"status": "INIT"}) is None

    def test_addon_status_404_is_notfound(self, api: Api) -> None:
        """404 means the add-on is not active; other fields are kept."""
        request = api.addon("mistyproxy", "status", "i1")
        assert protocol.parse_addon_status(request, HttpResponse(404, b"")).as_dict() == {
            "status": "notfound"
        }
        active = _json(200, {"status": "active", "url": ["http://a", "ws://b"]})
        assert protocol.parse_addon_status(request, active).as_dict() == {
            "status": "active",
            "url": ["http://a", "ws://b"],
        }

    def test_snapshot_is_decoded(self, api: Api) -> None:
        """The base64 frame becomes bytes; 404 is "not found, or cam add-on not active"."""
        request = api.get_snapshot_cam("i1")
        jpeg = b"\xff\xd8\xff\xe0fake\xff\xd9"
        body = {
            "success": True,
            "format": "JPEG",
            "coding": "base64",
            "data": base64.b64encode(jpeg).decode(),
        }
        snap = protocol.parse_snapshot(request, _json(200, body), "i1")
        assert (snap.format, snap.data) == ("JPEG", jpeg)
        with pytest.raises(ApiError, match="cam add-on not active") as caught:
            protocol.parse_snapshot(request, HttpResponse(404, b"{}"), "i1")
        assert caught.value.exception == "Error"

    def test_success_without_a_needed_field_is_an_error(self, api: Api) -> None:
        """A 200 without the field the operation needs is an Error naming it."""
        with pytest.raises(ApiError, match="'id'"):
            protocol.parse_new_instance(api.request_instance("wd"), _json(200, {"success": True}))
        with pytest.raises(ApiError, match="not a JSON object"):
            protocol.parse_json(api.get_wtypes(), HttpResponse(200, b"<html>"))


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "body", "exception", "message"),
        [
            (
                400,
                {"error_message": "wrong authorization token"},
                "WrongAuthToken",
                "wrong authorization token",
            ),
            (
                404,
                {"error_message": "instance not found"},
                "InstanceNotFound",
                "instance not found",
            ),
            (
                503,
                {"result_message": "All matching workspace deployments are busy. Try again later."},
                "BusyWorkspaceDeployment",
                "All matching workspace deployments are busy. Try again later.",
            ),
            (
                404,
                {"error": "All matching workspace deployments are busy"},
                "BusyWorkspaceDeployment",
                "All matching workspace deployments are busy",
            ),
            (
                400,
                {"result_message": "This instance is busy. Try later."},
                "BusyWorkspaceInstance",
                "This instance is busy. Try later.",
            ),
            (400, {"error_message": "something else"}, "Error", "something else"),
            (403, b"Forbidden", "Error", "Forbidden"),
        ],
    )
    def test_api_errors_are_named_as_the_published_client_names_them(
        self, api: Api, status, body, exception, message
    ) -> None:
        """The body's text decides the class, on every endpoint; details carry name and status."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        with pytest.raises(ApiError) as caught:
            protocol.check_ok(api.get_instances(), HttpResponse(status, raw))
        error = caught.value
        assert isinstance(error, DeviceFault) and error.code == "device_fault"
        assert (error.exception, error.message, error.status) == (exception, message, status)
        assert error.details["exception"] == exception == error.details["device_code"]
        assert error.details["status"] == status

    def test_5xx_with_a_non_json_body_is_unavailable(self, api: Api) -> None:
        """A 502 HTML page: device_unavailable (retryable), exception Error, the text shortened."""
        page = b"<html><body>" + b"Bad Gateway " * 100 + b"</body></html>"
        with pytest.raises(ApiUnavailable) as caught:
            protocol.parse_json(api.get_wtypes(), HttpResponse(502, page))
        error = caught.value
        assert isinstance(error, DeviceUnavailable) and error.retryable
        assert error.details["exception"] == "Error" and error.details["status"] == 502
        assert "HTTP 502" in error.message and len(error.message) < 300
        with pytest.raises(ApiUnavailable, match="empty body"):
            protocol.check_ok(api.get_wtypes(), HttpResponse(500, b""))

    def test_errors_travel_the_wire_with_their_details(self, api: Api) -> None:
        """Rebuilt from (code, message, details) as the client core does, the name survives."""
        from bus.errors import from_wire

        with pytest.raises(ApiError) as caught:
            protocol.check_ok(
                api.get_instances(), _json(400, {"error_message": "wrong authorization token"})
            )
        rebuilt = from_wire(caught.value.code, caught.value.message, caught.value.details)
        assert rebuilt.details["exception"] == "WrongAuthToken"


class TestOptionsAndState:
    def test_defaults_point_at_the_real_api_with_tls(self) -> None:
        """base_uri is the real API, TLS verified, and the token never shown."""
        config = from_table(RemoteLabOptions, {"api_token": TOKEN}, "remotelab t", noun="option")
        assert config.base_uri == protocol.DEFAULT_BASE_URI and config.verify_tls
        assert TOKEN not in repr(config)

    def test_token_from_a_file(self, tmp_path: Path) -> None:
        """api_token_file reads a 0600 file and refuses a world-readable one."""
        path = tmp_path / "token"
        path.write_text(TOKEN + "\n")
        path.chmod(0o600)
        config = from_table(RemoteLabOptions, {"api_token_file": str(path)}, "t", noun="option")
        assert config.api_token == TOKEN
        path.chmod(0o644)
        with pytest.raises(ConfigError, match="chmod 600"):
            from_table(RemoteLabOptions, {"api_token_file": str(path)}, "t", noun="option")

    def test_state_file_is_private_and_round_trips(self, tmp_path: Path) -> None:
        """The store writes 0600 JSON and reads back ids, keys and connections."""
        path = tmp_path / "state" / "lab.json"
        store = InstanceStore(str(path))
        conn = InstanceConnection("127.0.0.1", 2222, "ssh-ed25519 QUJD x")
        store.put(InstanceRecord("i1", "wd", "-----BEGIN RSA PRIVATE KEY-----\n", conn))
        store.put(InstanceRecord("i2"))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        again = InstanceStore(str(path))
        again.load()
        assert again.ids() == ["i1", "i2"]
        assert again.get("i1") == InstanceRecord(
            "i1", "wd", "-----BEGIN RSA PRIVATE KEY-----\n", conn
        )
        again.remove("i1")
        third = InstanceStore(str(path))
        third.load()
        assert third.ids() == ["i2"]


class TestApiSession:
    """The driver's HTTP side against a port nobody listens on (no server needed)."""

    def _session(self, retries: int) -> Any:
        from actors.remotelab.driver import ApiSession

        port = free_port()
        config = from_table(
            RemoteLabOptions,
            {
                "base_uri": f"http://127.0.0.1:{port}",
                "retries": retries,
                "backoff_initial_s": 0.01,
                "backoff_max_s": 0.02,
                "request_timeout_s": 1.0,
            },
            "t",
            noun="option",
        )
        return ApiSession(config)

    def test_unsent_requests_are_retried_even_a_post(self, api: Api) -> None:
        """Connection refused: the request never left, so a POST is retried like a GET, then
        fails device_unavailable with the published client's exception name."""
        import time

        session = self._session(retries=2)
        try:
            for request in (api.get_wtypes(), api.request_instance("wd")):
                before = session.requests_sent
                with pytest.raises(DeviceUnavailable) as caught:
                    session.send(request, time.monotonic() + 5)
                assert session.requests_sent - before == 3
                assert caught.value.details["exception"] == "Error"
        finally:
            session.close()

    def test_a_passed_deadline_sends_nothing(self, api: Api) -> None:
        """No time left: device_timeout at once, nothing sent."""
        import time

        from bus.errors import DeviceTimeout

        session = self._session(retries=2)
        try:
            with pytest.raises(DeviceTimeout):
                session.send(api.get_wtypes(), time.monotonic() - 1)
            assert session.requests_sent == 0
        finally:
            session.close()
