"""Every fuzzing target (tests/fuzz/targets), run briefly on each ``make test``.

Two checks per target: its committed corpus (the seeds and every ``regression-*`` input a crash
left) replayed in-process, which fails on any exception outside the target's documented
``ERRORS``; and a short coverage-guided atheris run from that corpus, a fixed number of inputs
with a fixed seed (``-runs``, ``-seed``), so it is the same run every time and cannot flake.
Long runs are ``make fuzz`` (docs/FUZZING.md).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
#: Inputs per target in the short run: ~0.5-1 s each on one core of a CI machine.
RUNS = {"flux_handshake": 300, "discovery_datagram": 600, "config": 1500, "flux_framing": 1500}
DEFAULT_RUNS = 3000


def test_every_target_has_a_seed_corpus() -> None:
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(TARGETS)
    for name in TARGETS:
        assert any((CORPUS / name).glob("seed-*")), name


@pytest.mark.parametrize("name", TARGETS)
def test_corpus_replays_without_an_undocumented_error(name: str) -> None:
    target = importlib.import_module(f"tests.fuzz.targets.{name}")
    for path in sorted((CORPUS / name).iterdir()):
        try:
            target.fuzz_one(path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{path.relative_to(ROOT)}: {exc!r}") from exc


@pytest.mark.parametrize("name", TARGETS)
def test_short_atheris_run_finds_no_crash(name: str, tmp_path: Path) -> None:
    found = tmp_path / "found"
    found.mkdir()
    # Without coverage.py's subprocess hook: its tracer would slow the fuzzer several times,
    # and the replay above already measures these parsers in-process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    runs = RUNS.get(name, DEFAULT_RUNS)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            name,
            f"-runs={runs}",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
            str(found),
            str(CORPUS / name),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, result.stderr[-3000:]
    assert f"Done {runs} runs" in result.stderr, result.stderr[-3000:]
