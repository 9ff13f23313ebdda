"""Target ``remotelab``: the rerobots API answers, actors/remotelab/protocol.py.

Input: two bytes of HTTP status (taken modulo 600), then the body. Every answer parser reads it,
and an instance's connection details are read from what ``parse_instance_info`` accepts.

Documented errors (the module docstring): ``ApiError`` (``device_fault``: a refusal or a
malformed answer) and ``ApiUnavailable`` (``device_unavailable``: a 5xx).
"""

from __future__ import annotations

import contextlib

from actors.remotelab import protocol
from actors.remotelab.protocol import (
    ApiError,
    ApiUnavailable,
    HttpRequest,
    HttpResponse,
    InstanceConnection,
)

ERRORS = (ApiError, ApiUnavailable)

_REQUEST = HttpRequest("GET", "/fuzz", operation="fuzz")
_PARSERS = (
    protocol.check_ok,
    protocol.parse_json,
    protocol.parse_wtypes,
    protocol.parse_list("rules"),
    protocol.parse_deployments,
    protocol.parse_instances,
    protocol.parse_instance_info,
    protocol.parse_new_instance,
    protocol.parse_addon_status,
    lambda request, response: protocol.parse_snapshot(request, response, "fuzz-instance"),
)


def fuzz_one(data: bytes) -> None:
    """Parse one answer with every parser."""
    if len(data) < 2:
        return
    response = HttpResponse(int.from_bytes(data[:2], "big") % 600, data[2:])
    for parse in _PARSERS:
        with contextlib.suppress(ERRORS):
            parse(_REQUEST, response)
    try:
        info = protocol.parse_instance_info(_REQUEST, response)
    except ERRORS:
        return
    connection = InstanceConnection.from_info(info)
    if connection is not None:
        with contextlib.suppress(ERRORS):
            connection.key_type_and_data()
