"""The Python client core stays a two-dependency import: pyzmq, msgpack, bus.protocol, bus.errors
(and the client half of bus.security, which stands on the same)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, scaled

_PROBE = """
import json, sys
import bus.client, bus.aio, bus._calls
print(json.dumps(sorted(sys.modules)))
"""

#: The bus modules the client core may load: itself, the two it builds on, its frame I/O
#: (bus._zmqio, which imports only pyzmq), the C hot path of its event decoding when it was
#: built (bus._speedups, which imports nothing; see ``optional`` below; and bus._zmqcalls, the
#: same for its non-blocking libzmq calls), and the client half
#: of bus.security (CURVE keys from files or the environment, and a CURVE client's socket
#: options), which imports only the standard library, pyzmq and bus.errors.
CLIENT_CORE = {
    "bus",
    "bus.client",
    "bus.aio",
    "bus._calls",
    "bus._zmqio",
    "bus.protocol",
    "bus.errors",
    "bus.security",
    "bus.security.keys",
    "bus.security.curve",
    "bus.security.files",
    "bus.security.errors",
}
#: Loaded when it was built (setup.py builds it where a C compiler is found).
OPTIONAL = {"bus._speedups", "bus._zmqcalls"}


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    """Every module a fresh interpreter holds after importing the client modules."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    )
    return set(json.loads(result.stdout))


class TestClientImports:
    def test_server_side_modules_are_not_imported(self, loaded: set[str]) -> None:
        """Importing bus.client, bus.aio and bus._calls loads no structlog, broker, actor,
        supervisor or actors package."""
        forbidden = {
            "structlog",
            "bus.broker",
            "bus.actor",
            "bus.supervisor",
            "bus.config",
            "bus.logs",
            "actors",
        }
        assert loaded & forbidden == set()
        assert not any(name.startswith(("structlog.", "actors.", "clients.")) for name in loaded)

    def test_only_protocol_and_errors_of_the_bus_package(self, loaded: set[str]) -> None:
        """Of the bus package, only the client modules, bus._zmqio, bus.protocol, bus.errors and
        the key modules of bus.security are loaded (not its server half: zap, acl, audit, keyring)."""
        bus_modules = {name for name in loaded if name == "bus" or name.startswith("bus.")}
        assert bus_modules - OPTIONAL == CLIENT_CORE

    def test_the_two_dependencies_are_loaded(self, loaded: set[str]) -> None:
        """pyzmq and msgpack are what the client core runs on (the check above is not vacuous)."""
        assert {"zmq", "msgpack"} <= loaded
