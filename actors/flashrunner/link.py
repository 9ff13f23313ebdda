"""Own the FlashRunner connection: send frames, match answers to them, notice loss, reconnect.

The device answers commands strictly in order, with no request id, so every expected answer is a
future in one FIFO. A caller that stops waiting (timeout, cancellation) *abandons* its futures;
their answers are discarded when they arrive, so the next command still gets its own answer. If
too many abandoned answers are owed (the device may have dropped them), the link reconnects to get
back in step. While the link is down, every command fails at once with ``DeviceUnavailable``, and
a background task reconnects with capped, doubling back-off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from actors.flashrunner.config import FlashRunnerConfig
from actors.flashrunner.protocol import Answer, AnswerParser, Busy, Garbled
from actors.flashrunner.transport import Transport
from bus.backoff import Backoff
from bus.errors import DeviceFault, DeviceTimeout, DeviceUnavailable

__all__ = ["Link"]

log = structlog.get_logger()


def _mark_retrieved(future: asyncio.Future[Answer]) -> None:
    # An answer nobody waits for any more must not be reported as "exception never retrieved".
    if not future.cancelled():
        future.exception()


class Link:
    """The ordered command/answer channel to one device over a ``Transport``.

    Args:
        transport: The byte stream.
        config: Timing (back-off, abandoned-answer limit).
    """

    def __init__(self, transport: Transport, config: FlashRunnerConfig) -> None:
        self.transport = transport
        self._config = config
        self._parser = AnswerParser()
        self._pending: collections.deque[asyncio.Future[Answer]] = collections.deque()
        self._send_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        self._busy_at = 0.0
        self._healthy = True  # the current connection has answered: reconnect at once if it drops
        # Jitter: the actors of one line must not retry in lockstep.
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, jitter=(0.8, 1.2))
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """True while the link is up."""
        return self._connected.is_set()

    async def open(self) -> None:
        """Connect once, then keep the link up in the background.

        Raises:
            DeviceUnavailable: The first connection failed.
        """
        self._closing = False
        try:
            await self.transport.open()
        except OSError as exc:
            raise DeviceUnavailable(f"{self.transport.description}: connect failed: {exc}") from exc
        self._parser.reset()
        self._healthy = True
        self._backoff.reset()
        self._connected.set()
        log.info("flashrunner_connected", device=self.transport.description)
        self._runner = asyncio.create_task(
            self._run(), name=f"flashrunner-link {self.transport.description}"
        )

    async def close(self) -> None:
        """Stop reconnecting, fail what is pending, and close the transport; idempotent."""
        self._closing = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._lost(DeviceUnavailable(f"{self.transport.description}: closed"))
        await self.transport.close()

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until the link is up.

        Raises:
            DeviceUnavailable: It was not up within ``timeout_s``.
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError as exc:
            raise DeviceUnavailable(
                f"{self.transport.description}: not connected within {timeout_s} s"
            ) from exc

    async def reconfigure(self, change: Callable[[], Awaitable[None]]) -> None:
        """Pause reading, run ``change`` on the transport (reopen at another baud rate), resume.

        Raises:
            DeviceUnavailable: ``change`` failed; the link then reconnects in the background.
        """
        async with self._send_lock:
            runner, self._runner = self._runner, None
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            self._lost(DeviceUnavailable(f"{self.transport.description}: reconfiguring"))
            try:
                await change()
            except OSError as exc:
                raise DeviceUnavailable(
                    f"{self.transport.description}: reopen failed: {exc}"
                ) from exc
            else:
                self._connected.set()
            finally:
                self._runner = asyncio.create_task(
                    self._run(), name=f"flashrunner-link {self.transport.description}"
                )

    def drop(self, reason: str) -> None:
        """Close the connection now so the background task reconnects (to get back in step)."""
        log.warning("flashrunner_resync", device=self.transport.description, reason=reason)
        self._lost(DeviceUnavailable(f"{self.transport.description}: {reason}"))
        task = asyncio.ensure_future(self.transport.close())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def send(self, data: bytes, answers: int) -> list[asyncio.Future[Answer]]:
        """Send ``data`` and return one future per answer it will produce, in order.

        Raises:
            DeviceUnavailable: The link is down, or the write failed.
        """
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            if not self.connected:
                raise DeviceUnavailable(f"{self.transport.description}: link down, reconnecting")
            futures = [loop.create_future() for _ in range(answers)]
            for future in futures:
                future.add_done_callback(_mark_retrieved)
            self._pending.extend(futures)
            try:
                await self.transport.send(data)
            except OSError as exc:
                error = DeviceUnavailable(f"{self.transport.description}: write failed: {exc}")
                self._lost(error)
                raise error from exc
        return futures

    async def wait(self, future: asyncio.Future[Answer], timeout_s: float) -> Answer:
        """Wait for one answer; a BUSY frame from the device restarts the wait.

        Raises:
            DeviceTimeout: No answer within ``timeout_s`` of the command or the last BUSY frame.
            DeviceUnavailable: The link dropped meanwhile.
            DeviceFault: The answer was garbled.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    return await asyncio.shield(future)
            except TimeoutError:
                if future.done():
                    return future.result()
                if self._busy_at + timeout_s > deadline:
                    deadline = self._busy_at + timeout_s
                    continue
                raise DeviceTimeout(
                    f"{self.transport.description}: no answer within {timeout_s} s"
                ) from None

    async def request(self, data: bytes, answers: int, timeout_s: float) -> list[Answer]:
        """Send ``data`` and wait for its ``answers``; abandon them if the wait fails or is cancelled."""
        futures = await self.send(data, answers)
        try:
            return [await self.wait(future, timeout_s) for future in futures]
        except BaseException as exc:
            self.abandon(futures)
            if isinstance(exc, DeviceTimeout):
                self._check_abandoned()
            raise

    def abandon(self, futures: list[asyncio.Future[Answer]]) -> None:
        """Stop waiting for these answers; they are discarded when they arrive."""
        for future in futures:
            future.cancel()

    def _check_abandoned(self) -> None:
        owed = sum(1 for future in self._pending if future.done())
        if owed > self._config.max_abandoned:
            self.drop(f"{owed} answers owed to abandoned commands")

    def _lost(self, error: DeviceUnavailable) -> None:
        self._connected.clear()
        self._parser.reset()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)

    def _deliver(self, item: Answer | Busy | Garbled) -> None:
        if isinstance(item, Busy):
            self._busy_at = asyncio.get_running_loop().time()
            return
        if self._pending:
            future = self._pending.popleft()
            if future.done():
                log.debug(
                    "flashrunner_discarded",
                    device=self.transport.description,
                    item=repr(item)[:120],
                )
                return  # the answer of an abandoned command: nobody waits for it
            if isinstance(item, Garbled):
                log.warning(
                    "flashrunner_garbled", device=self.transport.description, reason=item.reason
                )
                future.set_exception(
                    DeviceFault(f"garbled answer: {item.reason}", device_code="GARBLED")
                )
            else:
                future.set_result(item)
                self._healthy = True
                self._backoff.reset()
            return
        log.warning(
            "flashrunner_unsolicited", device=self.transport.description, item=repr(item)[:120]
        )

    async def _run(self) -> None:
        while not self._closing:
            reason = await self._read_until_lost()
            if self._closed_meanwhile():
                return
            self._lost(DeviceUnavailable(f"{self.transport.description}: {reason}"))
            log.warning("flashrunner_link_lost", device=self.transport.description, reason=reason)
            await self._reconnect()

    def _closed_meanwhile(self) -> bool:
        """``close()`` ran while we awaited (a call, so the type checker does not assume the
        ``while not self._closing`` above still holds)."""
        return self._closing

    async def _read_until_lost(self) -> str:
        while True:
            try:
                data = await self.transport.receive()
            except OSError as exc:
                return f"read failed: {exc}"
            if not data:
                return "connection closed"
            for item in self._parser.feed(data):
                self._deliver(item)

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closing:
            attempt += 1
            if not self._healthy:
                # The last connection failed or never answered (a peer that accepts and hangs up
                # at once): wait before trying again, doubling up to the cap.
                await asyncio.sleep(self._backoff.next_delay())
            self._healthy = False
            await self.transport.close()
            try:
                await self.transport.open()
            except OSError as exc:
                log.info(
                    "flashrunner_reconnect_failed",
                    device=self.transport.description,
                    attempt=attempt,
                    next_pause_s=round(self._backoff.nominal_s, 3),
                    error=str(exc),
                )
                continue
            self._parser.reset()
            self.reconnects += 1
            self._connected.set()
            log.info("flashrunner_reconnected", device=self.transport.description, attempt=attempt)
            return
