"""The settings of one FlashRunner: the driver's timing, and the actor's ``[actor.options]``."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated

from actors.flashrunner.protocol import MultiChannel
from bus.options import FLATTEN, NON_BLANK, Example, Port, PositiveInt, Seconds, options

__all__ = ["DEFAULT_LOGGER_PORT", "DEFAULT_PORT", "FlashRunnerConfig", "FlashRunnerOptions"]

DEFAULT_PORT = 1234  # the port SMH's own example and third-party code use (reference §2)
DEFAULT_LOGGER_PORT = 1235  # assumption: the logger port is not public (reference §9)


@options
class FlashRunnerConfig:
    """How the driver talks to one FlashRunner.

    Args:
        command_timeout_s: Default wait for an answer when the caller gives none.
        connect_timeout_s: Wait for one connection attempt.
        backoff_initial_s: First pause before reconnecting after the link drops.
        backoff_max_s: Cap of the doubling pause between reconnect attempts.
        chunk_bytes: Bytes per file-transfer chunk (each chunk is acknowledged).
        transfer_timeout_s: Wait for the acknowledgement of one chunk.
        poll_interval_s: Interval between GETENGSTATUS polls while a project runs.
        multi_channel: How commands for several channels are framed (unconfirmed on the device).
        high_baudrate: On serial links, switch to 3 Mbaud after every (re)connect.
        logger_port: TCP port of the real-time logger, on the command host (LAN only).
        max_abandoned: Answers owed to timed-out commands that may be outstanding before the driver
            reconnects to get back in step with the device.
    """

    command_timeout_s: Seconds = 5.0
    connect_timeout_s: Seconds = 3.0
    backoff_initial_s: Seconds = 0.1
    backoff_max_s: Seconds = 5.0
    chunk_bytes: PositiveInt = 4096
    transfer_timeout_s: Seconds = 10.0
    poll_interval_s: Seconds = 0.05
    multi_channel: MultiChannel = MultiChannel.MASK
    high_baudrate: bool = False
    logger_port: Port = DEFAULT_LOGGER_PORT
    max_abandoned: PositiveInt = 4


@options
class FlashRunnerOptions:
    """The ``[actor.options]`` of a FlashRunner actor; they mirror ``fr_comm.FlashRunner(port, settings)``.

    Args:
        port: ``"LAN"``, or a serial device (``"/dev/ttyUSB0"``, ``"COM3"``).
        settings: LAN ``"host:port"``, or the baud rate (``"115200"``, ``"3000000"``).
        logger: Stream the real-time log as ``<service>.log`` events (LAN only).
        logger_address: ``host:port`` of the logger; default: the command host and ``logger_port``.
        driver: Every ``FlashRunnerConfig`` field, at the top level of the table.
    """

    port: Annotated[str, NON_BLANK, Example('port = "LAN"')]
    settings: Annotated[str, NON_BLANK, Example('settings = "192.168.1.100:1234"')]
    logger: bool = True
    logger_address: str | None = None
    driver: Annotated[FlashRunnerConfig, FLATTEN] = field(default_factory=FlashRunnerConfig)
