"""A simulated FlashRunner 2.0 on a real TCP port, a logger port and (optionally) a pseudo-terminal.

Run it as ``python -m actors.flashrunner.simulator [--port 0] [--pty] [--channels N] ...``
(or ``--listen 127.0.0.1:1234 --logger-listen 127.0.0.1:1235``; ``--key-file unit.pem`` uses a
fixed RSA key, ``--project NAME`` preloads a project file); once
listening it prints one JSON line, ``{"event": "ready", "tcp": ..., "logger": ..., "pty": ...}``,
and serves until SIGTERM/SIGINT. Tests use it in-process: ``async with FlashRunnerSimulator() as sim``.

What is known is implemented as reference/flashrunner.md describes it. **Everything below is an
assumption**, made where the reference says the real behaviour is unknown (§12):

1. Framing (§12.1): answers are ``NN|payload`` + ``>`` / ``!`` with no command echo and no line
   end after the prompt; every answer carries the 2-digit tag of the answering channel (55 for
   the unit, also for untagged ``#CMD`` frames). BUSY frames are the line ``BUSY\\r\\n``.
2. Several channels (§12.2): ``#<mask>|CMD`` (decimal mask) and ``#<ch>*CMD`` both work; the
   device answers once per addressed channel, in ascending channel order.
3. GETENGSTATUS (§12.3): ``55|<chars>|<channel count>``, one char per channel: ``I`` idle,
   ``R`` running, ``P`` passed, ``F`` failed. RUN answers at once and the run is followed by
   polling; with ``sync_run`` RUN instead answers when the run ends, sending BUSY frames meanwhile.
4. Files (§12.4): not YMODEM but acknowledged chunks on the command channel, all on channel 55:
   ``FSWRITE <type> <name> <size>``, then ``FSDATA <len> <crc32>`` + raw bytes per chunk (answer:
   bytes received so far), then ``FSCLOSE <crc32>`` (``ERR_CRC`` if it does not match);
   ``FSABORT`` discards a partial file, as does losing the connection. Downloads are stateless:
   ``FSSIZE <type> <name>`` then ``FSREAD <type> <name> <offset> <len>``, answered by
   ``55|DATA <len> <crc32>>`` + raw bytes. Also ``FSEXIST``, ``FSDEL``, ``FSLIST``,
   ``SGETCRC32 FILE <name>`` (``$`` + hex). Each file type has its own store (``FILE_DIRS``).
5. Logger (§12.5): a second TCP port streams UTF-8 lines ``<UTC time> <LEVEL> <text>``: a
   greeting on connect, then run start and end, stored or aborted files, baud changes.
6. Dynamic memory and keys (§12.6): ``SGETPUBKEY`` answers the base64 DER of the unit's RSA-2048
   key; ``#<ch>*DYNMEMKEY <len> <crc>`` + header installs a key (header layout v1 of ``crypto``),
   ``#<ch>*DYNMEMSETENC <addr hex> <len> <crc>`` + ciphertext decrypts and stores a block,
   ``#<ch>*DYNMEMSET <addr hex> <data hex>`` stores plain bytes.
7. Errors (§12.7): failure payloads start with a symbol (``ERR_FILE_NOT_FOUND``, ``ERR_BUSY``,
   ``ERR_UNKNOWN_COMMAND``, ``ERR_BAD_CHANNEL``, ``ERR_CRC``, ``ERR_PROJECT_FAILED`` ...).
8. Serial: a pty cannot model baud rates, so ``SETSERIALBAUDRATE HIGH`` only records the state;
   a pty cannot be "unplugged" either, so the drop fault applies to TCP connections only.

Faults are set by constructor arguments, CLI flags, or at run time with ``stall``, ``garble``,
``drop_mid_transfer``, ``drop_connections``, ``go_offline``/``go_online``, ``fail_on``, ``nack``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tty
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flashrunner.protocol import FileType, RequestParser
from actors.flashrunner.sim_device import SimDevice, TransferSession

__all__ = ["Faults", "FlashRunnerSimulator", "main"]

log = structlog.get_logger()

GARBAGE = b"\xf0\x9f\x92\xa5\x00garbled\x1b>"
_LOG_BUFFER_LIMIT = (
    1 << 20
)  # a logger client this far behind is dropped rather than stalling the device
#: How long ``stop()`` lets aborted connections end by themselves before cancelling them.
_STOP_CONNECTIONS_S = 1.0


@dataclass
class Faults:
    """Faults to inject; the counted ones are used up as they fire.

    Args:
        stall_s: Delay before answering, for the next ``stall_count`` commands.
        stall_count: How many commands are stalled.
        garble_count: How many answers are replaced by garbage (answers with data are spared).
        drop_after_chunks: Close the TCP connection instead of answering this file chunk (1 = next).
    """

    stall_s: float = 0.0
    stall_count: int = 0
    garble_count: int = 0
    drop_after_chunks: int | None = None


class FlashRunnerSimulator:
    """A FlashRunner 2.0 that tests and the demo can talk to over TCP and a pty.

    Args:
        host: Address to listen on.
        port: Command port (0 = any free port).
        logger_port: Logger port (0 = any free port).
        pty: Also serve on a pseudo-terminal (its slave path is ``pty_path``).
        channels: Number of engines.
        run_s: Duration of a project run.
        fail_channels: Channels on which runs fail.
        sync_run: RUN answers when the run ends (with BUSY frames every ``busy_interval_s``).
        busy_interval_s: Period of BUSY frames.
        private_key: The unit's RSA key (tests pass one to save generating it).
        faults: Initial faults.
        nack_commands: Commands that always fail with ``ERR_INJECTED``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        logger_port: int = 0,
        pty: bool = False,
        channels: int = 4,
        run_s: float = 0.5,
        fail_channels: Sequence[int] = (),
        sync_run: bool = False,
        busy_interval_s: float = 0.2,
        private_key: rsa.RSAPrivateKey | None = None,
        faults: Faults | None = None,
        nack_commands: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.logger_port = logger_port
        self.busy_interval_s = busy_interval_s
        self.faults = faults or Faults()
        self.device = SimDevice(
            channels=channels,
            run_s=run_s,
            fail_channels=set(fail_channels),
            sync_run=sync_run,
            private_key=private_key,
            emit=self._emit,
            schedule=lambda delay, callback: asyncio.get_running_loop().call_later(delay, callback),
        )
        self.device.nack_commands = {name.upper() for name in nack_commands}
        self.pty_path: str | None = None
        self._want_pty = pty
        self._pty_fds: list[int] = []
        self._pty_transports: list[asyncio.BaseTransport] = []
        self._server: asyncio.Server | None = None
        self._logger_server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._log_writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: The tasks serving one client connection each (command and logger ports).
        self._connections: set[asyncio.Task[Any]] = set()
        self.connections = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def tcp_address(self) -> str:
        """``host:port`` of the command port."""
        return f"{self.host}:{self.port}"

    @property
    def logger_address(self) -> str:
        """``host:port`` of the logger port."""
        return f"{self.host}:{self.logger_port}"

    def ready_info(self) -> dict[str, Any]:
        """The ready line's content."""
        return {
            "event": "ready",
            "tcp": self.tcp_address,
            "logger": self.logger_address,
            "pty": self.pty_path,
        }

    async def start(self) -> None:
        """Listen on the command and logger ports, and open the pty if asked."""
        await self.go_online()
        self._logger_server = await asyncio.start_server(
            self._on_logger_client, self.host, self.logger_port
        )
        self.logger_port = self._logger_server.sockets[0].getsockname()[1]
        if self._want_pty:
            await self._open_pty()
        log.info(
            "flashrunner_sim_started",
            tcp=self.tcp_address,
            logger_address=self.logger_address,
            pty=self.pty_path,
        )

    async def stop(self) -> None:
        """Close every port and connection."""
        await self.go_offline()
        if self._logger_server is not None:
            self._logger_server.close()
            self._logger_server = None
        for writer in list(self._log_writers):
            writer.transport.abort()
        # Aborted, each connection's reader sees the end and its task returns; one still busy
        # (a stall, a BUSY wait) after a moment is cancelled, which it absorbs (_connection).
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=_STOP_CONNECTIONS_S)
        for task in [*self._tasks, *self._connections]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._connections, return_exceptions=True)
        for transport in self._pty_transports:
            transport.close()
        self._pty_transports.clear()
        for fd in self._pty_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pty_fds.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ faults at run time

    def stall(self, seconds: float, count: int = 1) -> None:
        """Delay the answers of the next ``count`` commands by ``seconds``."""
        self.faults.stall_s, self.faults.stall_count = seconds, count

    def garble(self, count: int = 1) -> None:
        """Replace the next ``count`` answers by garbage."""
        self.faults.garble_count = count

    def drop_mid_transfer(self, after_chunks: int = 1) -> None:
        """Close the TCP connection when the ``after_chunks``-th next file chunk arrives."""
        self.faults.drop_after_chunks = after_chunks

    def fail_on(self, *channels: int) -> None:
        """Make project runs fail on ``channels`` (none: every run passes)."""
        self.device.fail_channels = set(channels)

    def nack(self, *commands: str) -> None:
        """Make ``commands`` fail with ``ERR_INJECTED`` (none: clear)."""
        self.device.nack_commands = {name.upper() for name in commands}

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.faults = Faults()
        self.device.nack_commands = set()

    def drop_connections(self) -> int:
        """Close every TCP command connection at once (as a cable pull would); return how many."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    async def go_offline(self) -> None:
        """Stop listening on the command port and drop its connections (connects are refused)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_connections()

    async def go_online(self) -> None:
        """Listen on the command port again (the same port once one was chosen)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._on_client, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    # ------------------------------------------------------------ serving

    async def _connection(self, serve: Awaitable[None]) -> None:
        """Run one connection's handler as a task ``stop()`` can find and end.

        A handler task of ``asyncio.start_server`` must not end cancelled: Python 3.11's
        ``StreamReaderProtocol`` then calls ``task.exception()`` on it, which raises, and the loop
        prints a ``CancelledError`` traceback at every stop with a client connected. So the
        cancellation ``stop()`` (or ``asyncio.run``'s clean-up) sends ends it normally here.
        """
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await serve
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self._connection(self._serve(reader, writer, droppable=True))

    async def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: file chunks are binary
        self._pty_fds += [master, slave]  # the slave stays open so the master never sees a hang-up
        self.pty_path = os.ttyname(slave)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        # Two duplicates of the master fd: each pipe transport owns (and closes) its own file.
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(master), "rb", 0)
        )
        self._pty_transports.append(read_transport)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(os.dup(master), "wb", 0)
        )
        self._pty_transports.append(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        task = asyncio.create_task(
            self._serve(reader, writer, droppable=False), name="flashrunner-sim pty"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, droppable: bool
    ) -> None:
        parser, session = RequestParser(), TransferSession()
        if droppable:
            self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                for request in parser.feed(data):
                    if not await self._answer(request, session, writer, droppable=droppable):
                        return
        except OSError:
            pass  # the client went away
        finally:
            self._writers.discard(writer)
            if session.writing is not None:
                self.device.log(f"WARN file {session.writing[1]} transfer lost with the connection")
            writer.transport.abort()

    async def _answer(
        self,
        request: Any,
        session: TransferSession,
        writer: asyncio.StreamWriter,
        *,
        droppable: bool,
    ) -> bool:
        faults = self.faults
        if faults.stall_count > 0:
            faults.stall_count -= 1
            await asyncio.sleep(faults.stall_s)
        reply = self.device.handle(request, session)
        if (
            droppable
            and faults.drop_after_chunks is not None
            and request.name in ("FSDATA", "FSREAD")
        ):
            faults.drop_after_chunks -= 1
            if faults.drop_after_chunks <= 0:
                faults.drop_after_chunks = None
                log.info("flashrunner_sim_drop", command=request.name)
                writer.transport.abort()
                return False
        if reply.busy_s > 0:
            await self._send_busy(writer, reply.busy_s)
        answers = reply.answers
        if faults.garble_count > 0 and not reply.carries_data:
            faults.garble_count -= 1
            answers = [GARBAGE]
        writer.write(b"".join(answers))
        await writer.drain()
        return True

    async def _send_busy(self, writer: asyncio.StreamWriter, busy_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + busy_s
        while (left := end - loop.time()) > 0:
            await asyncio.sleep(min(self.busy_interval_s, left))
            writer.write(b"BUSY\r\n")
            await writer.drain()

    async def _on_logger_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._connection(self._log_session(reader, writer))

    async def _log_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._log_writers.add(writer)
        # A greeting tells the client it is registered: every line after it reaches the client.
        writer.write(f"{self.device.stamp()} INFO logger session started\n".encode())
        try:
            await reader.read()  # the client never sends; this returns when it goes away
        except OSError:
            pass
        finally:
            self._log_writers.discard(writer)
            writer.transport.abort()

    def _emit(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        for writer in list(self._log_writers):
            if writer.transport.get_write_buffer_size() > _LOG_BUFFER_LIMIT:
                writer.transport.abort()
                continue
            writer.write(data)


# ---------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m actors.flashrunner.simulator", description="Simulated FlashRunner 2.0."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="command port (0: any free port)")
    parser.add_argument("--logger-port", type=int, default=0, help="logger port (0: any free port)")
    parser.add_argument("--pty", action="store_true", help="also serve on a pseudo-terminal")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--run-s", type=float, default=0.5, help="duration of a project run")
    parser.add_argument(
        "--fail-channels", default="", help="comma-separated channels whose runs fail"
    )
    parser.add_argument(
        "--sync-run", action="store_true", help="RUN answers at the end, with BUSY frames"
    )
    parser.add_argument("--busy-interval-s", type=float, default=0.2)
    parser.add_argument("--stall-s", type=float, default=0.0, help="delay answers by this much ...")
    parser.add_argument("--stall-count", type=int, default=0, help="... for this many commands")
    parser.add_argument("--garble", type=int, default=0, help="garble this many answers")
    parser.add_argument(
        "--drop-after-chunks", type=int, default=None, help="drop the connection at this file chunk"
    )
    parser.add_argument("--nack", default="", help="comma-separated commands that always fail")
    parser.add_argument(
        "--listen", default=None, help="HOST:PORT of the command port (overrides --host/--port)"
    )
    parser.add_argument(
        "--logger-listen",
        default=None,
        help="HOST:PORT of the logger port (overrides --logger-port)",
    )
    parser.add_argument(
        "--key-file",
        default=None,
        help="PEM file of the unit's RSA private key (default: a fresh key)",
    )
    parser.add_argument(
        "--project",
        action="append",
        default=[],
        help="preload a project file of this name (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.listen:
        args.host, args.port = _address(parser, "--listen", args.listen)
    if args.logger_listen:
        logger_host, args.logger_port = _address(parser, "--logger-listen", args.logger_listen)
        if logger_host != args.host:
            parser.error("--logger-listen must use the host of the command port")
    return args


def _address(parser: argparse.ArgumentParser, flag: str, text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"{flag} takes HOST:PORT, not {text!r}")
    return host, int(port)


def _load_key(path: str | None) -> rsa.RSAPrivateKey | None:
    if path is None:
        return None
    from cryptography.hazmat.primitives import serialization

    with open(path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SystemExit(f"{path}: not an RSA private key")
    return key


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


async def _run(args: argparse.Namespace) -> None:
    sim = FlashRunnerSimulator(
        host=args.host,
        port=args.port,
        logger_port=args.logger_port,
        pty=args.pty,
        channels=args.channels,
        run_s=args.run_s,
        fail_channels=[int(ch) for ch in _csv(args.fail_channels)],
        sync_run=args.sync_run,
        busy_interval_s=args.busy_interval_s,
        faults=Faults(args.stall_s, args.stall_count, args.garble, args.drop_after_chunks),
        nack_commands=_csv(args.nack),
        private_key=_load_key(args.key_file),
    )
    for name in args.project:
        sim.device.files[FileType.PRJ][name] = (
            f"; project {name}, preloaded by the simulator\n".encode()
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await sim.start()
    print(json.dumps(sim.ready_info()), flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the simulator until SIGTERM or SIGINT."""
    from bus.logs import configure_logging  # only an entry point configures logging

    args = _parse_args(argv)
    configure_logging()
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
