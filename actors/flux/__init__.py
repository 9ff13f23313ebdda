"""The FLUX Delta printer/scanner: sans-io robot protocol, driver and simulator."""

from actors.flux.config import FluxConfig
from actors.flux.crypto import get_or_create_default_key
from actors.flux.driver import Download, FluxDriver

__all__ = ["Download", "FluxConfig", "FluxDriver", "get_or_create_default_key"]
