"""Helpers for tests and benchmarks: a small actor with every kind of command, and waiters."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from bus.actor import Actor, CommandContext, command
from bus.errors import DeadlineExceeded, DeviceFault, from_wire

__all__ = ["EchoActor", "wait_for"]


class EchoActor(Actor):
    """A device-less actor for tests, benchmarks and the bus part of the demo."""

    kind = "echo"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.calls = 0

    @command
    def echo(self, value: Any = None) -> Any:
        """Return ``value`` unchanged."""
        self.calls += 1
        return value

    @command
    async def aecho(self, value: Any = None) -> Any:
        """Return ``value`` unchanged, from a coroutine (exercises the async path)."""
        return value

    @command
    def add(self, a: int, b: int = 0) -> int:
        """Return ``a + b`` (exercises argument validation)."""
        return a + b

    @command
    async def work(self, steps: int, step_s: float, ctx: CommandContext) -> dict[str, int]:
        """Run ``steps`` steps of ``step_s`` seconds each, reporting progress after each one."""
        for i in range(steps):
            await asyncio.sleep(step_s)
            ctx.progress({"done": i + 1, "total": steps})
        return {"steps": steps}

    @command
    def blob(self, size: int) -> bytes:
        """Return ``size`` bytes (bulk frames above 64 KiB)."""
        return os.urandom(16) * (size // 16) + b"x" * (size % 16)

    @command
    def length(self, data: bytes) -> int:
        """Return the length of ``data`` (upload path)."""
        return len(data)

    @command
    def fail(self, code: str = "device_fault", message: str = "simulated failure") -> None:
        """Raise the error of wire code ``code``."""
        if code == "device_fault":
            raise DeviceFault(message, device_code="SIMULATED")
        raise from_wire(code, message)

    @command
    def crash(self) -> None:
        """Raise an unexpected exception (a bug): callers get ``internal``."""
        raise RuntimeError("simulated bug")

    @command
    def exit(self, code: int = 1) -> None:
        """Kill this process at once, as a crash would (for supervisor tests)."""
        os._exit(code)

    @command
    def emit(self, event: str, count: int = 1, data: Any = None) -> int:
        """Publish ``count`` events on ``<service>.<event>``."""
        for _ in range(count):
            self.publish(event, data)
        return count


def wait_for(predicate: Callable[[], Any], timeout: float, *, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; raise DeadlineExceeded after ``timeout``.

    The error names ``what`` and the last value seen, so a failing test says what it waited for.
    """
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= end:
            raise DeadlineExceeded(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
