"""The rerobots HTTP API, sans-io: requests to send and the answers they come back with.

Each ``APIClient`` operation of the published client (PyPI ``rerobots`` 0.11.0) has a builder
that returns the ``HttpRequest`` to send (method, path, query, headers with
``Authorization: Bearer <token>``, JSON body) and a parser that turns the ``HttpResponse`` into
the value the published client returns, or raises a typed error. Nothing here does I/O: the
driver sends the requests, the tests feed answers in::

    api = Api(token)
    request = api.get_instance_info("4f6b...")
    info = parse_instance_info(request, HttpResponse(200, b'{"status": "READY", ...}'))

Errors. Where the published client keys on the body's text, so do we, but on every endpoint
(the published client notices a wrong token only on ``/instances``, we notice it everywhere):

- ``{"error_message": "wrong authorization token"}`` -> ``WrongAuthToken``;
- ``{"error_message": "instance not found"}`` -> ``InstanceNotFound``;
- ``result_message`` or ``error`` starting ``"All matching workspace deployments are busy"``
  -> ``BusyWorkspaceDeployment``; starting ``"This instance is busy."`` -> ``BusyWorkspaceInstance``;
- any other 4xx -> ``Error`` with the API's message; any 5xx (JSON or not) -> ``Error`` too, but
  raised as ``device_unavailable`` (retryable), the body's first 200 characters as its message.

``ApiError`` (``device_fault``) carries the published client's exception name in
``details['exception']`` and ``details['device_code']``, and the HTTP status in
``details['status']``: the ``clients.remotelab`` facade raises the class of that name.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlencode

from bus.errors import DeviceFault, DeviceUnavailable, InvalidArguments

__all__ = [
    "ADDONS",
    "BUSY_DEPLOYMENT",
    "BUSY_INSTANCE",
    "DEFAULT_BASE_URI",
    "EXCEPTIONS",
    "FIREWALL_ACTIONS",
    "INSTANCE_NOT_FOUND",
    "WRONG_TOKEN",
    "AddonStatus",
    "Api",
    "ApiError",
    "ApiUnavailable",
    "Deployment",
    "HttpRequest",
    "HttpResponse",
    "InstanceConnection",
    "Snapshot",
    "check_ok",
    "parse_addon_status",
    "parse_deployments",
    "parse_instance_info",
    "parse_instances",
    "parse_json",
    "parse_list",
    "parse_new_instance",
    "parse_snapshot",
    "parse_wtypes",
]

#: The real API; ``base_uri`` in the actor's options points elsewhere (a proxy, the simulator).
DEFAULT_BASE_URI = "https://api.rerobots.net"

#: The exception names of ``rerobots.api``, base class first.
EXCEPTIONS = (
    "Error",
    "BusyWorkspaceDeployment",
    "BusyWorkspaceInstance",
    "InstanceNotFound",
    "WrongAuthToken",
)

WRONG_TOKEN = "wrong authorization token"
INSTANCE_NOT_FOUND = "instance not found"
BUSY_DEPLOYMENT = "All matching workspace deployments are busy"
BUSY_INSTANCE = "This instance is busy."

#: What a firewall rule may do with the packets it matches.
FIREWALL_ACTIONS = ("ACCEPT", "DROP", "REJECT")

#: The add-ons with activate / status / deactivate.
ADDONS = ("cam", "mistyproxy", "drive", "vnc")
Addon = Literal["cam", "mistyproxy", "drive", "vnc"]

_MESSAGE_CHARS = 200

_ADDON_METHODS: dict[str, Literal["GET", "POST", "DELETE"]] = {
    "activate": "POST",
    "status": "GET",
    "deactivate": "DELETE",
}


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request to the API. ``safe`` requests (GET) may be retried after a failure."""

    method: Literal["GET", "POST", "DELETE"]
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    #: What the request is, for errors and logs ("get_instance_info").
    operation: str = ""

    @property
    def safe(self) -> bool:
        """Idempotent and without side effects: retrying it cannot do anything twice."""
        return self.method == "GET"

    def url(self, base_uri: str) -> str:
        """The full URL under ``base_uri`` (a trailing slash there is not doubled)."""
        url = base_uri.rstrip("/") + self.path
        if self.query:
            url += "?" + urlencode(self.query)
        return url

    def __repr__(self) -> str:  # never the token
        return f"HttpRequest({self.method} {self.path} query={self.query!r})"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One answer: the status code and the body's bytes."""

    status: int
    body: bytes = b""

    @property
    def ok(self) -> bool:
        """What the published client tests (``res.ok``): status below 400."""
        return self.status < 400


