"""The remote-lab part of ``linebus demo``: the rerobots tutorial over the bus, on the simulator.

Books an instance of a workspace deployment, waits until it is READY, grabs a camera frame, runs
commands over SSH, sends a file and fetches the result, shows a typed error, and terminates.
"""

from __future__ import annotations

import struct
import tempfile
import time
from pathlib import Path

from bus.client import Client
from bus.tours import Say
from clients.remotelab import APIClient, BusyWorkspaceDeployment, Instance

__all__ = ["tour"]


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment, or None."""
    at = 2
    while at + 9 < len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None


def tour(bus: Client, service: str, say: Say) -> None:
    """Walk through the seed's tutorial: deployment, instance, camera, SSH, files, terminate."""
    apic = APIClient(bus=bus, service=service, timeout=30.0)
    say(
        f"  {service} drives the rerobots remote-lab API (here its simulator on loopback) with "
        "rerobots' own method names"
    )
    deployments = apic.get_wdeployments(types=["null"])
    wd = deployments[0]["id"]
    info = apic.get_wdeployment_info(wd)
    say(
        f"  get_wdeployments(types=['null']) -> {wd[:8]}... in {info['region']}, "
        f"add-ons {info['supported_addons']}, queue {info['queuelen']}"
    )
    rri = Instance(wdeployment_id=wd, apic=apic)
    say(f"  Instance(wdeployment_id=...) booked instance {rri.id[:8]}...; waiting until READY:")
    started = time.monotonic()
    details = rri.wait_until_ready(
        timeout=60.0,
        on_status=lambda status, elapsed: say(f"    {elapsed:4.1f} s  {status}"),
    )
    conn = details.get("conn", {})
    say(
        f"  READY after {time.monotonic() - started:.1f} s; SSH at {conn.get('ipv4')}:{conn.get('port')}, "
        f"host key {str(conn.get('hostkeys', ['?'])[0])[:24]}... (checked, never auto-accepted)"
    )
    try:
        try:
            apic.request_instance(wd)
        except BusyWorkspaceDeployment as exc:
            say(f"  a second request for the same deployment: BusyWorkspaceDeployment({exc})")

        rri.activate_addon_cam()
        end = time.monotonic() + 10
        while rri.status_addon_cam()["status"] != "active" and time.monotonic() < end:
            time.sleep(0.1)
        frame = rri.get_snapshot_cam()
        size = _jpeg_size(frame["data"])
        shape = f"{size[0]}x{size[1]} " if size else ""
        say(
            f"  cam add-on active; get_snapshot_cam() -> a {shape}JPEG of {len(frame['data'])} bytes"
        )

        rri.start_sshclient()
        say(f"  start_sshclient(); exec_ssh('pwd') -> {rri.exec_ssh('pwd').strip().decode()!r}")
        with tempfile.TemporaryDirectory(prefix="linebus-demo-") as tmp:
            local = Path(tmp) / "notes.txt"
            local.write_text("calibrate arm\nrecord camera\n")
            rri.put_file(local, "notes.txt")
            out = rri.exec_ssh("tr a-z A-Z < notes.txt > shout.txt && wc -l < shout.txt")
            say(
                f"  put_file('notes.txt'), a command over SSH made shout.txt ({out.strip().decode()} lines)"
            )
            rri.get_file("shout.txt", Path(tmp) / "shout.txt")
            first = (Path(tmp) / "shout.txt").read_text().splitlines()[0]
            say(f"  get_file('shout.txt') -> first line {first!r}")
    finally:
        rri.terminate()
    say(f"  terminate() -> status {apic.get_instance_info(rri.id)['status']}")
