"""Target ``config``: the line config loader, bus/config.py, on arbitrary TOML text.

Input: the bytes of a config file, read by ``bus.config.loads`` as ``load`` reads a file.

Documented errors: ``ConfigError`` (not UTF-8, not TOML, an unknown key, a wrong type, an
invalid name, a malformed key or access list).
"""

from __future__ import annotations

import contextlib

from bus.config import loads
from bus.errors import ConfigError

ERRORS = (ConfigError,)


def fuzz_one(data: bytes) -> None:
    """Load ``data`` as a config file's contents."""
    with contextlib.suppress(ERRORS):
        loads(data, "fuzz.toml")
