"""Helpers for tests and benchmarks: a small actor with every kind of command, waiters, ports,
and the demo line relocated to free ports (``DemoConfig``).

``wait_until`` (and ``async_wait_until`` on an event loop) is the one way tests, benchmarks and
the demo wait for a condition: always with a timeout, and on failure an error that says what was
awaited and the last value seen.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bus.actor import Actor, CommandContext, command
from bus.errors import DeviceFault, from_wire

__all__ = ["DemoConfig", "EchoActor", "WaitTimeout", "async_wait_until", "free_port", "wait_until"]

T = TypeVar("T")

#: The configs/ folder of the source tree (the demo line's configs).
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


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
    async def work(
        self, steps: int, step_s: float, ctx: CommandContext, fail_at: int = 0
    ) -> dict[str, int]:
        """Run ``steps`` steps of ``step_s`` seconds each, reporting progress after each one;
        with ``fail_at`` > 0, fail with ``device_fault`` after that step."""
        for i in range(steps):
            await asyncio.sleep(step_s)
            ctx.progress({"done": i + 1, "total": steps})
            if i + 1 == fail_at:
                raise DeviceFault(f"failed at step {fail_at}", device_code="SIMULATED")
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

    @command(concurrent=True)
    def exit(self, code: int = 1) -> None:
        """Kill this process at once, as a crash would, even mid-job (for supervisor tests)."""
        os._exit(code)

    @command
    def emit(self, event: str, count: int = 1, data: Any = None) -> int:
        """Publish ``count`` events on ``<service>.<event>``."""
        for _ in range(count):
            self.publish(event, data)
        return count


class WaitTimeout(AssertionError):
    """A ``wait_until`` ran out of time (an AssertionError: in a test it is a failure)."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str | Callable[[], str],
    *,
    interval: float = 0.02,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns a true value, and return that value.

    Args:
        predicate: Called at once, then every ``interval`` seconds.
        timeout: Seconds before giving up.
        what: What is awaited, for the error ("echo1 up"); a callable is asked at the time of
            the error (to describe what was seen meanwhile).
        interval: Pause between two calls.
        ignore: Exceptions of the predicate that count as "not yet" (a broker that is
            restarting answers ``Unavailable``).

    Raises:
        WaitTimeout: ``timeout`` passed first; the message names ``what`` and the last value.
    """
    poll = _poller(predicate, timeout, what, ignore)
    while (value := poll()) is None:
        time.sleep(interval)
    return value


async def async_wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str | Callable[[], str],
    *,
    interval: float = 0.01,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """``wait_until`` on an event loop: the pauses are ``asyncio.sleep``, so the loop runs on."""
    poll = _poller(predicate, timeout, what, ignore)
    while (value := poll()) is None:
        await asyncio.sleep(interval)
    return value


def _poller(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str | Callable[[], str],
    ignore: tuple[type[Exception], ...],
) -> Callable[[], T | None]:
    """One call of ``predicate`` per call: its value if true, else None, WaitTimeout when late."""
    end = time.monotonic() + timeout

    def poll() -> T | None:
        try:
            value = predicate()
        except ignore as exc:  # not yet; shown as the last value if it stays so
            last: object = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= end:
            awaited = what() if callable(what) else what
            raise WaitTimeout(
                f"timed out after {timeout:g} s waiting for {awaited}; last value: {last!r}"
            )
        return None

    return poll


# Ports for test and benchmark lines are taken below the kernel's ephemeral range (Linux default
# 32768-60999): a port from there can be handed to some process's outgoing connection between the
# moment we find it free and the moment the broker binds it ("Address already in use", seen on a
# busy machine). Below it, only explicit binds compete. The range also stays clear of the demo's
# fixed ports (7750-7752, 18080, 21234-21235, 21901).
_TEST_PORTS = range(22000, 32000)
_port_cursor: list[int] = []


def free_port() -> int:
    """A port on 127.0.0.1 that is free for both TCP and UDP now and outside the ephemeral range.

    Successive calls in one process walk the range from a random start, so two test runs on one
    machine rarely try the same ports, and a port is not handed out twice by one process.
    """
    if not _port_cursor:
        _port_cursor.append(
            _TEST_PORTS.start + int.from_bytes(os.urandom(2), "big") % len(_TEST_PORTS)
        )
    for _ in range(len(_TEST_PORTS)):
        port = _port_cursor[0]
        _port_cursor[0] = _TEST_PORTS.start + (port + 1 - _TEST_PORTS.start) % len(_TEST_PORTS)
        if _bindable(port):
            return port
    raise OSError("no free port in the test range 22000-31999")


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


#: A loopback address and its port in a config.
_ADDRESS = r"\b(127\.0\.0\.\d+):(\d+)"


@dataclass
class DemoConfig:
    """A copy of a config of configs/ (the demo line) on free loopback ports, its state files
    (databases, keys under var/) in a folder of the test's own.

    The tests, the fault suite and the soak (bench/soak.py) run the demo line so, beside any
    demo line someone is running."""

    path: Path
    #: Each port of the original config and the free port that replaced it.
    ports: dict[str, str]
    #: Hosts moved to other loopback addresses, their ports kept (see ``write``).
    hosts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def write(
        cls,
        name: str,
        folder: Path,
        hosts: dict[str, str] | None = None,
        configs: Path | None = None,
    ) -> DemoConfig:
        """configs/``name`` relocated into ``folder``: every 127.0.0.N:PORT moves to a free port,
        so a test never collides with a demo line someone is running; the hosts of ``hosts``
        (old -> new address) move to the new address instead and keep their ports (as a FLUX
        printer's fixed 23811, which vendor code writes as a number). ``configs``: the folder of
        ``name`` (the source tree's configs/ by default)."""
        text = ((configs or CONFIGS) / name).read_text()
        hosts = dict(hosts or {})
        ports = {
            port: str(free_port())
            for host, port in sorted(set(re.findall(_ADDRESS, text)))
            if host not in hosts
        }
        demo = cls(folder / name, ports, hosts)
        text = demo.relocate(text)
        # ([security] paths are relative to the config file's directory: "../var/".)
        text = text.replace('"../var/', f'"{folder}/var/').replace('"var/', f'"{folder}/var/')
        demo.path.write_text(text)
        return demo

    def relocate(self, text: str) -> str:
        """``text`` with the config's addresses moved as in the config (moved hosts also where
        they stand alone; other ports unchanged)."""

        def move(match: re.Match[str]) -> str:
            host, port = match.group(1), match.group(2)
            if host in self.hosts:
                return self.hosts[host] + (f":{port}" if port else "")
            return f"{host}:{self.ports.get(port, port)}" if port else host

        return re.sub(r"\b(127\.0\.0\.\d+)\b(?::(\d+))?", move, text)
