"""The discovery part of ``linebus demo``: the printers found on the network, and one managed."""

from __future__ import annotations

import time

from bus.client import Client
from bus.tours import Say
from clients.discovery import UpnpDiscover, UpnpTask

__all__ = ["tour"]

DEMO_PASSWORD = "demo"


def tour(bus: Client, service: str, say: Say) -> None:
    """List the discovered printers (fluxclient's UpnpDiscover) and ask one for its Wi-Fi list."""
    say(
        f"  {service} listens for FLUX announcements (UDP 1901 on a real network; unicast on loopback here)"
    )
    end = time.monotonic() + 15
    with UpnpDiscover(bus, service) as discover:
        devices = discover.list()
        while len(devices) < 2 and time.monotonic() < end:
            time.sleep(0.3)
            devices = discover.list()
    for device in sorted(devices, key=lambda d: d["ipaddr"]):
        say(
            f"    {device['name']:<10} {device['ipaddr']:<10} {device['model_id']:<8} "
            f"fw {device['version']:<7} {device['st_label']:<10} uuid ...{device['uuid'].hex[-12:]}"
        )
    say(
        f"  each change arrives as a {service}.device.<uuid> event (appeared, status, changed, gone)"
    )
    if devices:
        first = devices[0]
        task = UpnpTask(
            first["uuid"], bus=bus, service=service, backend_options={"password": DEMO_PASSWORD}
        )
        networks = task.get_wifi_list()
        say(
            f"  UpnpTask('{task.name}').get_wifi_list() over TLS management -> "
            f"{[n.get('ssid') for n in networks]}"
        )
        say(f"  its trust list: {[entry['label'] for entry in task.list_trust()]}")
