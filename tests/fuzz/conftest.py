"""Hypothesis profiles for the fuzz tier: ``ci`` (the default) and ``long``.

``ci`` is what ``make test`` runs: a bounded number of examples, derandomized (the examples
are a fixed function of the test, so a run cannot flake and a failure reproduces as is), no
example database, no per-example deadline (a loaded 2-core machine is slow, not wrong).
``long`` is for hunting: many more examples, random, with a database under var/fuzz/ that
keeps every failing example for the next run. Choose with ``LINEBUS_HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parents[2]

settings.register_profile(
    "ci",
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=2_000,
    derandomize=False,
    database=DirectoryBasedExampleDatabase(ROOT / "var" / "fuzz" / "hypothesis"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("LINEBUS_HYPOTHESIS_PROFILE", "ci"))
