"""``bus.testing.free_port``: ports for test lines, free for TCP and UDP, outside the kernel's
ephemeral range, never handed out twice by one process."""

from __future__ import annotations

import socket

from bus import testing


def test_ports_are_distinct_free_and_in_the_test_range() -> None:
    ports = [testing.free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(22000 <= port < 32000 for port in ports)
    assert all(testing._bindable(port) for port in ports)


def test_a_port_in_use_is_not_bindable_and_is_skipped() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", testing.free_port()))
        port = taken.getsockname()[1]
        assert not testing._bindable(port)  # UDP in use is enough to refuse it
        testing._port_cursor[0] = port  # the walk tries it first
        given = testing.free_port()
        assert given != port and testing._bindable(given)
