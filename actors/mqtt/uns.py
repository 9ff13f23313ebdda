"""The Unified Namespace profile, sans-io: which MQTT topic each thing of the line goes to, and
how payloads are encoded.

Under the namespace ``<root>`` (``acme/plant1/assembly/line3``):

| MQTT topic | retained | payload |
|---|---|---|
| ``<root>/status`` | yes | the bridge: ``{"online": true, "since"}``; its will ``{"online": false}`` |
| ``<root>/<service>/presence`` | yes | the broker's ``presence.<service>`` event data |
| ``<root>/<service>/state`` | yes | the last ``<service>.<state event>`` envelope |
| ``<root>/<service>/event/<rest>`` | no | envelope of event ``<service>.<rest>`` (dots as ``/``) |
| ``<root>/<service>/cmd/<command>`` | — | MQTT 5 requests to the bridge (``parse_command``) |

An event envelope keeps what linebus knows of it: ``{"topic", "src", "epoch", "seq", "ts",
"data"}`` (``seq`` and ``epoch`` let a consumer spot gaps and restarts as a bus subscriber does).
JSON by default (bytes as ``{"$bytes": base64}``), msgpack as an option.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import msgpack

__all__ = [
    "Envelope",
    "command_filter",
    "encode",
    "event_topic",
    "parse_command",
    "presence_topic",
    "qos_for",
    "state_topic",
    "status_topic",
]

Envelope = dict[str, Any]

#: What may not stand in a topic level, and what it becomes there.
_LEVEL_UNSAFE = str.maketrans({"+": "_", "#": "_", "/": "_", "\0": "_"})


def _level(text: str) -> str:
    return text.translate(_LEVEL_UNSAFE) or "_"


def status_topic(root: str) -> str:
    """The bridge's own retained status (and will) topic."""
    return f"{root}/status"


def presence_topic(root: str, service: str) -> str:
    """The retained presence of ``service``."""
    return f"{root}/{_level(service)}/presence"


def state_topic(root: str, service: str) -> str:
    """The retained state of ``service``."""
    return f"{root}/{_level(service)}/state"


def event_topic(root: str, topic: str) -> str:
    """The MQTT topic of linebus event ``topic`` (``echo1.stream.a`` ->
    ``<root>/echo1/event/stream/a``)."""
    service, _, rest = topic.partition(".")
    levels = [_level(part) for part in rest.split(".")] if rest else ["_"]
    return f"{root}/{_level(service)}/event/" + "/".join(levels)


def command_filter(root: str) -> str:
    """The subscription that receives every command request of this line."""
    return f"{root}/+/cmd/+"


def parse_command(root: str, topic: str) -> tuple[str, str] | None:
    """``(service, command)`` of a request topic ``<root>/<service>/cmd/<command>``, or None."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 3 or parts[1] != "cmd" or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[2]


def qos_for(topic: str, qos: dict[str, int]) -> int:
    """The QoS of linebus event ``topic``: that of the longest matching prefix in ``qos``, else 0."""
    best = -1
    level = 0
    for prefix, value in qos.items():
        if topic.startswith(prefix) and len(prefix) > best:
            best, level = len(prefix), value
    return level


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode(value: Any, fmt: Literal["json", "msgpack"]) -> bytes:
    """``value`` as an MQTT payload in format ``fmt``."""
    if fmt == "msgpack":
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def decode_json(payload: bytes) -> Any:
    """A JSON request payload (empty: None), bytes given as ``{"$bytes": base64}`` restored.

    Raises:
        ValueError: not UTF-8 JSON.
    """
    if not payload.strip():
        return None

    def hook(obj: dict[str, Any]) -> Any:
        if set(obj) == {"$bytes"} and isinstance(obj["$bytes"], str):
            return base64.b64decode(obj["$bytes"])
        return obj

    return json.loads(payload.decode(), object_hook=hook)
