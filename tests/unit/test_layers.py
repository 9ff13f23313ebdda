"""The import layers of pyproject.toml's ``[tool.importlinter]`` hold, and each one can break.

``test_layers_hold`` runs the venv's ``lint-imports`` on the tree and fails with its report.
``test_contract_catches`` copies the packages to a temporary directory, adds one import that
breaks one rule, and checks that ``lint-imports --contract <id>`` reports that contract broken:
a contract that a typo or a too-wide ignore had made vacuous would fail here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

#: (contract id, file, the import that breaks it): at least one case per contract.
VIOLATIONS = [
    ("floor", "bus/protocol.py", "import bus.client"),
    ("floor", "bus/errors.py", "import bus.config"),
    ("client-core", "bus/client.py", "import bus.actor"),
    ("client-core", "bus/_calls.py", "import clients.flux"),
    ("actors-clients", "actors/flux/driver.py", "import clients.flux"),
    ("actors-clients", "clients/discovery.py", "import actors.fluxfamily.crypto"),
    ("facades", "clients/flux.py", "import bus.actor"),
    ("actor-packages", "actors/flux/session.py", "import actors.discovery.driver"),
    ("actor-packages", "actors/discovery/actor.py", "import actors.flux.actor"),
    ("actor-packages", "actors/fluxfamily/keys.py", "import actors.flux.config"),
    ("actor-packages", "actors/telemetry/store.py", "import actors.fluxfamily.crypto"),
    ("actor-packages", "actors/simsupport/jpeg.py", "import actors.remotelab.config"),
    ("actor-packages", "actors/flux/driver.py", "import actors.simsupport.jpeg"),
    ("below-the-top", "bus/actor.py", "import actors.flux.fcode"),
    ("top", "actors/flux/actor.py", "import bus.supervisor"),
    ("top", "bus/client.py", "import bus.tours"),
    ("top-order", "bus/supervisor.py", "import bus.demo"),
    ("top-order", "bus/tours/line.py", "import bus.demo"),
    ("top", "bus/config.py", "import bus.web.app"),
    ("top-order", "bus/web/app.py", "import bus.supervisor"),
    ("below-the-top", "bus/web/gateway.py", "import clients.flux"),
]

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(),
    reason=f"import-linter is not installed ({LINT_IMPORTS}): pip install -e '.[dev]'",
)


def _lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_layers_hold() -> None:
    """Every contract is kept by the tree as it is."""
    result = _lint_imports(ROOT)
    assert result.returncode == 0, (
        f"lint-imports: a layer is broken\n{result.stdout}{result.stderr}"
    )


def test_every_contract_has_a_violation_case() -> None:
    """A new contract gets a case in VIOLATIONS, so it is shown to catch what it forbids."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ids = {contract["id"] for contract in config["tool"]["importlinter"]["contracts"]}
    assert ids == {case[0] for case in VIOLATIONS}


@pytest.mark.parametrize(("contract", "path", "line"), VIOLATIONS)
def test_contract_catches(tmp_path: Path, contract: str, path: str, line: str) -> None:
    """One forbidden import in a copy of the tree breaks the contract that forbids it."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for package in ("bus", "actors", "clients"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "node")
        )
    target = tmp_path / path
    target.write_text(target.read_text() + f"\n{line}\n")
    result = _lint_imports(tmp_path, "--contract", contract)
    assert result.returncode == 1, f"{path}: {line!r} did not break {contract}\n{result.stdout}"
    assert "BROKEN" in result.stdout
