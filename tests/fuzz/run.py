"""Run one fuzzing target under atheris (coverage-guided, libFuzzer): ``python -m tests.fuzz.run``.

    python -m tests.fuzz.run TARGET [libFuzzer options] [CORPUS_DIR ...]

``TARGET`` is a module of ``tests/fuzz/targets`` (``--list`` prints them). The parser modules
it imports are instrumented for coverage; libFuzzer then mutates the inputs of the corpus
directories (the first one also receives the new inputs it finds) and stops on the first
input for which ``fuzz_one`` raises anything but the target's documented ``ERRORS``, writing
it out as ``crash-<sha1>`` (``-artifact_prefix=DIR/`` says where). Useful options:
``-max_total_time=SECONDS``, ``-runs=N``, ``-seed=N`` (with ``-runs``: a reproducible run),
``-max_len=BYTES``. Given files instead of directories, it runs just those inputs (a replay).

``make fuzz`` runs every target this way; see docs/FUZZING.md.
"""

from __future__ import annotations

import importlib
import sys

import atheris

from tests.fuzz.targets import TARGETS


def main(argv: list[str]) -> None:
    """Fuzz the target named by ``argv[1]`` with libFuzzer's options and corpora after it."""
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(2)
    if argv[1] == "--list":
        print("\n".join(TARGETS))
        return
    name = argv[1]
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    # The parser modules load inside this block, so atheris instruments their branches.
    with atheris.instrument_imports(include=["bus", "actors", "tests.fuzz"]):
        target = importlib.import_module(f"tests.fuzz.targets.{name}")
    atheris.Setup([argv[0], *argv[2:]], target.fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
