"""The settings of one FlashRunner driver: where the device is and how it is timed."""

from __future__ import annotations

from dataclasses import dataclass

from actors.flashrunner.protocol import MultiChannel

__all__ = ["DEFAULT_LOGGER_PORT", "DEFAULT_PORT", "FlashRunnerConfig"]

DEFAULT_PORT = 1234  # the port SMH's own example and third-party code use (reference §2)
DEFAULT_LOGGER_PORT = 1235  # assumption: the logger port is not public (reference §9)


@dataclass(frozen=True, slots=True, kw_only=True)
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

    command_timeout_s: float = 5.0
    connect_timeout_s: float = 3.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    chunk_bytes: int = 4096
    transfer_timeout_s: float = 10.0
    poll_interval_s: float = 0.05
    multi_channel: MultiChannel = MultiChannel.MASK
    high_baudrate: bool = False
    logger_port: int = DEFAULT_LOGGER_PORT
    max_abandoned: int = 4
