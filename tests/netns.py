"""Linux network namespaces for the interop tests: a host of its own for each process group.

``Namespace`` is one namespace: its own loopback (up), its own ``/etc/hosts`` (``ip netns exec``
bind-mounts ``/etc/netns/NAME/hosts`` over ``/etc/hosts`` for the command it runs), and
``argv(...)`` to run a command inside it. ``ip netns exec`` execs the command, so the process id
of what a test starts is the command's own. ``link`` joins two namespaces by a veth pair, or a
namespace to a bridge; ``Network`` owns namespaces, links and bridges and removes them all.

Creating them needs root and a kernel that allows it; ``unavailable()`` says why not, for a skip.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["Namespace", "Network", "unavailable"]

_NETNS_ETC = Path("/etc/netns")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


@functools.cache
def unavailable() -> str | None:
    """Why this machine cannot run the namespace tests, or None when it can."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the tests as root, as CI does)"
    probe = f"lbprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "exec", probe, "ip", "link", "set", "lo", "up")
        _ip("link", "add", f"{probe}a", "type", "veth", "peer", "name", f"{probe}b")
        _ip("link", "del", f"{probe}a")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"this machine does not allow network namespaces and veth links: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


class Namespace:
    """One network namespace, created by ``Network.namespace``.

    Args:
        name: The namespace's name (unique on the machine).
        hosts: Host name -> address, written to its ``/etc/hosts`` with ``localhost``.
    """

    def __init__(self, name: str, hosts: dict[str, str]) -> None:
        self.name = name
        _ip("netns", "add", name)
        self.run("ip", "link", "set", "lo", "up")
        folder = _NETNS_ETC / name
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", *(f"{addr} {host}" for host, addr in hosts.items())]
        (folder / "hosts").write_text("\n".join(lines) + "\n")

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, *command: str) -> None:
        """Run ``command`` inside the namespace; raise OSError if it fails."""
        _ip("netns", "exec", self.name, *command)

    def delete(self) -> None:
        """Remove the namespace (its interfaces go with it) and its ``/etc/netns`` folder."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
        shutil.rmtree(_NETNS_ETC / self.name, ignore_errors=True)


class Network:
    """Namespaces, bridges and links of one test, all removed by ``close``.

    Args:
        prefix: Short prefix of every name (interface names have at most 15 characters).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}{os.getpid() % 100000}"
        self.namespaces: list[Namespace] = []
        self.bridges: list[str] = []
        self._links = 0

    def namespace(self, name: str, hosts: dict[str, str] | None = None) -> Namespace:
        """A new namespace ``<prefix><name>`` with these ``/etc/hosts`` entries."""
        made = Namespace(f"{self.prefix}{name}", hosts or {})
        self.namespaces.append(made)
        return made

    def bridge(self, name: str) -> str:
        """A new bridge in the root namespace, up."""
        bridge = f"{self.prefix}{name}"
        _ip("link", "add", bridge, "type", "bridge")
        self.bridges.append(bridge)
        _ip("link", "set", bridge, "up")
        return bridge

    def attach(self, ns: Namespace, bridge: str, address: str) -> str:
        """Join ``ns`` to ``bridge`` by a veth pair; ``address`` (CIDR) on its end, named eth0.

        Returns the bridge-side interface: ``cut`` and ``restore`` take it.
        """
        self._links += 1
        outer = f"{self.prefix}v{self._links}"
        inner = f"{outer}i"
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns.name)
        ns.run("ip", "link", "set", inner, "name", "eth0")
        ns.run("ip", "addr", "add", address, "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        _ip("link", "set", outer, "master", bridge)
        _ip("link", "set", outer, "up")
        return outer

    @staticmethod
    def cut(link: str) -> None:
        """Take a link down: nothing passes until ``restore``."""
        _ip("link", "set", link, "down")

    @staticmethod
    def restore(link: str) -> None:
        """Bring a cut link back up."""
        _ip("link", "set", link, "up")

    def close(self) -> None:
        """Remove every namespace and bridge this network made."""
        for ns in self.namespaces:
            ns.delete()
        for bridge in self.bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=10)
