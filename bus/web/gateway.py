"""The HTTP/JSON gateway: the bus for tools without ZeroMQ.

==========================================  ================================================
``GET  /api/services``                      every service the broker has seen (``services``)
``GET  /api/services/{name}``               a service's commands, arguments, docs (``describe``)
``POST /api/call/{service}/{command}``      call a command; ``?timeout=S`` its deadline
``GET  /api/events?prefix=P``               events whose topic starts with P, as SSE
``GET  /api/openapi.json``                  the OpenAPI 3 document of these (``openapi``)
==========================================  ================================================

A call's arguments are the request body: a JSON object (bytes as ``{"base64": "..."}``, see
``bus.web.codec``), or ``multipart/form-data`` where each uploaded file is a bytes argument named
by its field and each other field a value (JSON if it parses, else the text, as ``linebus call
key=value`` reads it). The answer is ``{"result": ...}``; a request that accepts
``text/event-stream`` gets the call's progress as it comes instead (``event: progress``), then
``event: result`` or ``event: error``. Every error is ``{"error": {"code", "message",
"details"}}`` with the bus's error code and the HTTP status of ``STATUS`` (400 for bad input, 404
unknown service or command, 403 forbidden by the access list, 503 unavailable, 504 deadline...).

Each request acts as its token's identity (``bus.web.auth``), through that identity's own bus
connection: the broker's access list decides what it may call, and a refusal comes back as its
typed ``forbidden``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message

from bus.aio import AsyncClient, AsyncSubscription
from bus.errors import BadRequest, BusError
from bus.web.codec import from_json, sse, to_json
from bus.web.openapi import document
from bus.web.state import WebState

__all__ = ["MAX_PREFIXES", "STATUS", "error_body", "error_response", "http_error", "routes"]

#: The HTTP status of each bus error code (others: 502, an error of the line behind us).
STATUS: dict[str, int] = {
    "bad_request": 400,
    "unsupported_version": 400,
    "invalid_arguments": 400,
    "unknown_service": 404,
    "unknown_command": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "cancelled": 409,
    "too_old": 410,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "permission_denied": 403,
    "forbidden": 403,
    "unauthenticated": 401,
    "unavailable": 503,
    "broker_unreachable": 503,
    "busy": 503,
    "device_unavailable": 503,
    "deadline_exceeded": 504,
    "device_timeout": 504,
    "internal": 500,
    "config_error": 500,
    "storage_error": 507,
}
#: At most this many ``prefix`` parameters in one event stream.
MAX_PREFIXES = 32
#: Seconds between keep-alive comments of an idle event stream (a closed connection is noticed
#: at the next write at the latest).
KEEPALIVE_S = 15.0
_SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON of an error: ``{"error": {"code", "message", "details"}}``."""
    return {"error": {"code": code, "message": message, "details": to_json(details or {})}}


def error_response(exc: BusError) -> JSONResponse:
    """A typed bus error as an HTTP response with its status (``STATUS``)."""
    status = STATUS.get(exc.wire_code, 502)
    # The broker refusing the gateway's own key is the gateway's problem, not the caller's.
    if exc.wire_code == "unauthenticated":
        status = 502
    return JSONResponse(error_body(exc.wire_code, exc.message, exc.details), status_code=status)


