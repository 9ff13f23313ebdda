"""An actor's requests: validate them, run them one at a time (or concurrently), answer them.

The broker link hands every REQUEST and CANCEL to ``Requests``, which

- answers at once what cannot run: unknown command, invalid arguments (checked against the
  method's signature by ``CommandSpec.bind``), actor shutting down, queue full (``busy``);
- runs a command one at a time per device unless it is ``concurrent``: the rest wait in a FIFO
  queue, and one whose deadline passes while it waits is answered ``deadline_exceeded`` and never
  touches the device;
- runs a plain-function command inline, in the receive callback (no task, no extra loop turn:
  the hot path is one receive, one call, one send), and a coroutine command, or one that takes a
  ``CommandContext``, as a task bounded by the request's deadline;
- publishes the ``<service>.job`` events of a command that takes a ``CommandContext`` (started,
  throttled progress, ended: ``bus._jobs``); other commands never touch that module;
- cancels a queued or running command when its caller (or the broker, at the deadline) sends
  CANCEL, and answers ``cancelled``;
- on ``stop``, takes no more work, fails the queue with ``unavailable`` and lets the running
  commands finish within a grace period before cancelling them.

Answers go out through the ``send`` function it is given; it never touches a socket itself.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from bus import protocol
from bus._jobs import Job, JobEvents
from bus.commands import CommandContext, CommandSpec
from bus.errors import (
    BadRequest,
    BusError,
    Busy,
    Cancelled,
    DeadlineExceeded,
    InternalError,
    Unavailable,
    UnknownCommand,
)

__all__ = ["Request", "Requests"]

#: The local deadline of a request whose ttl_s is nil: the broker cancels it when its own passes.
_NO_LOCAL_DEADLINE_S = 24 * 3600.0

Send = Callable[[list[Any]], object]


def _not_started(frames: list[Any]) -> bool:
    return False


class Request:
    """One accepted request: its command, validated arguments, deadline, and task once running."""

    __slots__ = ("args", "deadline", "msg_id", "spec", "task")

    def __init__(
        self, msg_id: str, spec: CommandSpec, args: dict[str, Any], deadline: float
    ) -> None:
        self.msg_id = msg_id
        self.spec = spec
        self.args = args
        self.deadline = deadline
        self.task: asyncio.Task[None] | None = None


class Requests:
    """Validates, queues, runs, cancels and answers one actor's requests; see the module docstring.

    Args:
        target: The object whose methods the commands are (the actor).
        commands: The target's commands by wire name.
        service: The service name, for error messages.
        kind: The actor kind, for error messages.
        log: The actor's logger.
        jobs: Publishes the job events of commands that take a ``CommandContext``
            (``bus._jobs``); None publishes none.
    """

    def __init__(
        self,
        target: object,
        commands: Mapping[str, CommandSpec],
        *,
        service: str,
        kind: str,
        log: structlog.typing.FilteringBoundLogger,
        jobs: JobEvents | None = None,
    ) -> None:
        self._target = target
        self._jobs = jobs
        self._commands = commands
        self._service = service
        self._kind = kind
        self.max_queue = 0
        self._send: Send = _not_started
        self._log = log
        self._queue: collections.deque[Request] = collections.deque()
        self._current: Request | None = None
        self._inflight: dict[str, Request] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set by ``stop``: requests are answered ``unavailable`` from then on.
        self.stopping = False

    @property
    def queued(self) -> int:
        """Requests waiting for the device."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Whether a one-at-a-time command is running."""
        return self._current is not None

    def start(self, loop: asyncio.AbstractEventLoop, send: Send, *, max_queue: int) -> None:
        """Take requests: coroutine commands run as tasks of ``loop``, answers go out through
        ``send``, and at most ``max_queue`` requests wait for the device."""
        self._loop = loop
        self._send = send
        self.max_queue = max_queue
        self.stopping = False

    # --- receiving ------------------------------------------------------------------------

    def on_request(self, header: protocol.RequestHeader, frames: list[Any]) -> None:
        """Take one REQUEST: its decoded header and all its frames (bulk from the second on)."""
        msg_id, _, name, ttl, payload = header
        if self.stopping:
            self.reply_error(msg_id, Unavailable(f"{self._service} is shutting down"))
            return
        spec = self._commands.get(name)
        if spec is None:
            self.reply_error(
                msg_id,
                UnknownCommand(
                    f"{self._service} ({self._kind}) has no command {name!r}",
                    details={"command": name, "known": sorted(self._commands)},
                ),
            )
            return
        try:
            raw_args = (
                protocol.unpack_value(payload, frames[1:])
                if len(frames) > 1
                else protocol.unpack_small(payload)
            )
        except BadRequest as exc:  # details name the problem (docs/PROTOCOL.md §4)
            self.reply_error(
                msg_id, BadRequest(f"arguments of {name!r}: {exc.message}", details=exc.details)
            )
            return
        try:
            args = spec.bind(raw_args if raw_args is not None else {})
        except BusError as exc:
            self.reply_error(msg_id, exc)
            return
        except Exception as exc:  # a converter that chokes on a value is the caller's problem too
            self.reply_error(
                msg_id,
                BadRequest(
                    f"{name}: arguments could not be checked ({type(exc).__name__}: {exc})",
                    details={"reason": "invalid_payload", "problem": "invalid"},
                ),
            )
            return
        free = spec.concurrent or (self._current is None and not self._queue)
        if free and spec.inline:
            # The hot path: nothing to wait for and nothing to await, so nothing to keep either.
            self._run_inline(msg_id, spec, args)
            return
        # A nil ttl_s leaves the deadline to the broker, which cancels the command when it passes.
        deadline = time.monotonic() + (_NO_LOCAL_DEADLINE_S if ttl is None else ttl)
        request = Request(msg_id, spec, args, deadline)
        if free:
            if not spec.concurrent:
                self._current = request
            self._launch(request)
        elif len(self._queue) >= self.max_queue:
            self.reply_error(
                msg_id, Busy(f"{self._service}: {len(self._queue)} requests already queued")
            )
        else:
            self._queue.append(request)
            self._inflight[msg_id] = request

    def cancel(self, msg_id: str) -> None:
        """Take one CANCEL: cancel the request's task, or take it out of the queue."""
        request = self._inflight.get(msg_id)
        if request is None:
            return
        if request.task is not None:
            request.task.cancel()
        else:
            self._queue.remove(request)
            self._inflight.pop(request.msg_id, None)
            self.reply_error(request.msg_id, Cancelled("cancelled before it started"))

    # --- running --------------------------------------------------------------------------

    def _launch(self, request: Request) -> None:
        assert self._loop is not None, "Requests.start was not called"
        self._inflight[request.msg_id] = request
        request.task = self._loop.create_task(self._run_async(request))
        request.task.add_done_callback(lambda _task: self._after_task(request))

    def _after_task(self, request: Request) -> None:
        """A task cancelled before its first step never runs ``_run_async`` (and so never its
        ``finally``): answer for it and free the device here, or the actor would wait forever."""
        if self._inflight.get(request.msg_id) is not request:
            return  # _run_async ran and cleaned up
        self._inflight.pop(request.msg_id, None)
        self.reply_error(request.msg_id, Cancelled("cancelled before it started"))
        if not request.spec.concurrent and self._current is request:
            self._finish_current()

    def _run_inline(self, msg_id: str, spec: CommandSpec, args: dict[str, Any]) -> None:
        """Run a plain-function command at once: no task, no extra loop turn."""
        try:
            result = getattr(self._target, spec.method_name)(**args)
        except BusError as exc:
            self.reply_error(msg_id, exc)
        except Exception as exc:
            self.reply_error(msg_id, self._internal(msg_id, spec, exc))
        else:
            self._reply(msg_id, result)

    async def _run_async(self, request: Request) -> None:
        spec = request.spec
        msg_id = request.msg_id
        loop = asyncio.get_running_loop()
        job: Job | None = None
        error: BusError | None = None
        try:
            with structlog.contextvars.bound_contextvars(msg_id=msg_id, command=spec.name):
                if time.monotonic() >= request.deadline:
                    raise DeadlineExceeded("deadline passed while queued")
                kwargs = request.args
                if spec.context_param is not None:
                    if self._jobs is not None:
                        job = self._jobs.start(msg_id, spec.name)
                    context = CommandContext(
                        msg_id, request.deadline, self._progress_sender(msg_id, job)
                    )
                    kwargs = {**kwargs, spec.context_param: context}
                try:
                    async with asyncio.timeout_at(
                        loop.time() + (request.deadline - time.monotonic())
                    ):
                        result = getattr(self._target, spec.method_name)(**kwargs)
                        if asyncio.iscoroutine(result):
                            result = await result
                except TimeoutError as exc:
                    if isinstance(exc, BusError):
                        raise
                    raise DeadlineExceeded("did not finish before the deadline") from None
            error = self._reply(msg_id, result)
        except asyncio.CancelledError:
            error = Cancelled("cancelled by the caller")
            self.reply_error(msg_id, error)
        except BusError as exc:
            error = exc
            self.reply_error(msg_id, exc)
        except Exception as exc:
            error = self._internal(msg_id, spec, exc)
            self.reply_error(msg_id, error)
        finally:
            if job is not None:
                job.end(error)
            self._inflight.pop(msg_id, None)
            if not spec.concurrent and self._current is request:
                self._finish_current()

    def _progress_sender(self, msg_id: str, job: Job | None) -> Callable[[Any], None]:
        """What ``CommandContext.progress`` calls: PROGRESS to the caller, and the job event."""
        send = self._send

        def progress(data: Any) -> None:
            send(protocol.encode_progress(msg_id, data))
            if job is not None:
                job.progress(data)

        return progress

    def _finish_current(self) -> None:
        """Start what waits in the queue: plain commands run here in turn (a loop, not
        recursion, however long the queue), the first coroutine command becomes current."""
        self._current = None
        while self._queue and not self.stopping:
            nxt = self._queue.popleft()
            self._inflight.pop(nxt.msg_id, None)
            if time.monotonic() >= nxt.deadline:
                # Its caller has already been told deadline_exceeded; do not touch the device.
                self.reply_error(nxt.msg_id, DeadlineExceeded("deadline passed while queued"))
                continue
            if not nxt.spec.inline:
                self._current = nxt
                self._launch(nxt)
                return
            self._run_inline(nxt.msg_id, nxt.spec, nxt.args)

    # --- answering ------------------------------------------------------------------------

    def _internal(self, msg_id: str, spec: CommandSpec, exc: Exception) -> BusError:
        self._log.error("command_crashed", msg_id=msg_id, command=spec.name, exc_info=exc)
        return InternalError(f"internal error in {self._service} (see its log, msg_id {msg_id})")

    def _reply(self, msg_id: str, result: Any) -> BusError | None:
        """Answer with ``result``; None, or the error answered instead (it cannot be encoded)."""
        try:
            frames = protocol.encode_reply(msg_id, result)
        except TypeError as exc:
            error = InternalError(f"result cannot be encoded: {exc}")
            self.reply_error(msg_id, error)
            return error
        self._send(frames)
        return None

    def reply_error(self, msg_id: str, exc: BusError) -> None:
        """Answer request ``msg_id`` with the error ``exc``."""
        # wire_code: an unknown code relayed from a service this actor called stays that code.
        self._send(protocol.encode_error(msg_id, exc.wire_code, exc.message, exc.details))

    # --- stopping -------------------------------------------------------------------------

    async def stop(self, grace_s: float) -> None:
        """Take no more work, fail the queue, let running commands finish for ``grace_s``, then
        cancel them (and wait as long again for them to end)."""
        self.stopping = True
        while self._queue:
            request = self._queue.popleft()
            self._inflight.pop(request.msg_id, None)
            self.reply_error(request.msg_id, Unavailable(f"{self._service} is shutting down"))
        running = [r.task for r in self._inflight.values() if r.task is not None]
        if running:
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace_s)
