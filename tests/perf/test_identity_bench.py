"""The identity bench's quick mode runs end to end against the real services: both orchestrators (checked,
and unchecked through perf.unchecked_orchestrator) answer every /classify in alternating rounds, the
check's calls are timed in process, and every figure is in the JSON, with the markdown written. The target
itself is not asserted here (machine noise): the report gives it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stack.services import ROOT

pytestmark = pytest.mark.slow


def test_quick_mode_reports_every_figure(tmp_path: Path, encoder_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "perf.identity_bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    report = json.loads((tmp_path / "identity_bench.json").read_text())
    runs, found = report["runs"], report["figures"]
    assert [r["variant"] for r in runs] == ["checked", "unchecked", "unchecked", "checked"]  # alternating first
    assert all(r["outcomes"] == {"200": r["requests"]} and r["requests"] > 0 for r in runs)
    assert len(found["ratio_per_round"]) == 2 and found["ratio_median"] > 0
    for key in ("checked", "unchecked"):
        assert found[key]["errors"] == 0 and found[key]["throughput_per_s"] > 0
    timed = report["in_process"]
    assert set(timed["calls_us"]) == {"read_identity", "served_encoders", "route", "version_for"}
    assert all(us > 0 for us in timed["calls_us"].values()) and 0 < timed["cost"] < 1
    assert report["headroom"]["null_server"] > 0 and report["headroom"]["orchestrator_healthz"] > 0
    assert "cost" in (tmp_path / "identity_bench.md").read_text()
