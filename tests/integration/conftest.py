"""Fixtures of the integration tier: the C client library, built once per session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, scaled

C_CLIENT = ROOT / "clients" / "c"


@pytest.fixture(scope="session")
def c_client_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clients/c built with its own Makefile into a temporary directory (library, examples and
    test programs); the directory holding the programs.

    Needs make, a C compiler, pkg-config and the libzmq and msgpack-c headers (.ci/run installs
    them). Without them the C tests are skipped with the reason; they are ``interop`` tests, so
    under CI=true that skip fails the run (tests/conftest.py).
    """
    missing = [tool for tool in ("make", "cc", "pkg-config") if shutil.which(tool) is None]
    if not missing:
        # Debian 12 names msgpack-c's pkg-config file "msgpack", later releases "msgpack-c".
        for package, names in (
            ("libzmq3-dev", ["libzmq"]),
            ("libmsgpack-dev", ["msgpack-c", "msgpack"]),
        ):
            if not any(_pkg_config_has(name) for name in names):
                missing.append(package)
    if missing:
        pytest.skip(f"the C client needs {', '.join(missing)} (see .ci/run)")
    build = tmp_path_factory.mktemp("c-client")
    result = subprocess.run(
        ["make", "-C", str(C_CLIENT), f"BUILD={build}", "-j2"],
        capture_output=True,
        text=True,
        timeout=scaled(300),
        check=False,
    )
    assert result.returncode == 0, f"make in clients/c failed:\n{result.stdout}\n{result.stderr}"
    return build


def _pkg_config_has(name: str) -> bool:
    return subprocess.run(["pkg-config", "--exists", name], check=False).returncode == 0
