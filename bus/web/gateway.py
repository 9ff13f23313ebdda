"""The HTTP/JSON gateway: ``/api/*`` (work in progress: see the README's web section)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bus.errors import BusError
from bus.web.state import WebState

__all__ = ["routes"]


def routes(state: WebState) -> list[BaseRoute]:
    """The gateway's routes, bound to ``state``'s bus connections."""

    async def services(request: Request) -> Response:
        client = await state.client(request.state.identity)
        try:
            rows = await client.services()
        except BusError as exc:
            return error_response(exc)
        return JSONResponse({"services": rows})

    return [Route("/api/services", services, methods=["GET"])]


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON of an error: ``{"error": {"code", "message", "details"}}``."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(exc: BusError) -> JSONResponse:
    """A typed bus error as an HTTP response."""
    return JSONResponse(error_body(exc.wire_code, exc.message, exc.details), status_code=502)
