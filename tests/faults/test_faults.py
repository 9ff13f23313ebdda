"""The fault suite: the demo line under steady mixed load, every process killed in turn at random
moments, some frozen past the heartbeat timeout; after each fault the process must be back and
serving, and at the end no call may have hung and no acknowledged reading be lost or duplicated.

    make test                                   # the short run: each process killed once
    LINEBUS_FAULTS=long .venv/bin/python -m pytest tests/faults -s     # 3 rounds (LINEBUS_FAULTS_ROUNDS)
    LINEBUS_FAULTS_SEED=1234 ...                # replay a run's order and moments
    LINEBUS_FAULTS_LINE=plain ...               # the plain demo line instead of the secured one

The load and the line are bench/mixedload.py and bench/demoline.py (the soak uses them too). The
seed is printed first, the table (faults, calls, failures by code, recovery per process p50/max,
readings acknowledged/stored/forwarded/lost/duplicated) last; ``-s`` shows both, a failure
shows them in its captured output.

The line is configs/demo-secure.toml (CURVE on every socket, the load calling as the line's
operator, keys of its own) in both passes of ``make test``: it runs the same processes as
demo.toml with the secured sockets on top, so one short run covers both, and the file is in
SAME_IN_BOTH_PASSES (tests/conftest.py). ``LINEBUS_FAULTS_LINE=plain`` runs demo.toml.

The soak (bench/soak.py) is run here too, briefly: in the same file so that, with pytest-xdist's
``--dist loadfile``, the two demo lines under load run one after the other on one worker rather
than side by side on the 2 cores every other test shares.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.demoline import DemoLine
from bench.mixedload import MixedLoad
from tests.conftest import FACTOR, ROOT, scaled, wait_until
from tests.faults.faultrun import FORWARD_BOUND_S, FaultRun, plan, table

pytestmark = pytest.mark.integration

#: ``short`` (each process killed once, one actor frozen: make test) or ``long``.
MODE = os.environ.get("LINEBUS_FAULTS", "short").strip() or "short"
#: ``secure`` (configs/demo-secure.toml) or ``plain`` (configs/demo.toml).
LINE = os.environ.get("LINEBUS_FAULTS_LINE", "secure").strip() or "secure"
ROUNDS = int(os.environ.get("LINEBUS_FAULTS_ROUNDS", "3")) if MODE == "long" else 1


@pytest.mark.timeout(300 if MODE == "short" else 7200)
def test_fault_run(tmp_path: Path) -> None:
    assert MODE in ("short", "long"), f"LINEBUS_FAULTS must be short or long, not {MODE!r}"
    assert LINE in ("secure", "plain"), f"LINEBUS_FAULTS_LINE must be secure or plain, not {LINE!r}"
    seed = int(os.environ.get("LINEBUS_FAULTS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"fault run: {MODE}, {LINE} line, seed {seed} (LINEBUS_FAULTS_SEED={seed} replays it)")
    rng = random.Random(seed)
    line = DemoLine(tmp_path, secure=LINE == "secure", timeout_factor=FACTOR)
    load = MixedLoad(line, run_id=f"s{seed}")
    run = FaultRun(line, load, rng, max_pause_s=0.5 if MODE == "short" else 2.0)
    try:
        line.start()
        load.start()
        wait_until(lambda: len(load.ledger.acked) > 0, 30 * FACTOR, "a first acknowledged reading")
        faults = plan(line.names, [a.name for a in line.config.actors], ROUNDS, rng)
        for fault in faults:
            run.inject(fault)
        # Every process is back; the load still gets through (calls succeed after the faults).
        mark = len(load.ledger.snapshot())
        wait_until(
            lambda: any(r.code == "ok" for r in load.ledger.snapshot()[mark:]),
            30 * FACTOR,
            "a successful call after the last fault",
        )
        still_running = load.stop()
        forwarded = run.check_forwarded(FORWARD_BOUND_S * FACTOR, "at the end")
        with line.client(timeout=10) as client:
            stored = line.stored(client)
        report = table(run, stored, forwarded, seed)
        print(report)
    finally:
        load.stop()
        line.stop()

    ledger = load.ledger
    assert not still_running, f"callers that never returned (hung calls): {still_running}"
    assert not ledger.hangs(), f"calls that outlived their deadline: {ledger.hangs()[:5]}"
    assert ledger.events > 0, "no event reached the subscriber"
    acked = ledger.acked
    assert len(acked) == len(set(acked))
    lost = [i for i in acked if stored.get(i, 0) != 1 or forwarded.get(i, 0) != 1]
    assert not lost, f"acknowledged readings not stored and forwarded exactly once: {lost[:10]}"
    twice = [
        i for i in set(stored) | set(forwarded) if stored.get(i, 0) > 1 or forwarded.get(i, 0) > 1
    ]
    assert not twice, f"readings stored or forwarded more than once: {twice[:10]}"
    assert sum(run.faults.values()) == len(faults)


#: The brief soak: what the test checks is that it samples every process and the calls all along
#: and judges each series by its rule (tests/unit/test_soak_rule.py tests the rule on made-up
#: series); whether the line drifts is for the long runs (docs/BENCHMARKS.md).
DURATION_S = 15
METRICS = ("rss_kib", "fds", "threads")


def test_short_soak_samples_everything_and_judges_it(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "bench.soak", "--duration", str(DURATION_S)),
            *("--interval", "1", "--folder", str(tmp_path / "line"), "--json", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(180),
    )
    print(result.stdout, result.stderr)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    found = json.loads(out.read_text())
    (tmp_path / "names").mkdir()
    names = ["supervisor", *DemoLine(tmp_path / "names").names]  # (writes a config, starts nothing)
    points = {(s["name"], s["metric"]): len(s["points"]) for s in found["series"]}
    for name in names:
        for metric in METRICS:
            # A sample a second; the first may come before every process answers /proc.
            assert points.get((name, metric), 0) >= DURATION_S - 3, (name, metric, points)
    assert len(found["windows"]) >= DURATION_S - 3
    judged = {(v["name"], v["metric"]) for v in found["verdicts"]}
    assert judged == set(points), set(points) - judged
    # Exit status and verdicts agree: 1 exactly when a problem is named (and printed).
    assert (result.returncode == 1) == bool(found["problems"])
    for problem in found["problems"]:
        assert f"FAIL: {problem}" in result.stderr
    if result.returncode == 0:
        assert "soak passed" in result.stdout
