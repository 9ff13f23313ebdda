"""The FlashRunner 2.0 programmer: sans-io protocol, transports, driver and simulator."""

from actors.flashrunner.config import FlashRunnerConfig
from actors.flashrunner.driver import LIBRARY_VERSION, ChannelResult, FlashRunnerDriver
from actors.flashrunner.protocol import Answer, FileType

__all__ = [
    "LIBRARY_VERSION",
    "Answer",
    "ChannelResult",
    "FileType",
    "FlashRunnerConfig",
    "FlashRunnerDriver",
]
