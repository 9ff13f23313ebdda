"""The FlashRunner simulator stops quietly with clients connected (issue 14: it printed a
``CancelledError`` traceback per connection): in-process, on loopback ports it picks itself."""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flashrunner.simulator import _STOP_CONNECTIONS_S, FlashRunnerSimulator


def test_stop_with_clients_connected_reports_nothing() -> None:
    """A command client and a logger client connected; stop(), then the event loop ends as
    ``python -m actors.flashrunner.simulator`` ends on SIGTERM: nothing reaches the loop's
    exception handler (where the traceback came from), and the connections ended by themselves
    (well within the time after which stop() cancels them)."""
    reported: list[dict[str, Any]] = []
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        sim = FlashRunnerSimulator(private_key=key)
        await sim.start()
        _, command = await asyncio.open_connection(sim.host, sim.port)
        logger_reader, logger = await asyncio.open_connection(sim.host, sim.logger_port)
        await asyncio.wait_for(logger_reader.readline(), 5)  # the greeting: it is registered
        started = loop.time()
        await sim.stop()
        took = loop.time() - started
        for writer in (command, logger):
            writer.close()
        return took

    took = asyncio.run(scenario())
    assert reported == []
    assert took < _STOP_CONNECTIONS_S
