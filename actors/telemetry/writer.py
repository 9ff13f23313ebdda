"""``StoreWriter``: the telemetry actor's one writer thread, with one hand-back to the loop per write.

Writes run one at a time, in the order they were submitted (the order their commands arrived),
so messages are stored, and their events published, in that order. A write's ``then`` runs on
the event loop right before its future resolves, in the same loop callback: the events of a
batch go out before its command answers, and the hand-back costs one wake-up of the loop
instead of two (``run_in_executor`` plus a ``call_soon_threadsafe`` for the events), which is
measurable at thousands of writes per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["StoreWriter"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], Callable[[Any], None] | None, "asyncio.Future[Any]"]


class StoreWriter:
    """One thread running store writes in order for an event loop; see the module docstring.

    Args:
        loop: The loop whose futures the writes resolve.
        name: The thread's name.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[[], T], then: Callable[[T], None] | None = None
    ) -> asyncio.Future[T]:
        """Run ``fn`` on the writer thread after the writes submitted before it.

        Call it from the loop, before the command's first await, so writes keep the order of
        the commands. ``then(result)`` runs on the loop just before the future resolves (not
        when ``fn`` raised); an exception of ``then`` goes to the loop's exception handler and
        the future still gets the result (what ``fn`` wrote is durable: the command succeeded).
        """
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, then, future))
        return future

    def close(self) -> None:
        """Finish the writes submitted so far and end the thread (blocking: call it in a thread)."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, then, future = job
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed to the awaiting command
                result, error = None, exc
            # A closed loop (RuntimeError): nobody waits for the answer any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_settle, future, then, result, error)


def _settle(
    future: asyncio.Future[Any],
    then: Callable[[Any], None] | None,
    result: Any,
    error: BaseException | None,
) -> None:
    if error is None and then is not None:
        try:
            then(result)
        except Exception as exc:
            future.get_loop().call_exception_handler(
                {"message": "telemetry: after a write", "exception": exc, "future": future}
            )
    if future.done():  # the command was cancelled meanwhile; the write happened all the same
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
