"""``FlashRunnerActor``: one SMH FlashRunner 2.0 on the bus, with ``fr_comm``'s operations as commands.

Options (the ``[actor.options]`` table, read into ``FlashRunnerOptions``) mirror
``fr_comm.FlashRunner(port, settings)``::

    [actor.options]
    port = "LAN"                    # or a serial device: "/dev/ttyUSB0", "COM3"
    settings = "192.168.1.100:1234" # LAN "host:port", or the baud rate "115200" / "3000000"
    logger = true                   # stream the real-time log as <service>.log events (LAN only)
    logger_address = "192.168.1.100:1235"  # default: the command host and logger_port
    high_baudrate = false           # serial: send SETSERIALBAUDRATE HIGH and go to 3 Mbaud
    # any other FlashRunnerConfig field: command_timeout_s, connect_timeout_s, backoff_initial_s,
    # backoff_max_s, chunk_bytes, transfer_timeout_s, poll_interval_s, multi_channel ("mask" or
    # "each"), logger_port, max_abandoned
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.flashrunner.config import FlashRunnerOptions
from actors.flashrunner.driver import FlashRunnerDriver
from actors.flashrunner.protocol import FileType
from actors.flashrunner.realtime_log import FlashRunnerLogger
from actors.flashrunner.transport_lan import TcpTransport, parse_address
from bus.actor import Actor, CommandContext, command
from bus.backoff import Backoff
from bus.errors import ConfigError, DeviceError, InvalidArguments
from bus.options import from_table

__all__ = ["ACTOR", "FlashRunnerActor"]


def _ms(timeout: int, argument: str) -> float:
    if timeout <= 0:
        raise InvalidArguments(
            f"{argument} must be a positive number of milliseconds", details={"argument": argument}
        )
    return timeout / 1000.0


class FlashRunnerActor(Actor):
    """One SMH FlashRunner 2.0 programmer, with every ``fr_comm`` operation as a command.

    Commands keep ``fr_comm``'s names and units: timeouts are milliseconds; where ``fr_comm``
    takes a local path, the command takes the file's bytes (the ``clients.flashrunner`` facade
    reads and writes the local file). Transfers and project runs report progress and can be
    cancelled; the device's errors come back typed (``device_fault`` with the device's symbol in
    ``device_code``, ``device_timeout``, ``device_unavailable`` while the link is down, ``busy``).

    Shared per device, across every caller: FR_SendCommand / FR_SendCommand_Ex queue their
    expected answers in ONE answer queue per device, and FR_GetAnswer takes the oldest answer in
    it, whoever sent the command. Two clients interleaving send/get on the same service get each
    other's answers; give a device one owner at a time. The public key (FR_GetPublicKey) and the
    FR_DynMem* encryption session are also held once per device.

    Events: ``<service>.log`` ``{"line": str}`` for each line of the real-time logger (LAN only),
    ``<service>.project.channel`` ``{"project", "channel", "passed"}`` as each channel of a
    project run finishes, ``<service>.project.done`` ``{"project", "results", "errors"}`` at the end.

    The device may be unreachable at start: the actor still registers, commands fail with
    ``device_unavailable``, and the driver keeps reconnecting in the background.
    """

    kind = "flashrunner"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        where = f"flashrunner {name}"
        self.config = from_table(FlashRunnerOptions, self.options, where, noun="option")
        try:
            self.driver = FlashRunnerDriver.from_settings(
                self.config.port, self.config.settings, self.config.driver
            )
        except InvalidArguments as exc:
            raise ConfigError(f"{where}: {exc.message}") from exc
        self._logger_address = self._resolve_logger(where)
        self._tasks: set[asyncio.Task[None]] = set()

    def _resolve_logger(self, where: str) -> tuple[str, int] | None:
        transport = self.driver.transport
        if not self.config.logger or not isinstance(transport, TcpTransport):
            return None
        address = self.config.logger_address
        if address is None:
            return transport.host, self.config.driver.logger_port
        try:
            return parse_address(address)
        except InvalidArguments as exc:
            raise ConfigError(f"{where}: logger_address: {exc.message}") from exc

    # ------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        """Connect; if the device is not there yet, keep trying in the background."""
        try:
            await self.driver.open()
        except DeviceError as exc:
            if self.driver.connected:  # linked, but the 3 Mbaud switch failed: keep the link
                self.log.warning("flashrunner_baudrate_failed", error=str(exc))
            else:
                self.log.warning(
                    "flashrunner_unreachable_at_start",
                    error=str(exc),
                    hint="retrying in the background",
                )
                self._spawn(self._open_later(), "open")
        if self._logger_address is not None:
            self._spawn(self._forward_log(*self._logger_address), "logger")

    async def on_stop(self) -> None:
        """Stop the background tasks and close the link."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.driver.close()

    def describe_extra(self) -> dict[str, Any]:
        """The device's address and whether it is connected."""
        return {
            "device": {
                "port": self.config.port,
                "settings": self.config.settings,
                "connected": self.driver.connected,
            },
            "library": self.driver.library_version(),
        }

    def device_addresses(self) -> list[str]:
        """The unit's address as ``fr_comm.FlashRunner(port, settings)`` names it: LAN
        ``host:port``, or the serial port (``/dev/ttyUSB0``, ``COM3``)."""
        transport = self.driver.transport
        if isinstance(transport, TcpTransport):
            return [transport.description]
        return [self.config.port]

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"flashrunner {self.name} {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_later(self) -> None:
        backoff = self._backoff()
        while True:
            await asyncio.sleep(backoff.next_delay())
            try:
                await self.driver.open()
            except DeviceError as exc:
                if self.driver.connected:
                    self.log.warning("flashrunner_baudrate_failed", error=str(exc))
                    return
                continue
            self.log.info("flashrunner_connected_late")
            return

    async def _forward_log(self, host: str, port: int) -> None:
        backoff, reported = self._backoff(), False
        while True:
            try:
                async with FlashRunnerLogger(
                    host, port, connect_timeout_s=self.config.driver.connect_timeout_s
                ) as logger:
                    backoff.reset()
                    reported = False
                    async for line in logger:
                        self.publish("log", {"line": line})
            except DeviceError as exc:
                if not reported:
                    self.log.info(
                        "flashrunner_logger_down", error=str(exc), hint="retrying in the background"
                    )
                    reported = True
            await asyncio.sleep(backoff.next_delay())

    def _backoff(self) -> Backoff:
        return Backoff(self.config.driver.backoff_initial_s, self.config.driver.backoff_max_s)

    # ------------------------------------------------------------ commands

    @command(privileged=True)
    async def FR_SendCommand(self, command: str) -> None:
        """Send one complete command frame, e.g. ``#55*SPING`` or ``#GETENGSTATUS``.

        The answer is queued for FR_GetAnswer (one queue per device, shared by every caller).
        """
        await self.driver.send_command(command)

    @command(privileged=True)
    async def FR_SendCommand_Ex(self, channels: list[int], command: str) -> None:
        """Send ``command`` (without ``#`` or channel header, e.g. ``RUN Project.prj``) to ``channels``.

        The header is built for you; the device answers once per channel, each fetched with FR_GetAnswer.
        """
        await self.driver.send_command_ex(channels, command)

    @command
    async def FR_GetAnswer(self, timeout: int) -> str:
        """Return the next queued answer as the device sent it (``55|...>``, or ``...!`` for a failure).

        ``timeout`` is in milliseconds. A failure answer is returned, not raised. Fails with
        ``device_timeout`` when nothing comes in time (the answer can still be fetched later) and
        ``invalid_arguments`` when no command is waiting for an answer.
        """
        answer = await self.driver.get_answer(_ms(timeout, "timeout"))
        return answer.raw

    @command(privileged=True)
    async def FR_SendFile(
        self, name: str, data: bytes, file_type: FileType, ctx: CommandContext
    ) -> dict[str, Any]:
        """Store ``data`` as ``name`` in the unit's ``file_type`` area (FRB, PRJ, LIC, LOG, LIB).

        Progress ``{"done": bytes, "total": bytes}``; cancelling aborts the transfer and the unit
        discards the partial file. Returns ``{"name", "size"}``.
        """
        await self.driver.upload(name, data, file_type, on_progress=ctx.byte_progress())
        return {"name": name, "size": len(data)}

    @command(privileged=True)
    async def FR_GetFile(self, name: str, file_type: FileType, ctx: CommandContext) -> bytes:
        """Return the content of ``name`` from the unit's ``file_type`` area.

        Progress ``{"done": bytes, "total": bytes}``; cancellable. Fails with ``device_fault``
        (``ERR_FILE_NOT_FOUND``) if there is no such file.
        """
        return await self.driver.download(name, file_type, on_progress=ctx.byte_progress())

    @command(privileged=True)
    async def FR_RunProject(
        self, project: str, channels: list[int], timeout: int, ctx: CommandContext
    ) -> dict[str, bool]:
        """Run ``project`` on ``channels`` and wait until every channel passes or fails.

        ``timeout`` is in milliseconds. Progress: ``{"done": 0, "total": n}`` when the run starts,
        then ``{"done": k, "total": n, "channel": c, "passed": bool}`` as each channel finishes
        (also published as ``<service>.project.channel``). Returns ``{"<channel>": passed}``.
        Fails with ``device_timeout`` (details: ``results``, ``pending``) if channels are still
        running at the timeout. Cancelling stops waiting; channels already started finish on the unit.
        """
        timeout_s = _ms(timeout, "timeout")
        total = len(set(channels))
        done = 0

        def on_done(channel: int, passed: bool) -> None:
            nonlocal done
            done += 1
            ctx.progress({"done": done, "total": total, "channel": channel, "passed": passed})
            self.publish(
                "project.channel", {"project": project, "channel": channel, "passed": passed}
            )

        ctx.progress({"done": 0, "total": total})
        results = await self.driver.run_project(project, channels, timeout_s, on_done)
        self.publish(
            "project.done",
            {
                "project": project,
                "results": {str(c): r.passed for c, r in results.items()},
                "errors": {str(c): r.error for c, r in results.items() if r.error},
            },
        )
        return {str(c): r.passed for c, r in sorted(results.items())}

    @command
    async def FR_GetPublicKey(self) -> bytes:
        """Fetch the unit's RSA public key, keep it for the encryption commands, and return it (PEM)."""
        return await self.driver.get_public_key()

    @command
    async def FR_EncryptData(self, data: bytes) -> dict[str, bytes]:
        """Encrypt one block with a fresh AES key and IV (single-shot); needs FR_GetPublicKey first.

        Returns ``{"header": bytes, "payload": bytes}``: send the header to the unit, then the
        payload (FR_DynMemSendHeader, FR_DynMemWriteEncrypted). Header layout v1 is provisional
        (see ``actors.flashrunner.crypto``).
        """
        encrypted = self.driver.encrypt_data(data)
        return {"header": encrypted.header, "payload": encrypted.payload}

    @command
    async def FR_DynMemBeginEncryption(self) -> bytes:
        """Start an encryption session (one key for many blocks) and return its header to send once."""
        return self.driver.dynmem_begin_encryption()

    @command
    async def FR_DynMemEncryptData(self, data: bytes) -> bytes:
        """Encrypt the next block of the session, CBC-chained to the previous one."""
        return self.driver.dynmem_encrypt_data(data)

    @command
    async def FR_DynMemResetEncryption(self) -> None:
        """End the encryption session; the next one starts with a new key and IV chain."""
        self.driver.dynmem_reset_encryption()

    @command(privileged=True)
    async def FR_DynMemSendHeader(self, channels: list[int], header: bytes) -> None:
        """Send an encryption header to ``channels`` (linebus extension).

        The wire command is assumed to be ``DYNMEMKEY``.
        """
        await self.driver.dynmem_send_header(channels, header)

    @command(privileged=True)
    async def FR_DynMemWriteEncrypted(self, channels: list[int], address: int, data: bytes) -> None:
        """Write an encrypted block at ``address`` of ``channels``' dynamic memory (linebus extension).

        The unit decrypts it with the key of the last header (wire command ``DYNMEMSETENC`` assumed).
        """
        await self.driver.dynmem_write_encrypted(channels, address, data)

    @command(privileged=True)
    async def FR_DynMemWrite(self, channels: list[int], address: int, data: bytes) -> None:
        """Write plain bytes at ``address`` of ``channels``' dynamic memory (linebus extension).

        The wire command is ``DYNMEMSET``.
        """
        await self.driver.dynmem_write(channels, address, data)

    @command(concurrent=True)
    def FR_GetDllVersion(self) -> str:
        """Return the version of the FlashRunner library the actor runs (no device I/O)."""
        return self.driver.library_version()


ACTOR = FlashRunnerActor
