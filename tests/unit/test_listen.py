"""``bus._listen.listen``: a broker socket's bind, or a ConfigError naming what failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus._listen import listen
from bus.errors import ConfigError


@pytest.fixture
def router() -> Iterator[zmq.Socket[Any]]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


def test_a_free_endpoint_is_bound(router: zmq.Socket[Any], tmp_path: Path) -> None:
    listen(router, f"ipc://{tmp_path}/command", "command")
    assert router.getsockopt_string(zmq.LAST_ENDPOINT) == f"ipc://{tmp_path}/command"


def test_a_port_in_use_names_the_role_the_endpoint_and_the_cause(
    router: zmq.Socket[Any],
) -> None:
    router.bind("tcp://127.0.0.1:*")
    taken = router.getsockopt_string(zmq.LAST_ENDPOINT)
    with zmq.Context() as ctx, ctx.socket(zmq.XPUB) as other:
        other.linger = 0
        with pytest.raises(ConfigError) as refused:
            listen(other, taken, "subscribe")
    assert refused.value.message == (
        f"the broker cannot listen on {taken} (subscribe): Address already in use;"
        " another process listens there (another broker?)"
    )


def test_a_missing_directory_is_said(router: zmq.Socket[Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file or directory; its directory does not"):
        listen(router, f"ipc://{tmp_path}/gone/command", "command")