class ApiError(DeviceFault):
    """The API refused a request; ``exception`` is the published client's exception name."""

    def __init__(self, exception: str, message: str, *, status: int, operation: str = "") -> None:
        details: dict[str, Any] = {"exception": exception, "status": status}
        if operation:
            details["operation"] = operation
        super().__init__(message, device_code=exception, details=details)
        self.exception = exception
        self.status = status


class ApiUnavailable(DeviceUnavailable):
    """The API failed on its side (5xx): retryable; ``details['exception']`` is ``"Error"``."""

    def __init__(self, message: str, *, status: int, operation: str = "") -> None:
        details: dict[str, Any] = {"exception": "Error", "status": status}
        if operation:
            details["operation"] = operation
        super().__init__(message, details=details)
        self.status = status


@dataclass(frozen=True, slots=True)
class Deployment:
    """One row of ``get_wdeployments``: what the published client keeps of each deployment."""

    id: str
    type: str
    region: str
    queuelen: int

    def as_dict(self) -> dict[str, Any]:
        """The published client's shape: ``{id, type, region, queuelen}``."""
        return {"id": self.id, "type": self.type, "region": self.region, "queuelen": self.queuelen}


@dataclass(frozen=True, slots=True)
class InstanceConnection:
    """Where an instance's SSH server is and the host key it must present (``hostkeys[0]``)."""

    ipv4: str
    port: int
    hostkey: str

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> InstanceConnection | None:
        """From ``GET /instance/{id}``; None while the API has not published all three."""
        fwd = info.get("fwd")
        hostkeys = info.get("hostkeys")
        if not isinstance(fwd, Mapping) or not isinstance(hostkeys, list) or not hostkeys:
            return None
        ipv4, port, hostkey = fwd.get("ipv4"), fwd.get("port"), hostkeys[0]
        if isinstance(port, str) and port.isascii() and port.isdigit():  # not "²": int() refuses it
            port = int(port)
        if not isinstance(ipv4, str) or not isinstance(port, int) or not isinstance(hostkey, str):
            return None
        return cls(ipv4, port, hostkey)

    def key_type_and_data(self) -> tuple[str, bytes]:
        """``("ssh-ed25519", <key blob>)`` from the ``"<type> <base64>[ <comment>]"`` line."""
        parts = self.hostkey.split()
        if len(parts) < 2:
            raise ApiError("Error", f"malformed host key {self.hostkey[:60]!r}", status=200)
        try:
            return parts[0], base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("Error", "host key is not base64", status=200) from None


@dataclass(frozen=True, slots=True)
class AddonStatus:
    """An add-on's status: ``notfound`` (not active), ``starting`` or ``active``; the rest as sent."""

    status: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The published client's shape: the API's JSON, or ``{"status": "notfound"}``."""
        return {**self.extra, "status": self.status}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A camera frame: its format as the API names it (``"JPEG"``) and the decoded bytes."""

    format: str
    data: bytes


# ---------------------------------------------------------------- requests


def _segment(value: str, argument: str) -> str:
    """One path segment; ids are escaped (the published client pastes them in unescaped)."""
    if not isinstance(value, str) or not value:
        raise InvalidArguments(
            f"{argument} must be a non-empty string", details={"argument": argument}
        )
    return quote(value, safe="")


