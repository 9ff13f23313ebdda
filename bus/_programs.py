"""Finding a system program (a broker the tests or the benchmark start) by name."""

from __future__ import annotations

import os
import shutil

__all__ = ["find_program"]

#: Where Debian and a local install put programs; ``/usr/sbin`` (mosquitto, for one) is not on
#: every user's PATH.
SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


def find_program(name: str) -> str | None:
    """The path of the executable ``name`` on PATH or in :data:`SYSTEM_DIRS`; None if absent."""
    found = shutil.which(name)
    if found:
        return found
    candidates = (os.path.join(folder, name) for folder in SYSTEM_DIRS)
    return next((path for path in candidates if os.access(path, os.X_OK)), None)
