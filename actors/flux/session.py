"""Keep one robot session alive and run request/answer exchanges on it, mapping every failure.

The device takes one request at a time and has no request ids (flux.md §1.4), so exchanges are
serialised by a lock, and an exchange that is interrupted (timeout, cancellation, I/O error)
leaves the stream out of step: the connection is then dropped and a new one is made. After a
loss the first reconnect is immediate (a background task makes it); each failed attempt doubles
the pause up to ``backoff_max_s``, and while paused every call fails at once with
``DeviceUnavailable``.

Error mapping (one boundary): ``error RESOURCE_BUSY``/``ALREADY_RUNNING`` → ``Busy``;
``BAD_PARAMS`` → ``InvalidArguments``; any other ``error SYMBOL ...`` → ``DeviceFault`` with
``device_code=SYMBOL`` (``KICKED`` also drops the session); no answer in time → ``DeviceTimeout``;
refused handshake → ``DeviceFault`` (``AUTH_ERROR`` ...); everything else → ``DeviceUnavailable``.
Every error carries ``details["symbols"]`` with all of the device's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux.config import FluxConfig
from actors.flux.connection import RobotConnection
from actors.flux.protocol import HandshakeError
from actors.fluxfamily.errors import device_error
from actors.fluxfamily.framing import (
    BinaryChunk,
    BinaryEnd,
    BinaryStart,
    ProtocolViolation,
    Text,
    parse_error,
)
from bus.backoff import Backoff
from bus.errors import (
    DeviceError,
    DeviceFault,
    DeviceTimeout,
    DeviceUnavailable,
)

__all__ = ["ProgressCallback", "Reply", "RobotSession"]

log = structlog.get_logger()

ProgressCallback = Callable[[int, int], None]
MessageCallback = Callable[[str], None]


def is_final(text: str) -> bool:
    """Default end of an exchange: an ``ok ...`` or an error answer."""
    return (
        text == "ok" or text.startswith(("ok ", "ok\n", "ok\x00")) or parse_error(text) is not None
    )


@dataclass(slots=True)
class Reply:
    """What one exchange produced: the final text, the text frames and binaries before it."""

    final: str
    texts: list[str] = field(default_factory=list)
    binaries: list[tuple[str, bytes]] = field(default_factory=list)


class _Throttle:
    """Rate-limit progress callbacks; the first and last call always go through."""

    def __init__(self, callback: ProgressCallback | None, interval_s: float) -> None:
        self._callback = callback
        self._interval = interval_s
        self._last = -float("inf")

    def __call__(self, done: int, total: int) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if done in (0, total) or now - self._last >= self._interval:
            self._last = now
            self._callback(done, total)


class RobotSession:
    """The link to one device: connect, reconnect with back-off, run exchanges.

    Args:
        host: Device address.
        client_key: Our private key (the device must trust it).
        config: Ports and timing.
        device_key: Protocol 2: the device's slave key from discovery v1; checks its signature.
        device_uuid: Protocol 3: the uuid the device's certificate must name.
        master_key: Protocol 3: the device's master key from discovery, which its certificate
            must carry. Without these pins a protocol-3 device is not authenticated (as with
            fluxclient); see ``actors.fluxfamily.tls``.
    """

    def __init__(
        self,
        host: str,
        client_key: rsa.RSAPrivateKey,
        config: FluxConfig | None = None,
        *,
        device_key: rsa.RSAPublicKey | None = None,
        device_uuid: uuidlib.UUID | None = None,
        master_key: rsa.RSAPublicKey | None = None,
    ) -> None:
        self.host = host
        self.config = config or FluxConfig()
        self._key = client_key
        self._device_key = device_key
        self._device_uuid = device_uuid
        self._master_key = master_key
        self.protocol: int | None = None
        self._conn: RobotConnection | None = None
        self._lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._closed = True
        self._retry_at = 0.0
        self._backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        self._keeper: asyncio.Task[None] | None = None
        self.reconnects = 0
        #: Called when the device refuses our key (``AUTH_ERROR``) on a reconnect, to have it
        #: trusted again (a printer restarted without the key it trusted, or reset); the
        #: handshake is retried once after it. None: the refusal is the caller's error.
        self.on_untrusted: Callable[[], Awaitable[None]] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the device, for messages."""
        return f"{self.host}:{self.config.port}"

    @property
    def connected(self) -> bool:
        """True while a handshaken session is open."""
        return self._conn is not None

    async def open(self) -> None:
        """Connect once, then keep the session up in the background.

        Raises:
            DeviceUnavailable: The device cannot be reached.
            DeviceFault: It refused the handshake (``AUTH_ERROR``: our key is not trusted).
        """
        self._closed = False
        try:
            async with self._lock:
                await self._connect()
        except BaseException:
            self._closed = True
            raise
        self._keeper = asyncio.create_task(self._keep(), name=f"flux-keeper {self.address}")

    async def close(self) -> None:
        """Stop reconnecting and close the session; idempotent."""
        self._closed = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------ link

    async def _connect(self) -> RobotConnection:
        try:
            return await self._handshake()
        except DeviceFault as exc:
            if self.on_untrusted is None or exc.details.get("device_code") != "AUTH_ERROR":
                raise
            log.info("flux_key_refused", device=self.address, hint="authorising again")
            await self.on_untrusted()
            self._retry_at = 0.0
            return await self._handshake()

    async def _handshake(self) -> RobotConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                conn = await RobotConnection.open(
                    self.host,
                    self.config.port,
                    self._key,
                    device_key=self._device_key,
                    device_uuid=self._device_uuid,
                    master_key=self._master_key,
                )
        except HandshakeError as exc:
            self._back_off(loop.time())
            raise DeviceFault(
                f"{self.address}: {exc}",
                details={"device_code": exc.symbols[0], "symbols": list(exc.symbols)},
            ) from exc
        except TimeoutError as exc:
            self._back_off(loop.time())
            raise DeviceUnavailable(
                f"{self.address}: no handshake within {self.config.connect_timeout_s} s"
            ) from exc
        except OSError as exc:
            self._back_off(loop.time())
            raise DeviceUnavailable(f"{self.address}: connect failed: {exc}") from exc
        self._conn = conn
        self.protocol = conn.protocol
        self._backoff.reset()
        self._lost.clear()
        self._session_reset()
        log.info("flux_connected", device=self.address, protocol=conn.protocol)
        return conn

    def _session_reset(self) -> None:
        """Hook: a new or lost session means the device is back in its command task."""

    def _back_off(self, now: float) -> None:
        delay = self._backoff.next_delay()
        self._retry_at = now + delay
        log.info("flux_connect_failed", device=self.address, next_attempt_s=round(delay, 3))

    def _drop(self, reason: str) -> None:
        """Close the current session; the keeper reconnects at once."""
        if self._conn is None:
            return
        self._conn.close()
        self._conn = None
        self._retry_at = 0.0
        self._lost.set()
        self._session_reset()
        log.warning("flux_link_dropped", device=self.address, reason=reason)

    async def _send_unanswered(self, command: str) -> None:
        """Send a command the device never answers, even while an exchange waits (an interrupt)."""
        conn = self._conn
        if conn is None:
            raise DeviceUnavailable(f"{self.address}: link down")
        try:
            await conn.send_command(command, self.config.reply_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise DeviceUnavailable(f"{self.address}: {command}: {exc}") from exc

    async def _hang_up(self, reason: str) -> None:
        """Close the session on purpose (the device is about to close it); reconnect after."""
        async with self._lock:
            self._drop(reason)

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._lost.wait()
            pause = self._retry_at - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            async with self._lock:
                if self._conn is None and loop.time() >= self._retry_at:
                    with contextlib.suppress(DeviceError):
                        await self._connect()
                        self.reconnects += 1

    async def _ensure(self) -> RobotConnection:
        if self._closed:
            raise DeviceUnavailable(f"{self.address}: driver is closed")
        if self._conn is not None:
            return self._conn
        wait = self._retry_at - asyncio.get_running_loop().time()
        if wait > 0:
            raise DeviceUnavailable(f"{self.address}: link down, next reconnect in {wait:.1f} s")
        conn = await self._connect()
        self.reconnects += 1
        return conn

    # ------------------------------------------------------------ exchanges

    async def _exchange(
        self, what: str, body: Callable[[RobotConnection], Awaitable[Reply]]
    ) -> Reply:
        """Run ``body`` on the session under the lock; map failures; raise error answers."""
        async with self._lock:
            conn = await self._ensure()
            try:
                reply = await body(conn)
            except TimeoutError as exc:
                self._drop(f"{what}: no answer")
                raise DeviceTimeout(f"{self.address}: {what}: no answer in time") from exc
            except (OSError, ProtocolViolation) as exc:
                self._drop(f"{what}: {exc}")
                raise DeviceUnavailable(f"{self.address}: {what}: {exc}") from exc
            except BaseException:
                self._drop(
                    f"{what}: interrupted"
                )  # cancelled mid-exchange: the stream is out of step
                raise
        symbols = parse_error(reply.final)
        if symbols is None:
            return reply
        if symbols[0] == "KICKED":
            await self._hang_up("kicked by another client")
        raise device_error(f"{self.address}: {what}", symbols)

    async def _collect(
        self,
        conn: RobotConnection,
        timeout_s: float,
        final: Callable[[str], bool] = is_final,
        on_binary: ProgressCallback | None = None,
        on_message: MessageCallback | None = None,
    ) -> Reply:
        reply = Reply("")
        parts: list[bytes] = []
        mimetype, size, done = "", 0, 0
        progress = _Throttle(on_binary, self.config.progress_interval_s)
        while True:
            event = await conn.next_event(timeout_s)
            if isinstance(event, BinaryStart):
                mimetype, size, parts, done = event.mimetype, event.size, [], 0
                progress(0, size)
            elif isinstance(event, BinaryChunk):
                parts.append(event.data)
                done += len(event.data)
                progress(done, size)
            elif isinstance(event, BinaryEnd):
                reply.binaries.append((mimetype, b"".join(parts)))
                progress(size, size)
            elif isinstance(event, Text):
                if final(event.text) or parse_error(event.text) is not None:
                    reply.final = event.text
                    return reply
                if on_message is not None and event.text.startswith(("CTRL ", "DEBUG ")):
                    on_message(event.text)
                reply.texts.append(event.text)

    async def call(
        self,
        command: str,
        *,
        timeout_s: float | None = None,
        final: Callable[[str], bool] = is_final,
        on_binary: ProgressCallback | None = None,
        on_message: MessageCallback | None = None,
    ) -> Reply:
        """Send one command and collect its frames up to the final answer.

        The wrapped methods of ``FluxDriver`` use this; call it directly only for commands the
        driver does not wrap (the reply's frames are returned unparsed).

        Raises:
            DeviceFault, Busy, InvalidArguments: The device answered with an error.
            DeviceTimeout: A frame did not come in time (the session is then renewed).
            DeviceUnavailable: The link is down.
        """
        wait = timeout_s or self.config.reply_timeout_s

        async def body(conn: RobotConnection) -> Reply:
            await conn.send_command(command, wait)
            return await self._collect(conn, wait, final, on_binary, on_message)

        return await self._exchange(command, body)

    async def _send_binary(
        self,
        command: str,
        data: bytes,
        *,
        on_progress: ProgressCallback | None = None,
        final_timeout_s: float | None = None,
        final: Callable[[str], bool] = is_final,
        on_message: MessageCallback | None = None,
    ) -> Reply:
        """Send an upload-style command: wait for ``continue``, stream ``data``, collect the verdict.

        Cancelling the task mid-transfer drops the session (the device would otherwise keep
        reading file bytes); the next call reconnects.
        """
        wait = self.config.reply_timeout_s
        progress = _Throttle(on_progress, self.config.progress_interval_s)

        async def body(conn: RobotConnection) -> Reply:
            await conn.send_command(command, wait)
            first = await self._collect(conn, wait, final=lambda text: text == "continue")
            if first.final != "continue":
                return first
            total, step = len(data), self.config.chunk_bytes
            progress(0, total)
            for offset in range(0, total, step):
                await conn.send_raw(data[offset : offset + step], wait)
                progress(min(offset + step, total), total)
                # drain() does not yield while the socket buffer has room: yield anyway, so a
                # big upload neither starves the loop nor ignores a cancellation until it ends.
                await asyncio.sleep(0)
            return await self._collect(conn, final_timeout_s or wait, final, on_message=on_message)

        return await self._exchange(command, body)
