"""The OpenAPI 3 document of the gateway (``GET /api/openapi.json``), written by hand.

It says what ``bus.web.gateway`` does: its routes, parameters, bodies, answers and errors. The
schemathesis test (tests/integration/test_web_gateway.py) calls every operation but the endless
event stream with generated requests and checks the answers against it.
"""

from __future__ import annotations

from typing import Any

from bus.web.state import WebSettings

__all__ = ["document"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*statuses: int) -> dict[str, Any]:
    what = {
        400: "Bad input: the body, an argument or a parameter (code bad_request, invalid_arguments)",
        401: "Tokens are configured and none, or an unknown one, was given",
        403: "The access list refuses this identity (code forbidden)",
        404: "Unknown service or command (unknown_service, unknown_command)",
        409: "The call was cancelled (cancelled)",
        410: "Events no longer kept (too_old)",
        413: "The body is larger than the gateway accepts (payload_too_large)",
        415: "The body is neither JSON nor multipart/form-data (unsupported_media_type)",
        500: "The actor failed unexpectedly (internal, config_error)",
        502: "A device or the line behind the gateway failed (device_error, device_fault ...)",
        503: "The service or the broker is not available now; retry (unavailable, busy ...)",
        504: "The deadline passed (deadline_exceeded, device_timeout)",
        507: "The actor's storage failed (storage_error)",
    }
    return {
        str(status): {
            "description": what[status],
            "content": {"application/json": {"schema": _ERROR}},
        }
        for status in statuses
    }


_BUS_ERRORS = (400, 401, 403, 404, 409, 410, 500, 502, 503, 504, 507)


def document(settings: WebSettings | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document (limits taken from ``settings``)."""
    settings = settings or WebSettings()
    name = {"type": "string", "minLength": 1}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "linebus HTTP/JSON gateway",
            "version": "1",
            "description": (
                "The bus of a production line over HTTP. Bytes travel as"
                ' {"$bytes": N, "base64": "..."} out and {"base64": "..."} in. Errors are'
                ' {"error": {"code", "message", "details"}} with the bus\'s error codes.'
            ),
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/api/services": {
                "get": {
                    "operationId": "services",
                    "summary": "Every service the broker has seen, with its state",
                    "responses": {
                        "200": {
                            "description": "The services",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["services"],
                                        "properties": {
                                            "services": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Service"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(401, 403, 502, 503, 504),
                    },
                }
            },
            "/api/services/{name}": {
                "get": {
                    "operationId": "describe",
                    "summary": "A service's commands, their arguments and docs",
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": name}
                    ],
                    "responses": {
                        "200": {
                            "description": "The service and its commands",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Description"}
                                }
                            },
                        },
                        **_errors(*_BUS_ERRORS),
                    },
                }
            },
            "/api/call/{service}/{command}": {
                "post": {
                    "operationId": "call",
                    "summary": "Call a command of a service",
                    "description": (
                        "The body holds the arguments. With `Accept: text/event-stream` the"
                        " answer is a stream of `progress` events, then `result` or `error`."
                    ),
                    "parameters": [
                        {"name": "service", "in": "path", "required": True, "schema": name},
                        {"name": "command", "in": "path", "required": True, "schema": name},
                        {
                            "name": "timeout",
                            "in": "query",
                            "required": False,
                            "description": "The call's deadline in seconds",
                            "schema": {
                                "type": "number",
                                "exclusiveMinimum": True,
                                "minimum": 0,
                                "maximum": settings.max_timeout_s,
                            },
                        },
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "additionalProperties": True}
                            },
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string", "format": "binary"},
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The command's result (or its progress, as SSE)",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["result"],
                                        "properties": {"result": {}},
                                    }
                                },
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(*_BUS_ERRORS, 413, 415),
                    },
                }
            },
            "/api/events": {
                "get": {
                    "operationId": "events",
                    "summary": "Events whose topic starts with one of the prefixes, as SSE",
                    "description": (
                        "First `event: ready` once subscribed; then one unnamed event per bus event"
                        " (topic, src, seq, ts, data), preceded by `event: gap` (topic, src,"
                        " missed) when events of its topic were lost. Endless."
                    ),
                    "parameters": [
                        {
                            "name": "prefix",
                            "in": "query",
                            "required": False,
                            "style": "form",
                            "explode": True,
                            "schema": {
                                "type": "array",
                                "maxItems": 32,
                                "items": {"type": "string"},
                            },
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403, 502, 503, 504),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "details"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        }
                    },
                },
                "Service": {
                    "type": "object",
                    "required": ["name", "state"],
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string", "nullable": True},
                        "state": {"type": "string"},
                        "since": {"type": "number"},
                        "pid": {"type": "integer", "nullable": True},
                    },
                },
                "Description": {
                    "type": "object",
                    "required": ["name", "commands"],
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string", "nullable": True},
                        "state": {"type": "string"},
                        "doc": {"type": "string", "nullable": True},
                        "commands": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "args": {"type": "array", "items": {"type": "object"}},
                                    "returns": {"type": "string"},
                                    "doc": {"type": "string", "nullable": True},
                                    "progress": {"type": "boolean"},
                                    "privileged": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
