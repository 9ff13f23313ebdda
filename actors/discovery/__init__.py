"""FLUX discovery (UDP 1901) and device management (TLS on TCP 1901): protocols and drivers."""

from actors.discovery.driver import DiscoveryDriver
from actors.discovery.manager import FluxManager
from actors.discovery.table import DeviceEvent

__all__ = ["DeviceEvent", "DiscoveryDriver", "FluxManager"]