class Api:
    """Builds the request of each ``APIClient`` operation, with the token's header.

    Args:
        token: The API token (a JWT); no ``Authorization`` header when it is empty or None.
        headers: Extra headers for every request (the published client's ``headers=``).
    """

    __slots__ = ("_headers",)

    def __init__(self, token: str | None, headers: Mapping[str, str] | None = None) -> None:
        self._headers = dict(headers or {})
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"Api(token={'***' if 'Authorization' in self._headers else None})"

    def _request(
        self,
        method: Literal["GET", "POST", "DELETE"],
        path: str,
        operation: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> HttpRequest:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(dict(body)).encode()
            headers["Content-Type"] = "application/json"
        return HttpRequest(method, path, tuple(query), headers, data, operation)

    # deployments

    def get_wtypes(self) -> HttpRequest:
        """``GET /workspaces``."""
        return self._request("GET", "/workspaces", "get_wtypes")

    def get_wdeployments(
        self,
        query: str | None = None,
        maxlen: int | None = None,
        types: Sequence[str] | None = None,
        page: int | None = None,
        max_per_page: int | None = None,
    ) -> HttpRequest:
        """``GET /deployments?info=t`` with the published client's query parameters."""
        params: list[tuple[str, str]] = [("info", "t")]
        if max_per_page is not None:
            params.append(("max_per_page", str(max_per_page)))
            if page is not None:
                params.append(("page", str(page)))
        if query is not None:
            params.append(("q", query))
        if maxlen is not None:
            params.append(("maxlen", str(maxlen)))
        if types is not None:
            params.append(("types", ",".join(types)))
        return self._request("GET", "/deployments", "get_wdeployments", query=params)

    def get_wdeployment_info(self, wdeployment_id: str) -> HttpRequest:
        """``GET /deployment/{id}``."""
        path = "/deployment/" + _segment(wdeployment_id, "wdeployment_id")
        return self._request("GET", path, "get_wdeployment_info")

    # instances

    def get_instances(
        self,
        include_terminated: bool = False,
        page: int | None = None,
        max_per_page: int | None = None,
    ) -> HttpRequest:
        """``GET /instances``; ``include_terminated=`` is sent with an empty value, as published."""
        params: list[tuple[str, str]] = []
        if include_terminated:
            params.append(("include_terminated", ""))
        if max_per_page is not None:
            params.append(("max_per_page", str(max_per_page)))
            if page is not None:
                params.append(("page", str(page)))
        return self._request("GET", "/instances", "get_instances", query=params)

    def get_instance_info(self, instance_id: str) -> HttpRequest:
        """``GET /instance/{id}``."""
        path = "/instance/" + _segment(instance_id, "instance_id")
        return self._request("GET", path, "get_instance_info")

    def request_instance(
        self,
        type_or_wdeployment_id: str,
        sshkey: str | None = None,
        vpn: bool = False,
        reserve: bool = False,
        event_url: str | None = None,
        duration: int | None = None,
    ) -> HttpRequest:
        """``POST /new/{type or deployment}`` with the body the published client sends."""
        body: dict[str, Any] = {}
        if sshkey is not None:
            body["sshkey"] = sshkey
        if duration is not None:
            body["expire_d"] = duration
        if vpn:
            body["vpn"] = True
        body["reserve"] = reserve
        if event_url is not None:
            body["eurl"] = event_url
        path = "/new/" + _segment(type_or_wdeployment_id, "type_or_wdeployment_id")
        return self._request("POST", path, "request_instance", body=body)

    def terminate_instance(self, instance_id: str) -> HttpRequest:
        """``POST /terminate/{id}``."""
        path = "/terminate/" + _segment(instance_id, "instance_id")
        return self._request("POST", path, "terminate_instance")

    def get_vpn_newclient(self, instance_id: str) -> HttpRequest:
        """``POST /vpn/{id}``: a new OpenVPN client."""
        path = "/vpn/" + _segment(instance_id, "instance_id")
        return self._request("POST", path, "get_vpn_newclient")

    # add-ons

    def addon(
        self, addon: Addon, action: Literal["activate", "status", "deactivate"], instance_id: str
    ) -> HttpRequest:
        """``POST`` (activate), ``GET`` (status) or ``DELETE`` (deactivate) ``/addon/{name}/{id}``."""
        if addon not in ADDONS:
            raise InvalidArguments(f"unknown add-on {addon!r}", details={"argument": "addon"})
        method = _ADDON_METHODS[action]
        path = f"/addon/{addon}/" + _segment(instance_id, "instance_id")
        return self._request(method, path, f"{action}_addon_{addon}")

    def vnc(self, action: Literal["start", "stop"], instance_id: str) -> HttpRequest:
        """``POST /addon/vnc/{id}/start`` or ``/stop``."""
        path = "/addon/vnc/" + _segment(instance_id, "instance_id") + f"/{action}"
        return self._request("POST", path, f"{action}_addon_vnc")

    def send_drive_command(
        self, instance_id: str, command: Mapping[str, Any] | None = None
    ) -> HttpRequest:
        """``POST /addon/drive/{id}/tx``; no command is the published client's stop."""
        body = dict(command) if command is not None else {"linearv": 0, "angularv": 0}
        path = "/addon/drive/" + _segment(instance_id, "instance_id") + "/tx"
        return self._request("POST", path, "send_drive_command", body=body)

    def get_firewall_rules(self, instance_id: str) -> HttpRequest:
        """``GET /firewall/{id}``."""
        path = "/firewall/" + _segment(instance_id, "instance_id")
        return self._request("GET", path, "get_firewall_rules")

    def add_firewall_rule(
        self, instance_id: str, action: str, source_address: str | None = None
    ) -> HttpRequest:
        """``POST /firewall/{id}`` ``{"src"?, "action"}``; the action is checked here, as published."""
        if action not in FIREWALL_ACTIONS:
            raise InvalidArguments(
                "unrecognized firewall action",
                details={"argument": "action", "expected": list(FIREWALL_ACTIONS)},
            )
        body = (
            {"action": action}
            if source_address is None
            else {"src": source_address, "action": action}
        )
        path = "/firewall/" + _segment(instance_id, "instance_id")
        return self._request("POST", path, "add_firewall_rule", body=body)

    def flush_firewall_rules(self, instance_id: str) -> HttpRequest:
        """``DELETE /firewall/{id}``."""
        path = "/firewall/" + _segment(instance_id, "instance_id")
        return self._request("DELETE", path, "flush_firewall_rules")

    def get_reservations(self) -> HttpRequest:
        """``GET /reservations``."""
        return self._request("GET", "/reservations", "get_reservations")

    def cancel_reservation(self, reservation_id: str) -> HttpRequest:
        """``DELETE /reservation/{id}``."""
        path = "/reservation/" + _segment(reservation_id, "reservation_id")
        return self._request("DELETE", path, "cancel_reservation")

    def get_snapshot_cam(self, instance_id: str, camera_id: int = 0) -> HttpRequest:
        """``GET /addon/cam/{id}/{camera_id}/img``."""
        path = "/addon/cam/" + _segment(instance_id, "instance_id") + f"/{int(camera_id)}/img"
        return self._request("GET", path, "get_snapshot_cam")


# ---------------------------------------------------------------- responses


def _text(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text[:_MESSAGE_CHARS] + ("..." if len(text) > _MESSAGE_CHARS else "")


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can read
        return None


def _error(request: HttpRequest, response: HttpResponse) -> DeviceFault | DeviceUnavailable:
    """The typed error of a failed answer (status 400 or more)."""
    operation = request.operation
    payload = _decode(response.body)
    if response.status >= 500 and not isinstance(payload, dict):
        return ApiUnavailable(
            f"{operation}: HTTP {response.status}: {_text(response.body) or '(empty body)'}",
            status=response.status,
            operation=operation,
        )
    if not isinstance(payload, dict):
        return ApiError(
            "Error",
            _text(response.body) or f"HTTP {response.status}",
            status=response.status,
            operation=operation,
        )
    error_message = payload.get("error_message")
    result_message = payload.get("result_message")
    other = payload.get("error")
    if error_message == WRONG_TOKEN:
        return ApiError("WrongAuthToken", WRONG_TOKEN, status=response.status, operation=operation)
    if error_message == INSTANCE_NOT_FOUND:
        return ApiError(
            "InstanceNotFound", INSTANCE_NOT_FOUND, status=response.status, operation=operation
        )
    for message in (result_message, other):
        if isinstance(message, str) and message.startswith(BUSY_DEPLOYMENT):
            return ApiError(
                "BusyWorkspaceDeployment", message, status=response.status, operation=operation
            )
        if isinstance(message, str) and message.startswith(BUSY_INSTANCE):
            return ApiError(
                "BusyWorkspaceInstance", message, status=response.status, operation=operation
            )
    message = next(
        (m for m in (error_message, result_message, other) if isinstance(m, str) and m),
        _text(response.body),
    )
    if response.status >= 500:
        return ApiUnavailable(
            f"{operation}: HTTP {response.status}: {message}",
            status=response.status,
            operation=operation,
        )
    return ApiError("Error", message, status=response.status, operation=operation)


def check_ok(request: HttpRequest, response: HttpResponse) -> None:
    """Raise the typed error of a failed answer; return for a success (its body unread)."""
    if not response.ok:
        raise _error(request, response)


def parse_json(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    """The JSON object of a successful answer (a malformed one is an ``Error``)."""
    check_ok(request, response)
    payload = _decode(response.body)
    if not isinstance(payload, dict):
        raise ApiError(
            "Error",
            f"{request.operation}: the API answered {_text(response.body)!r}, not a JSON object",
            status=response.status,
            operation=request.operation,
        )
    return payload


def _field(
    request: HttpRequest, response: HttpResponse, payload: Mapping[str, Any], key: str
) -> Any:
    if key not in payload:
        raise ApiError(
            "Error",
            f"{request.operation}: the API's answer lacks {key!r}",
            status=response.status,
            operation=request.operation,
        )
    return payload[key]


def _list_field(
    request: HttpRequest, response: HttpResponse, payload: Mapping[str, Any], key: str
) -> list[Any]:
    value = _field(request, response, payload, key)
    if not isinstance(value, list):
        raise ApiError(
            "Error",
            f"{request.operation}: {key!r} is not a list",
            status=response.status,
            operation=request.operation,
        )
    return value


def parse_wtypes(request: HttpRequest, response: HttpResponse) -> list[str]:
    """``workspace_types``."""
    payload = parse_json(request, response)
    return [str(t) for t in _list_field(request, response, payload, "workspace_types")]


def parse_list(key: str) -> Callable[[HttpRequest, HttpResponse], list[Any]]:
    """A parser of the list under ``key`` (``rules``, ``reservations``)."""

    def parse(request: HttpRequest, response: HttpResponse) -> list[Any]:
        return _list_field(request, response, parse_json(request, response), key)

    return parse


def parse_deployments(
    request: HttpRequest, response: HttpResponse
) -> tuple[list[Deployment], int | None]:
    """``(deployments, page_count)``; ``page_count`` is None when the API did not send it."""
    payload = parse_json(request, response)
    ids = _list_field(request, response, payload, "workspace_deployments")
    info = payload.get("info") or {}
    rows = []
    for wd in ids:
        # JSON object keys are strings: an id of another type has no info entry.
        entry = info.get(wd) if isinstance(info, Mapping) and isinstance(wd, str) else None
        if not isinstance(entry, Mapping):
            raise ApiError(
                "Error",
                f"get_wdeployments: no info for deployment {wd!r}",
                status=response.status,
                operation=request.operation,
            )
        try:
            queuelen = int(entry.get("queuelen") or 0)  # as the published client reads it
        except (TypeError, ValueError, OverflowError):  # a list, "x", Infinity
            raise ApiError(
                "Error",
                f"get_wdeployments: deployment {wd!r} has queuelen "
                f"{str(entry.get('queuelen'))[:40]!r}, not a number",
                status=response.status,
                operation=request.operation,
            ) from None
        rows.append(Deployment(str(wd), str(entry.get("type")), str(entry.get("region")), queuelen))
    page_count = payload.get("page_count")
    return rows, page_count if isinstance(page_count, int) else None


def parse_instances(request: HttpRequest, response: HttpResponse) -> tuple[list[str], int | None]:
    """``(instance ids, page_count)``."""
    payload = parse_json(request, response)
    ids = [str(i) for i in _list_field(request, response, payload, "workspace_instances")]
    page_count = payload.get("page_count")
    return ids, page_count if isinstance(page_count, int) else None


def parse_instance_info(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    """The instance's JSON; ``status`` must be there."""
    payload = parse_json(request, response)
    _field(request, response, payload, "status")
    return payload


def parse_new_instance(request: HttpRequest, response: HttpResponse) -> dict[str, Any]:
    """``{success, id, sshkey?}`` of ``POST /new``; ``id`` must be there."""
    payload = parse_json(request, response)
    _field(request, response, payload, "id")
    return payload


def parse_addon_status(request: HttpRequest, response: HttpResponse) -> AddonStatus:
    """404 means not active (``notfound``), as the published client reads it."""
    if response.status == 404:
        return AddonStatus("notfound")
    payload = parse_json(request, response)
    status = payload.get("status")
    extra = {k: v for k, v in payload.items() if k != "status"}
    return AddonStatus(str(status) if status is not None else "unknown", extra)


def parse_snapshot(request: HttpRequest, response: HttpResponse, instance_id: str) -> Snapshot:
    """The frame, base64-decoded; 404 is the published client's "not found, or not active"."""
    if response.status == 404:
        raise ApiError(
            "Error",
            f"instance {instance_id} not found, or cam add-on not active",
            status=404,
            operation=request.operation,
        )
    payload = parse_json(request, response)
    if not payload.get("success"):
        message = payload.get("message")
        raise ApiError(
            "Error",
            str(message) if message else "the camera gave no image",
            status=response.status,
            operation=request.operation,
        )
    data = _field(request, response, payload, "data")
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                "Error",
                "camera image is not base64",
                status=response.status,
                operation=request.operation,
            ) from None
    else:
        raise ApiError(
            "Error",
            "camera image is not a string",
            status=response.status,
            operation=request.operation,
        )
    return Snapshot(str(payload.get("format", "JPEG")), raw)
