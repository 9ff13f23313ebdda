"""The FLUX Delta printer/scanner: sans-io robot protocol, driver, actor and simulator.

The pieces the ``discovery`` actor uses too (crypto and keys, framing, the datagram and
management protocols) live in ``actors.fluxfamily``.
"""

from actors.flux.config import FluxConfig
from actors.flux.driver import Download, FluxDriver

__all__ = ["Download", "FluxConfig", "FluxDriver"]
