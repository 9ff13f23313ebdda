"""``Upstream``: what the forwarder needs of an upstream; ``UpstreamClient``: the device side of the
ingest HTTP protocol (docs/INGEST_PROTOCOL.md). The MQTT upstream is ``mqtt_upstream.MqttUpstream``.

One method per endpoint, each one blocking request with a timeout. Failures are mapped once,
here, to ``bus.errors`` classes the forwarder can act on:

- no connection, timeout, 5xx → ``Unavailable`` (retry with back-off);
- 429 or 503 with ``Retry-After`` → ``Throttled`` (an ``Unavailable`` carrying the delay);
- 401 → ``PermissionDenied`` (the token is no longer accepted: provision again);
- any other 4xx or a malformed answer → ``BadRequest`` (a bug on one side; retried slowly).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from actors.telemetry.codec import compress, encode_upload
from actors.telemetry.model import DesiredProperties, Registration, ReportedUpdate, Upload
from bus.errors import BadRequest, PermissionDenied, Unavailable

__all__ = ["Throttled", "UploadResult", "Upstream", "UpstreamClient", "parse_retry_after"]


class Throttled(Unavailable):
    """The upstream asked to wait (429, or 503 with ``Retry-After``); ``retry_after_s`` says how long."""

    def __init__(self, message: str, *, retry_after_s: float | None) -> None:
        super().__init__(message, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class UploadResult:
    """The server's answer to one upload: which seqs it keeps, which it refused and why."""

    acked: tuple[int, ...]
    rejected: dict[int, str]
    duplicate: bool


class Upstream(Protocol):
    """What the forwarder asks of its upstream (HTTP ingest service or MQTT broker).

    Every method blocks at most about the configured request timeout and raises ``bus.errors``
    classes: ``Unavailable`` (``Throttled``) to retry with back-off, ``PermissionDenied`` to
    provision again, ``BadRequest`` for a bug on one side.
    """

    def provision(self, provisioning_token: str, device_id: str | None) -> Registration:
        """The device's registration (its id and credentials) at this upstream."""
        ...

    def refresh(self, registration: Registration) -> Registration:
        """A fresh registration token for ``registration``."""
        ...

    def desired_properties(self, registration: Registration) -> DesiredProperties:
        """The latest desired properties (version 0: none set yet)."""
        ...

    def desired_changed(self) -> bool:
        """Whether newer desired properties arrived by themselves (pushed) since the last read."""
        ...

    def report(self, registration: Registration, updates: Sequence[ReportedUpdate]) -> list[int]:
        """Send reported-properties patches in order; the ids the upstream acknowledged."""
        ...

    def send(self, registration: Registration, upload: Upload) -> UploadResult:
        """Send one claimed upload; which seqs the upstream now holds (acked) or refused."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class UpstreamClient:
    """Blocking HTTP client of one ingest service, over one ``requests.Session``.

    Args:
        instance_url: Base URL of the service.
        timeout_s: Connect and read timeout of each request.
    """

    def __init__(self, instance_url: str, *, timeout_s: float = 10.0) -> None:
        self.instance_url = instance_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def provision(self, provisioning_token: str, device_id: str | None) -> Registration:
        """Exchange a provisioning token for a registration (``POST /v1/provisioning``)."""
        answer = self._call(
            "POST",
            "/v1/provisioning",
            json_body={"provisioning_token": provisioning_token, "device_id": device_id},
        )
        return self._registration(answer, provisioning_token)

    def refresh(self, registration: Registration) -> Registration:
        """Get a fresh registration token (``POST /v1/registration/refresh``)."""
        answer = self._call(
            "POST", "/v1/registration/refresh", token=registration.registration_token
        )
        return self._registration(answer, registration.provisioning_token)

    def desired_changed(self) -> bool:
        """Always False: HTTP desired properties are polled (``desired_poll_s``)."""
        return False

    def send(self, registration: Registration, upload: Upload) -> UploadResult:
        """Encode ``upload`` as one JSON body, compressed per its stream, and ``upload`` it."""
        body, encoding = compress(encode_upload(upload), upload.compression)
        return self.upload(registration, upload.upload_id, body, encoding)

    def upload(
        self, registration: Registration, upload_id: str, body: bytes, content_encoding: str | None
    ) -> UploadResult:
        """Send one upload (``PUT /v1/devices/{device}/uploads/{upload_id}``); idempotent by id."""
        headers = {"Content-Type": "application/json"}
        if content_encoding:
            headers["Content-Encoding"] = content_encoding
        answer = self._call(
            "PUT",
            f"/v1/devices/{registration.device_id}/uploads/{upload_id}",
            token=registration.registration_token,
            data=body,
            headers=headers,
        )
        try:
            rejected = {
                int(item["seq"]): str(item.get("reason", "rejected"))
                for item in answer.get("rejected", [])
            }
            return UploadResult(
                tuple(int(s) for s in answer["acked"]),
                rejected,
                bool(answer.get("duplicate", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"{self.instance_url}: malformed upload answer: {exc}") from exc

    def desired_properties(self, registration: Registration) -> DesiredProperties:
        """Read the device's desired properties (``GET /v1/devices/{device}/twin/desired``)."""
        answer = self._call(
            "GET",
            f"/v1/devices/{registration.device_id}/twin/desired",
            token=registration.registration_token,
        )
        try:
            return DesiredProperties(int(answer["version"]), dict(answer["values"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"{self.instance_url}: malformed desired properties: {exc}") from exc

    def report(self, registration: Registration, updates: Sequence[ReportedUpdate]) -> list[int]:
        """Send reported-properties patches in order (``POST .../twin/reported``); returns acked ids."""
        body = {"updates": [{"id": u.update_id, "patch": u.patch} for u in updates]}
        answer = self._call(
            "POST",
            f"/v1/devices/{registration.device_id}/twin/reported",
            token=registration.registration_token,
            json_body=body,
        )
        try:
            return [int(i) for i in answer["acked"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"{self.instance_url}: malformed reported answer: {exc}") from exc

    def _registration(self, answer: dict[str, Any], provisioning_token: str) -> Registration:
        try:
            return Registration(
                instance_url=self.instance_url,
                device_id=str(answer["device_id"]),
                workspace_id=str(answer["workspace_id"]),
                registration_token=str(answer["registration_token"]),
                expires_at=float(answer["expires_at"]),
                provisioning_token=provisioning_token,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"{self.instance_url}: malformed registration answer: {exc}") from exc

    def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        url = self.instance_url + path
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._session.request(
                method, url, json=json_body, data=data, headers=headers, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            raise Unavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 200:
            try:
                answer = response.json()
            except ValueError as exc:
                raise BadRequest(f"{method} {url}: answer is not JSON") from exc
            if not isinstance(answer, dict):
                raise BadRequest(f"{method} {url}: answer is not a JSON object")
            return answer
        detail = _problem_detail(response)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429 or (status == 503 and retry_after is not None):
            raise Throttled(f"{method} {url}: {status} {detail}", retry_after_s=retry_after)
        if status >= 500:
            raise Unavailable(f"{method} {url}: {status} {detail}")
        if status == 401:
            raise PermissionDenied(f"{method} {url}: {status} {detail}")
        raise BadRequest(f"{method} {url}: {status} {detail}")


def _problem_detail(response: requests.Response) -> str:
    """The ``title``/``detail`` of an RFC 9457 problem answer, or the start of the body."""
    try:
        problem = response.json()
        return f"{problem.get('title', '')}: {problem.get('detail', '')}".strip(": ")
    except (ValueError, AttributeError):
        return response.text[:200]
