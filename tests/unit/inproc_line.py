"""A line inside the test process for the unit tier: a ``Broker`` serving from a thread on
loopback TCP ports it picks itself (``tcp://127.0.0.1:*``), and ``EchoActor``s serving from
threads with event loops of their own.

For tests of code that takes TCP endpoints (the command line, the supervisor's start-up wait,
the demo's helpers) without starting processes. Every wait is bounded by ``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable

import structlog

from bus.actor import Actor, ActorSettings
from bus.broker import Broker
from bus.client import Client
from bus.config import BrokerConfig
from bus.testing import EchoActor, wait_until

__all__ = ["WAIT_S", "ActorThread", "BrokerThread", "Line", "service_up"]

#: Upper bound of every wait; the waits end as soon as their condition holds.
WAIT_S = 10.0


class BrokerThread(threading.Thread):
    """A started ``Broker`` on ``tcp://127.0.0.1:*`` serving from a thread of its own."""

    def __init__(self) -> None:
        super().__init__(name="test-broker", daemon=True)
        any_port = "tcp://127.0.0.1:*"
        self.broker = Broker(
            BrokerConfig(any_port, any_port, any_port, heartbeat_s=1.0, heartbeat_timeout_s=30.0)
        )
        self.endpoints = self.broker.start()
        self.command = self.endpoints["command"]
        self.subscribe = self.endpoints["subscribe"]

    def run(self) -> None:
        self.broker.run()

    def close(self) -> None:
        self.broker.stop()
        self.join(WAIT_S)
        assert not self.is_alive(), "the broker thread did not stop"


class ActorThread(threading.Thread):
    """An actor (an ``EchoActor`` unless ``make`` builds another) serving in a thread with its
    own event loop."""

    def __init__(
        self, name: str, broker: BrokerThread, make: Callable[[str], Actor] = EchoActor
    ) -> None:
        super().__init__(name=f"test-actor-{name}", daemon=True)
        # The actor binds its logger when it is made, to the stream configured then: make it
        # with one that lasts (the process's stderr, warnings and above), never a test's
        # captured stream, which is closed when that test ends.
        saved = structlog.get_config()
        structlog.configure(
            logger_factory=structlog.PrintLoggerFactory(sys.__stderr__),
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        )
        try:
            self.actor = make(name)
        finally:
            structlog.configure(**saved)
        self.settings = ActorSettings(
            broker.command, broker.endpoints["publish"], heartbeat_timeout_s=30.0
        )
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._halt: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._halt = asyncio.Event()
        self._started.set()
        await self.actor.serve(self.settings, stop=self._halt)

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the actor's event loop."""
        assert self._started.wait(WAIT_S) and self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        assert self._started.wait(WAIT_S)
        assert self._loop is not None and self._halt is not None
        self._loop.call_soon_threadsafe(self._halt.set)
        self.join(WAIT_S)
        assert not self.is_alive(), "the actor thread did not stop"


def service_up(endpoint: str, name: str) -> Callable[[], bool]:
    """A predicate: ``name`` is up at the broker of ``endpoint``."""

    def check() -> bool:
        with Client(endpoint, timeout=1.0) as client:
            return any(r["name"] == name and r["state"] == "up" for r in client.services())

    return check


class Line:
    """A broker and one echo actor, ``service``, registered with it."""

    def __init__(self, service: str = "echo") -> None:
        self.broker = BrokerThread()
        self.broker.start()
        self.actor = ActorThread(service, self.broker)
        self.actor.start()
        wait_until(service_up(self.command, service), WAIT_S, f"{service} up")

    @property
    def command(self) -> str:
        return self.broker.command

    def close(self) -> None:
        self.actor.close()
        self.broker.close()

    def at(self, *argv: str) -> list[str]:
        """``argv`` with this line's endpoints."""
        return [
            *argv,
            "--endpoint",
            self.command,
            "--subscribe",
            self.broker.subscribe,
            "--timeout",
            str(WAIT_S),
        ]
