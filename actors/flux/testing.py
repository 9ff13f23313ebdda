"""Helpers for tests of the FLUX and discovery layers: free loopback addresses and ports.

Simulators run on their own loopback address (Linux routes all of 127/8 to ``lo``); picking a
random one per test keeps parallel or repeated runs apart.
"""

from __future__ import annotations

import contextlib
import random
import socket

from actors.fluxfamily.datagram import DEFAULT_GROUP

__all__ = ["free_udp_port", "multicast_on_loopback", "random_loopback"]


def random_loopback() -> str:
    """A random address in 127.64.0.0/10 (not 127.0.0.1, where other services live)."""
    return f"127.{random.randint(64, 127)}.{random.randint(0, 255)}.{random.randint(2, 254)}"


def free_udp_port() -> int:
    """A UDP port that was free on every address a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def multicast_on_loopback(group: str = DEFAULT_GROUP, timeout_s: float = 1.0) -> bool:
    """Whether a datagram sent to ``group`` from a loopback address comes back on loopback."""
    port = free_udp_port()
    with contextlib.ExitStack() as stack:
        try:
            receiver = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            receiver.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            receiver.bind((group, port))
            receiver.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton("127.0.0.1"),
            )
            sender = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sender.bind((random_loopback(), 0))
            sender.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sender.getsockname()[0])
            )
            sender.sendto(b"probe", (group, port))
            receiver.settimeout(timeout_s)
            return receiver.recv(16) == b"probe"
        except OSError:
            return False
