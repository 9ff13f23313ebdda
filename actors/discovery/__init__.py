"""FLUX discovery: which printers are on the network (UDP 1901) and their management (TLS 1901).

This package holds the presence side (``driver``: the UDP listener and touch requests; ``table``:
the devices heard) and the actor. The datagram and management protocols and ``FluxManager``
are shared with the ``flux`` actor and live in ``actors.fluxfamily``.
"""

from actors.discovery.driver import DiscoveryDriver
from actors.discovery.table import DeviceEvent

__all__ = ["DeviceEvent", "DiscoveryDriver"]
