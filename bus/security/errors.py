"""The errors of the security package, under linebus's one hierarchy (``bus.errors``).

Both are start-up (or reload) errors of the configuration, so both are ``ConfigError``: a
configured but unusable key or access list stops the process with a message naming the file,
variable or table and what is wrong with it; nothing ever falls back to running without security.
"""

from __future__ import annotations

from bus.errors import ConfigError

__all__ = ["AclError", "KeyFileError"]


class KeyFileError(ConfigError):
    """A key cannot be used: ``details['source']`` names the file or variable, ``details['problem']``
    is one of ``missing``, ``unreadable``, ``permissions``, ``malformed``, ``exists``."""

    def __init__(self, source: str, problem: str, explanation: str) -> None:
        super().__init__(f"{source}: {explanation}", details={"source": source, "problem": problem})

    @property
    def source(self) -> str:
        """The file path or ``$VARIABLE`` (or config key) the key was to come from."""
        return str(self.details["source"])

    @property
    def problem(self) -> str:
        """A stable word for what is wrong (see the class docstring)."""
        return str(self.details["problem"])


class AclError(ConfigError):
    """An access list does not parse; the message names the table and key at fault."""
