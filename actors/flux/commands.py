"""The FluxRobot command words and reply shapes (flux.md §1.6), as pure functions.

Builders return the command text to frame with ``protocol.encode_command``; parsers take the
text of a reply frame. Paths are ``/SD/...`` or ``/USB/...``; arguments are shlex-quoted, which
the device (it splits with shlex) undoes, so names with spaces survive (§1.4).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

__all__ = [
    "ENTRIES",
    "cp_command",
    "fetch_log_command",
    "file_command",
    "guess_mimetype",
    "move_command",
    "parse_config_get",
    "parse_deviceinfo",
    "parse_json_object",
    "parse_kv",
    "parse_listing",
    "raw_quit_end",
    "split_path",
    "upload_command",
]

ENTRIES = ("SD", "USB")
_MIMETYPES = {".gcode": "text/gcode", ".fc": "application/fcode", ".fxfw": "binary/flux-firmware"}
_MOVE_AXES = ("f", "x", "y", "z", "e")


def split_path(path: str) -> tuple[str, str]:
    """Split ``/SD/a/b.fc`` into the entry ``SD`` and the relative path ``a/b.fc``.

    Raises:
        ValueError: The path is not under ``/SD`` or ``/USB``.
    """
    parts = path.strip("/").split("/", 1)
    if parts[0] not in ENTRIES:
        raise ValueError(f"path must start with /SD/ or /USB/, not {path!r}")
    return parts[0], parts[1] if len(parts) > 1 else ""


def _args(*words: str) -> str:
    return " ".join(shlex.quote(word) for word in words)


def file_command(operation: str, path: str) -> str:
    """``file <ls|info|md5|mkdir|rmdir|rm|download> <E> <P>``, or ``player select <E> <P>``."""
    if operation == "select":
        return f"player select {_args(*split_path(path))}"
    return f"file {operation} {_args(*split_path(path))}"


def cp_command(source: str, target: str) -> str:
    """``file cp <E1> <P1> <E2> <P2>``."""
    return f"file cp {_args(*split_path(source), *split_path(target))}"


def fetch_log_command(path: str) -> str:
    """``fetch_log <path>`` (relative to the device's log folder; the device refuses escapes).

    Raises:
        ValueError: An empty path, or one with NUL or line breaks.
    """
    if not path or any(char in path for char in "\x00\n\r"):
        raise ValueError(f"bad log path {path!r}")
    return f"fetch_log {_args(path)}"


def guess_mimetype(name: str) -> str:
    """The mimetype fluxclient derives from a file name (``binary`` when unknown)."""
    lowered = name.lower()
    for suffix, mimetype in _MIMETYPES.items():
        if lowered.endswith(suffix):
            return mimetype
    return "binary"


def upload_command(mimetype: str, size: int, upload_to: str) -> str:
    """``file upload <mime> <size> #`` (select as the job) or ``... <E> <P>`` (store on SD)."""
    if upload_to == "#":
        return f"file upload {_args(mimetype)} {size} #"
    path = upload_to if upload_to.startswith("/") else "/" + upload_to
    return f"file upload {_args(mimetype)} {size} {_args(*split_path(path))}"


def move_command(**axes: float) -> str:
    """``move x:<f> y:<f> ...`` for the maintain task; keys among f, x, y, z, e.

    Raises:
        ValueError: No axis, or an unknown one.
    """
    unknown = set(axes) - set(_MOVE_AXES)
    if unknown or not axes:
        raise ValueError(f"move takes some of {_MOVE_AXES}, got {sorted(axes)}")
    return "move " + " ".join(f"{key}:{axes[key]:f}" for key in _MOVE_AXES if key in axes)


#: Zero bytes that announce the end of raw mode (the device sends 64, then ``\x01``; fluxclient
#: waits for more than 8 zeros, then a non-zero byte).
RAW_SYNC = 9


def raw_quit_end(data: bytes) -> int | None:
    """Where framed answers resume after ``quit`` in raw mode: the index past the zeros and the
    non-zero byte that end it, or None while that marker is not complete in ``data``."""
    start = data.find(b"\x00" * RAW_SYNC)
    if start < 0:
        return None
    index = start + RAW_SYNC
    while index < len(data) and data[index] == 0:
        index += 1
    return index + 1 if index < len(data) else None


def parse_listing(text: str) -> list[tuple[bool, str]]:
    """Entries ``D<name>\\0F<name>\\0...`` → ``[(is_dir, name), ...]``."""
    return [(item[0] == "D", item[1:]) for item in text.split("\x00") if item]


def parse_kv(text: str) -> dict[str, str]:
    """``k=v\\0k=v...`` (after ``ok``) → dict; items without ``=`` are skipped."""
    pairs = (item.partition("=") for item in text.split("\x00"))
    return {key: value for key, sep, value in pairs if sep}


def parse_deviceinfo(text: str) -> dict[str, str]:
    """``ok\\nkey:value\\n...`` → dict of strings."""
    lines = text.split("\n")[1:] if text.startswith("ok") else text.split("\n")
    pairs = (line.partition(":") for line in lines)
    return {key: value for key, sep, value in pairs if sep}


def parse_config_get(text: str) -> str | None:
    """``ok VAL <value>`` → value; ``ok EMPTY`` → None."""
    words = text.split(" ", 2)
    if len(words) >= 2 and words[1] == "VAL":
        return words[2] if len(words) == 3 else ""
    return None


def parse_json_object(text: str) -> dict[str, Any]:
    """A bare JSON object reply (``player report``, ``headinfo`` after ``ok``).

    Raises:
        ValueError: Not a JSON object.
    """
    try:
        value = json.loads(text)
    except RecursionError:  # json reads nesting with the C stack; a device may send anything
        raise ValueError(f"JSON nested too deep in {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {text[:80]!r}")
    return value
