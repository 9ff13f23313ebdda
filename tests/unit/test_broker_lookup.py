"""Device-address lookup: the normal forms (``bus.addresses``), the broker's ``lookup`` over a
``Directory`` with and without an access list (``bus.lookup``), and, end to end in-process, an
actor advertising its devices (``Actor.device_addresses``) and a client asking the broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import bus.logs
from bus import protocol
from bus.actor import Actor, command
from bus.addresses import matches, normalize, normalize_all
from bus.cli import main
from bus.client import Client
from bus.directory import Directory
from bus.errors import InvalidArguments
from bus.lookup import lookup
from bus.security.acl import Acl
from bus.testing import wait_until
from tests.unit.inproc_line import WAIT_S, ActorThread, BrokerThread, service_up

UUID_HEX = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("192.168.1.100:1234", "192.168.1.100:1234"),
        (" 192.168.1.100:01234 ", "192.168.1.100:1234"),
        ("Printer.Local.:23811", "printer.local:23811"),
        ("localhost:23811", "127.0.0.1:23811"),
        (":23811", "127.0.0.1:23811"),  # fluxclient's ("", 23811)
        ("[0:0::1]:80", "[::1]:80"),
        ("[::1]", "::1"),
        ("0123456789ABCDEF0123456789ABCDEF", f"uuid:{UUID_HEX}"),
        ("{01234567-89ab-cdef-0123-456789ABCDEF}", f"uuid:{UUID_HEX}"),
        (f"urn:uuid:{UUID_HEX}", f"uuid:{UUID_HEX}"),
        ("COM3", "COM3"),
        ("/dev/ttyUSB0", "/dev/ttyUSB0"),
        ("socket://host:7000", "socket://host:7000"),  # a pyserial URL, not host:port
        ("https://api.rerobots.net", "https://api.rerobots.net"),
    ],
)
def test_normal_forms(given: str, normal: str) -> None:
    assert normalize(given) == normal


@pytest.mark.parametrize("bad", ["", "   ", "host:0", "host:65536", "x" * 600])
def test_not_an_address(bad: str) -> None:
    with pytest.raises(ValueError, match=r"address|port"):
        normalize(bad)


def test_matching_rules() -> None:
    """Equal forms match; a query without port finds every port of its host; nothing else."""
    advertised = normalize_all(["10.0.0.5:23811", "/dev/ttyUSB0", UUID_HEX.upper(), 7, "host:0"])
    assert advertised == ("10.0.0.5:23811", "/dev/ttyUSB0", f"uuid:{UUID_HEX}")
    assert matches(normalize("10.0.0.5:23811"), advertised) == "10.0.0.5:23811"
    assert matches(normalize("10.0.0.5"), advertised) == "10.0.0.5:23811"
    assert matches(normalize("10.0.0.5:23812"), advertised) is None
    assert matches(normalize(UUID_HEX), advertised) == f"uuid:{UUID_HEX}"
    assert matches(normalize("/dev/ttyusb0"), advertised) is None
    assert normalize_all("10.0.0.5:23811") == ()  # not a list: advertises nothing


# --- the broker command over a directory ------------------------------------------------------


def _directory(*entries: tuple[str, str, list[str], dict[str, Any]]) -> Directory:
    """Services (name, kind, devices, commands) registered as READY would register them."""
    directory = Directory()
    for ident, (name, kind, devices, commands) in enumerate(entries):
        info = {
            "kind": kind,
            "pid": 1,
            "commands": commands,
            "devices": devices,
            "privileged": sorted(c for c, spec in commands.items() if spec.get("privileged")),
        }
        frame = protocol.encode_ready(name, info)[0]
        directory.register(name, bytes([ident]), info, 0.0, frame)
    return directory


PLAIN = {"ping": {}, "FR_SendCommand": {}}
LINE = _directory(
    ("fr1", "flashrunner", ["192.168.1.100:1234"], PLAIN),
    ("fr2", "flashrunner", ["/dev/ttyUSB0"], PLAIN),
    ("p1", "flux", ["192.168.1.30:23811", UUID_HEX], {"ping": {}, "kick": {"privileged": True}}),
    ("lab", "remotelab", ["https://api.rerobots.net"], {"ping": {}}),
)


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return [row["name"] for row in rows]


def test_lookup_by_address_and_kind() -> None:
    rows = lookup(LINE, {"address": "192.168.1.100:01234"}, None, "")
    assert _names(rows) == ["fr1"]
    assert rows[0]["address"] == "192.168.1.100:1234"
    assert rows[0]["devices"] == ["192.168.1.100:1234"] and rows[0]["state"] == "up"
    assert _names(lookup(LINE, {"address": UUID_HEX.upper(), "kind": "flux"}, None, "")) == ["p1"]
    assert lookup(LINE, {"address": UUID_HEX, "kind": "flashrunner"}, None, "") == []
    assert _names(lookup(LINE, {"kind": "flashrunner"}, None, "")) == ["fr1", "fr2"]
    assert lookup(LINE, {"address": "10.9.9.9:1"}, None, "") == []


@pytest.mark.parametrize(
    ("args", "text", "details"),
    [
        ({}, "needs 'address'", ("address", "missing", "str")),
        ({"address": 5}, "'address' must be str", ("address", "type", "str")),
        ({"kind": ["flux"]}, "'kind' must be str", ("kind", "type", "str")),
        (
            {"address": "host:70000"},
            "port must be 1-65535",
            ("address", "value", "a device address"),
        ),
    ],
)
def test_lookup_bad_arguments(args: dict[str, Any], text: str, details: tuple[str, ...]) -> None:
    """Refused arguments: invalid_arguments with the details every broker command gives (§10)."""
    with pytest.raises(InvalidArguments, match=text) as info:
        lookup(LINE, args, None, "")
    assert info.value.details == dict(
        zip(("argument", "problem", "expected"), details, strict=True)
    )


def test_lookup_shows_only_services_the_caller_may_call() -> None:
    """A service is listed only if the caller may call one of its commands: bob may not call
    fr1 at all; p1 declares only ping (callable) and a privileged kick; carol may call nothing
    of p1 but its privileged kick, and she is no operator, so p1 is hidden from her."""
    acl = Acl.parse(
        {
            "operators": ["alice"],
            "identity": {"bob": {"call": ["*.*", "!fr1.*"]}, "carol": {"call": ["p1.kick"]}},
        }
    )
    query = {"kind": "flashrunner"}
    assert _names(lookup(LINE, query, acl, "alice")) == ["fr1", "fr2"]
    assert _names(lookup(LINE, query, acl, "bob")) == ["fr2"]
    assert lookup(LINE, {"address": "192.168.1.100:1234"}, acl, "bob") == []
    assert _names(lookup(LINE, {"address": UUID_HEX}, acl, "bob")) == ["p1"]
    assert lookup(LINE, {"address": UUID_HEX}, acl, "carol") == []
    known = Acl.parse({}, known=["alice"])  # a revoked identity learns nothing
    assert lookup(LINE, {"kind": "flux"}, known, "mallory") == []


# --- end to end in the process: an actor advertises, a client asks ---------------------------


class _Unit(Actor):
    """A stand-in device actor that advertises one address, then another."""

    kind = "flashrunner"
    address = "10.1.2.3:1234"

    @command
    def FR_GetDllVersion(self) -> str:
        return "stand-in"

    def device_addresses(self) -> list[str]:
        return [self.address]


@pytest.fixture(scope="module")
def bus_line() -> Iterator[tuple[BrokerThread, ActorThread]]:
    broker = BrokerThread()
    broker.start()
    unit = ActorThread("fr7", broker, make=_Unit)
    unit.start()
    try:
        wait_until(service_up(broker.command, "fr7"), WAIT_S, "fr7 up")
        yield broker, unit
    finally:
        unit.close()
        broker.close()


def test_actor_advertises_and_readvertises(bus_line: tuple[BrokerThread, ActorThread]) -> None:
    """READY carries ``device_addresses()``; ``devices_changed`` sends them again; ``describe``
    shows them; the broker answers ``lookup`` with what is current."""
    broker, unit = bus_line
    with Client(broker.command, timeout=WAIT_S) as client:
        rows = client.call("broker", "lookup", {"address": "10.1.2.3"})
        assert [(r["name"], r["address"]) for r in rows] == [("fr7", "10.1.2.3:1234")]
        assert client.call("fr7", "describe")["devices"] == ["10.1.2.3:1234"]
        actor = unit.actor
        assert isinstance(actor, _Unit)
        actor.address = "/dev/ttyACM0"
        unit.call_soon(actor.devices_changed)
        wait_until(
            lambda: client.call("broker", "lookup", {"address": "/dev/ttyACM0"}) != [],
            WAIT_S,
            "the new address advertised",
        )
        assert client.call("broker", "lookup", {"address": "10.1.2.3:1234"}) == []


def test_cli_lookup(
    bus_line: tuple[BrokerThread, ActorThread],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``linebus lookup [ADDRESS] [--kind K]`` prints the services and what they drive."""
    broker, _ = bus_line
    # main() would set the process's logging up for a CLI run; leave it as the tests have it
    monkeypatch.setattr(bus.logs, "configure_logging", lambda **_: None)
    where = ["--endpoint", broker.command, "--timeout", str(WAIT_S)]
    assert main(["lookup", "--kind", "flashrunner", *where]) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert row.split()[:3] == ["fr7", "flashrunner", "up"]
    assert main(["lookup", "10.9.9.9:1", *where]) == 0
    assert "no service drives it" in capsys.readouterr().out
    assert main(["lookup", *where]) == 2
