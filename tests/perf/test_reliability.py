"""The reliability drill's quick mode: load held, overload refused fast, faults survived, models swapped,
nothing lost. The shorter variant of `make reliability`; every phase must pass."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

PHASES = [
    "soak",
    "overload",
    "faults",
    "SIGTERM head",
    "SIGTERM embedding",
    "SIGTERM orchestrator",
    "head swap",
    "encoder swap",
]


@pytest.mark.slow
def test_the_quick_drill_passes_every_phase_and_loses_nothing(
    tmp_path: Path, encoder_dir: Path, default_head: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "perf.reliability", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "reliability.json").read_text())
    phases = {phase["name"]: phase for phase in report["phases"]}
    assert list(phases) == PHASES
    # In quick mode the soak's fifths are 2.4 s long: their p99s are noise on 2 shared cores, so that one
    # check is judged by the full drill only. Every other check of every phase must hold.
    noisy = "p99 of the last fifth within 20% of the first's"
    failed = {
        name: {check: met for check, met in phase["checks"].items() if not met and check != noisy}
        for name, phase in phases.items()
    }
    assert {name: checks for name, checks in failed.items() if checks} == {}, (tmp_path / "reliability.md").read_text()
    assert sum(phase["lost"] for phase in phases.values()) == 0
    assert phases["overload"]["details"]["refused"] > 0  # it really was overloaded
    assert set(phases["faults"]["summary"]["outcomes"]) - {"200"}  # and the faults really failed requests
