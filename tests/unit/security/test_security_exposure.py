"""Safe by default: an exposed broker without CURVE refuses to start unless told insecure."""

from __future__ import annotations

import pytest

from bus.errors import ConfigError
from bus.security.exposure import check_exposure, is_local_endpoint


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:7750", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://127.8.9.1:7750", True),
        ("tcp://localhost:7750", True),
        ("tcp://[::1]:7750", True),
        ("ipc:///run/linebus/cmd", True),
        ("inproc://x", True),
        ("tcp://*:7750", False),
        ("tcp://0.0.0.0:7750", False),
        ("tcp://192.168.1.5:7750", False),
        ("tcp://[::]:7750", False),
        ("tcp://eth0:7750", False),
        ("tcp://controller.plant:7750", False),
        ("ws://127.0.0.1:7750", False),
    ],
)
def test_is_local_endpoint(endpoint: str, local: bool) -> None:
    assert is_local_endpoint(endpoint) is local


LOCAL = {"command": "tcp://127.0.0.1:7750", "publish": "ipc:///tmp/p", "subscribe": "ipc:///tmp/s"}
EXPOSED = {**LOCAL, "command": "tcp://*:7750"}


def test_local_broker_may_run_without_curve() -> None:
    check_exposure(LOCAL, curve=False, insecure=False)


def test_exposed_broker_without_curve_refuses_and_says_how_to_secure_it() -> None:
    with pytest.raises(ConfigError) as err:
        check_exposure(EXPOSED, curve=False, insecure=False)
    message = str(err.value)
    assert "command = 'tcp://*:7750'" in message and "publish" not in message.split("(")[1]
    assert "linebus keys generate broker" in message and "insecure = true" in message


@pytest.mark.parametrize(("curve", "insecure"), [(True, False), (False, True)])
def test_curve_or_explicit_insecure_lets_it_run(curve: bool, insecure: bool) -> None:
    check_exposure(EXPOSED, curve=curve, insecure=insecure)
