"""Target ``ingest_request``: the ingest server's request handling,
actors/telemetry/ingest_server.py (what it makes of headers and body; not the socket).

Input: ``Name: value`` header lines, an empty line, then the body (``http.server`` has already
split a request so when the handler runs). The handler's steps are run on it as it runs them:
``body_length`` on ``Content-Length``, ``route`` on the path of a ``Path:`` line, then
``upload_document`` (the body of an upload, with its ``Content-Encoding``) and ``json_object``
(the body of every other JSON endpoint).

Documented errors: ``HttpProblem``, the 4xx answer the server sends.
"""

from __future__ import annotations

import contextlib

from actors.telemetry.ingest_server import (
    HttpProblem,
    body_length,
    json_object,
    route,
    upload_document,
)

ERRORS = (HttpProblem,)


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\n"):  # http.server decodes headers as latin-1
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().title()] = value.strip()
    return headers


def fuzz_one(data: bytes) -> None:
    """Run the handler's parsing steps on one request."""
    head, _, body = data.partition(b"\n\n")
    headers = _headers(head)
    with contextlib.suppress(ERRORS):
        body_length(headers.get("Content-Length"))
    for method in ("GET", "PUT", "POST"):
        with contextlib.suppress(ERRORS):
            route(method, headers.get("Path", "/"))
    with contextlib.suppress(ERRORS):
        upload_document(body, headers.get("Content-Encoding"))
    with contextlib.suppress(ERRORS):
        json_object(body)
