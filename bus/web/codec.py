"""Bus values as JSON and back, and Server-Sent Events framing.

msgpack carries what JSON cannot: bytes, maps with non-string keys, NaN and infinities. Out
of the bus (``to_json``), bytes become ``{"$bytes": N, "base64": "..."}`` (as ``linebus call
--json`` prints them), other keys their ``str``, and non-finite floats the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"``. Into the bus (``from_json``), an object whose only keys are
``base64`` (and optionally ``$bytes``, then checked) becomes bytes, so a result can be passed back
as an argument unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from bus.errors import BadRequest

__all__ = ["from_json", "sse", "to_json"]

_BYTES_KEYS = ({"base64"}, {"base64", "$bytes"})


def to_json(value: Any) -> Any:
    """``value`` (as a bus peer sent it) with only what JSON can say."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return {"$bytes": len(data), "base64": base64.b64encode(data).decode("ascii")}
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def from_json(value: Any, where: str = "args") -> Any:
    """A decoded JSON value for the bus: ``{"base64": ...}`` objects as bytes (see above).

    Raises:
        BadRequest: such an object holds text that is not base64, or a ``$bytes`` that is not
            its length; ``details['argument']`` names where.
    """
    if isinstance(value, dict):
        if set(value) in _BYTES_KEYS and isinstance(value["base64"], str):
            return _bytes(value, where)
        return {key: from_json(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def _bytes(value: dict[str, Any], where: str) -> bytes:
    try:
        data = base64.b64decode(value["base64"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            f"{where}: base64 text expected in its 'base64' key",
            details={"argument": where, "problem": "not base64"},
        ) from None
    size = value.get("$bytes")
    if size is not None and (type(size) is not int or size != len(data)):
        raise BadRequest(
            f"{where}: '$bytes' is {size!r} but the base64 text holds {len(data)} bytes",
            details={"argument": where, "problem": "length mismatch"},
        )
    return data


def sse(data: Any, event: str | None = None) -> str:
    """One Server-Sent Event: an ``event:`` line when named, the data as one line of JSON."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(to_json(data), ensure_ascii=False, allow_nan=False)}\n\n"
