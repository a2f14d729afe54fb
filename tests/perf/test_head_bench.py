"""The head benchmark runs end to end (tiny load) and reports every run with no errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT


@pytest.mark.slow
def test_quick_head_benchmark_reports_every_run_without_errors(tmp_path: Path, default_head: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "perf.head_bench", "--requests", "100", "--duration-s", "5", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    report = json.loads((tmp_path / "head_bench.json").read_text())
    rows = {row["name"]: row["measurement"] for row in report["results"]["rows"]}
    assert set(rows) == {
        "in-process model call",
        "gRPC GetModelStatus c1",
        "gRPC Predict c1",
        "gRPC Predict c16",
        "REST predict c1",
        "REST predict c16",
    }
    assert all(m["errors"] == 0 and m["completed"] > 0 for m in rows.values()), rows