def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (unknown route, wrong method) as typed JSON under ``/api/``,
    plain text elsewhere (the page's files)."""
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith("/api/"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return JSONResponse(
        error_body(code, f"{request.method} {request.url.path}: {exc.detail}"),
        status_code=exc.status_code,
        headers=exc.headers,
    )


class _TooLarge(Exception):
    pass


def _limited(request: Request, limit: int) -> Request:
    """``request`` whose body reading raises ``_TooLarge`` past ``limit`` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _TooLarge
    seen = 0
    receive = request.receive

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge
        return message

    return Request(request.scope, counted)


def _timeout(request: Request, state: WebState) -> float | None:
    text = request.query_params.get("timeout")
    if text is None:
        return None
    limit = state.settings.max_timeout_s
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > limit:
        raise BadRequest(
            f"timeout must be a number of seconds above 0 and at most {limit:g}, got {text!r}",
            details={"argument": "timeout", "problem": "not a valid deadline"},
        )
    return value


async def _call_args(request: Request) -> dict[str, Any]:
    """The call's arguments from the body (see the module docstring)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _form_args(request)
    body = await request.body()
    if not body.strip():
        return {}
    if kind not in ("application/json", ""):
        raise _UnsupportedMedia(kind)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}", details={"problem": "not JSON"}) from None
    if not isinstance(value, dict):
        raise BadRequest(
            f"the body must be a JSON object of arguments, not {type(value).__name__}",
            details={"problem": "not an object"},
        )
    args: dict[str, Any] = from_json(value)
    return args


class _UnsupportedMedia(Exception):
    pass


async def _form_args(request: Request) -> dict[str, Any]:
    args: dict[str, Any] = {}
    async with request.form(max_files=64, max_fields=256) as form:
        for key, value in form.multi_items():
            if key in args:
                raise BadRequest(
                    f"form field {key!r} is given twice",
                    details={"argument": key, "problem": "repeated"},
                )
            if isinstance(value, UploadFile):
                args[key] = await value.read()
            else:
                try:
                    args[key] = from_json(json.loads(value), key)
                except (ValueError, RecursionError):
                    args[key] = value
    return args


def _wants_events(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def routes(state: WebState) -> list[BaseRoute]:
    """The gateway's routes, bound to ``state``'s bus connections."""

    async def bus_of(request: Request) -> AsyncClient:
        return await state.client(request.state.identity)

    def typed(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Bus errors and bad input as typed JSON errors, never a 500."""

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except BusError as exc:
                return error_response(exc)
            except _TooLarge:
                limit = state.settings.max_body_bytes
                return JSONResponse(
                    error_body(
                        "payload_too_large",
                        f"the body is larger than {limit} bytes",
                        {"limit": limit},
                    ),
                    status_code=413,
                )
            except _UnsupportedMedia as exc:
                return JSONResponse(
                    error_body(
                        "unsupported_media_type",
                        f"content type {exc} is not accepted: send application/json or"
                        " multipart/form-data (with curl: --json '{...}', or -F name=@file)",
                    ),
                    status_code=415,
                )

        return run

    async def services(request: Request) -> Response:
        return JSONResponse({"services": to_json(await (await bus_of(request)).services())})

    async def describe(request: Request) -> Response:
        name = request.path_params["name"]
        return JSONResponse(to_json(await (await bus_of(request)).describe(name)))

    async def call(request: Request) -> Response:
        service = request.path_params["service"]
        command = request.path_params["command"]
        timeout = _timeout(request, state)
        try:
            args = await _call_args(_limited(request, state.settings.max_body_bytes))
        except ClientDisconnect:
            return Response(status_code=400)
        client = await bus_of(request)
        if _wants_events(request):
            return StreamingResponse(
                _call_events(client, service, command, args, timeout),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        try:
            result = await client.call(service, command, args, timeout=timeout)
        except (OverflowError, ValueError, TypeError) as exc:
            raise _unencodable(exc) from None
        return JSONResponse({"result": to_json(result)})

    async def events(request: Request) -> Response:
        prefixes = request.query_params.getlist("prefix")
        if len(prefixes) > MAX_PREFIXES:
            raise BadRequest(
                f"at most {MAX_PREFIXES} prefix parameters, got {len(prefixes)}",
                details={"argument": "prefix", "problem": "too many"},
            )
        subscription = await state.subscribe(request.state.identity, *prefixes)
        try:
            await subscription.wait_ready()
        except BaseException:
            subscription.close()
            raise
        return StreamingResponse(
            _event_stream(subscription, prefixes),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    async def openapi(request: Request) -> Response:
        return JSONResponse(document(state.settings))

    # One mount, so that every /api/ path is answered here (404, or 405 with the route's own
    # Allow header), never by the page's static files behind it.
    api = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/services", typed(services), methods=["GET"]),
        Route("/services/{name}", typed(describe), methods=["GET"]),
        Route("/call/{service}/{command}", typed(call), methods=["POST"]),
        Route("/events", typed(events), methods=["GET"]),
    ]
    return [Mount("/api", routes=api)]


def _unencodable(exc: Exception) -> BadRequest:
    """An argument msgpack cannot carry (an integer beyond 64 bits, nesting too deep)."""
    return BadRequest(
        f"the arguments cannot be sent on the bus: {exc}", details={"problem": "not encodable"}
    )


async def _call_events(
    client: AsyncClient,
    service: str,
    command: str,
    args: dict[str, Any],
    timeout: float | None,
) -> AsyncIterator[str]:
    """A call as SSE: its progress, then its result or its typed error (with the HTTP status
    a plain request would have had in ``details.http_status``). A client that goes away
    cancels the call."""
    try:
        running = await client.start(service, command, args, timeout=timeout)
    except (OverflowError, ValueError, TypeError) as exc:
        yield _error_event(_unencodable(exc))
        return
    except BusError as exc:
        yield _error_event(exc)
        return
    finished = False
    try:
        async for update in running.updates():
            yield sse(update, "progress")
        try:
            result = await running.result()
        except BusError as exc:
            yield _error_event(exc)
        else:
            yield sse({"result": result}, "result")
        finished = True
    finally:
        if not finished:
            with contextlib.suppress(BusError, asyncio.CancelledError):
                await running.cancel()


def _error_event(exc: BusError) -> str:
    body = error_body(exc.wire_code, exc.message, exc.details)
    body["error"]["http_status"] = error_response(exc).status_code
    return sse(body, "error")


async def _event_stream(subscription: AsyncSubscription, prefixes: list[str]) -> AsyncIterator[str]:
    """Events as SSE: ``event: ready`` once subscribed, then one unnamed event per bus event
    (``topic``, ``src``, ``seq``, ``ts``, ``data``), each preceded by ``event: gap`` when events
    of its topic were lost before it (``missed``); a comment every ``KEEPALIVE_S`` when idle."""
    try:
        yield sse({"prefixes": prefixes}, "ready")
        while True:
            try:
                event = await subscription.next(timeout=KEEPALIVE_S)
            except BusError as exc:
                yield _error_event(exc)
                return
            if event is None:
                yield ": keep-alive\n\n"
                continue
            if event.missed:
                yield sse({"topic": event.topic, "src": event.src, "missed": event.missed}, "gap")
            yield sse(
                {
                    "topic": event.topic,
                    "src": event.src,
                    "seq": event.seq,
                    "ts": event.ts,
                    "data": event.data,
                }
            )
    finally:
        subscription.close()
