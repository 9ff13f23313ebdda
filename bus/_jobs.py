"""Job events: a command that reports progress is also announced to anyone who listens.

A command that declares a ``CommandContext`` parameter (``describe`` flags it ``progress``) is a
*job*. Besides the PROGRESS messages its caller gets, the runtime publishes its life on the
actor's topic ``<service>.job`` (docs/PROTOCOL.md §9, "Job events"), so a dashboard or
``linebus top`` can follow every running job of the line without being its caller:

- ``started`` when the command begins to run (not while it waits in the queue);
- ``progress`` with the update as the caller got it, at most ``min_interval_s`` apart per job
  (a fast loop reporting every block does not flood the bus). An update held back is sent when
  the interval has passed, and always before ``ended``, so the last progress is never lost;
- ``ended`` with the outcome (``ok``, ``error`` with its code and message, ``cancelled``) and
  the duration.

Every body carries ``job`` (the request's ``msg_id``, unique among requests in flight at the
broker), ``command``, ``state`` and ``elapsed_s``, so a listener that joins while a job runs can
show it from the next event on. The actor never learns who called (the broker does not pass
the caller's identity on), so the events name no caller.

Only jobs pay: commands without a ``CommandContext`` never reach this module, and with nobody
subscribed to ``<service>.job`` the publisher does not even encode the events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bus.errors import BusError, Cancelled

__all__ = ["JOB_EVENT", "MIN_INTERVAL_S", "Job", "JobEvents"]

#: The event name: job events go out on ``<service>.job``.
JOB_EVENT = "job"

#: At most this often a job's progress is published (4 a second).
MIN_INTERVAL_S = 0.25

Publish = Callable[[str, Any], None]
_NOTHING = object()


class JobEvents:
    """Starts a ``Job`` per running command; one per actor, given the actor's ``publish``.

    Args:
        publish: ``Publisher.publish``: ``(event, data)``.
        min_interval_s: The shortest time between two published progress updates of one job.
        clock: Monotonic seconds (a test passes a fake).
    """

    __slots__ = ("_clock", "_min_interval_s", "_publish")

    def __init__(
        self,
        publish: Publish,
        *,
        min_interval_s: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publish = publish
        self._min_interval_s = min_interval_s
        self._clock = clock

    def start(self, job_id: str, command: str) -> Job:
        """Publish ``started`` for ``command`` running as request ``job_id``; return its Job.

        Call it in the event loop: held-back progress is flushed by a timer of the running loop.
        """
        job = Job(self._publish, job_id, command, self._min_interval_s, self._clock)
        job.publish("started", {})
        return job


class Job:
    """The job events of one running command; made by ``JobEvents.start``."""

    __slots__ = (
        "_clock",
        "_held",
        "_last_sent",
        "_min_interval_s",
        "_publish",
        "_started",
        "_timer",
        "command",
        "job_id",
    )

    def __init__(
        self,
        publish: Publish,
        job_id: str,
        command: str,
        min_interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._publish = publish
        self.job_id = job_id
        self.command = command
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._started = clock()
        self._last_sent = -float("inf")
        self._held: Any = _NOTHING
        self._timer: asyncio.TimerHandle | None = None

    def publish(self, state: str, fields: dict[str, Any]) -> None:
        """Publish one event of this job: ``state`` and ``fields`` beside the common fields."""
        elapsed = round(self._clock() - self._started, 3)
        self._publish(
            JOB_EVENT,
            {
                "job": self.job_id,
                "command": self.command,
                "state": state,
                "elapsed_s": elapsed,
                **fields,
            },
        )

    def progress(self, data: Any) -> None:
        """A progress update of the command: publish it now, or hold it until the interval has
        passed (a newer update replaces a held one)."""
        now = self._clock()
        wait = self._last_sent + self._min_interval_s - now
        if wait <= 0:
            self._send(data, now)
            return
        self._held = data
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._flush)

    def _send(self, data: Any, now: float) -> None:
        self._last_sent = now
        self.publish("progress", {"progress": data})

    def _flush(self) -> None:
        self._timer = None
        held, self._held = self._held, _NOTHING
        if held is not _NOTHING:
            self._send(held, self._clock())

    def end(self, error: BusError | None) -> None:
        """Publish the held progress, if any, then ``ended``: ``ok`` when ``error`` is None,
        ``cancelled`` for ``Cancelled``, else ``error`` with its code and message."""
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        if error is None:
            fields: dict[str, Any] = {"outcome": "ok"}
        elif isinstance(error, Cancelled):
            fields = {"outcome": "cancelled", "code": error.wire_code, "message": error.message}
        else:
            fields = {"outcome": "error", "code": error.wire_code, "message": error.message}
        fields["duration_s"] = round(self._clock() - self._started, 3)
        self.publish("ended", fields)
