"""The embedding benchmark runs end to end (tiny load) and reports every run with no errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

EXPECTED_RUNS = {
    "in-process batch 1",
    "in-process batch 32",
    "service c1",
    "service c16",
    "service c64",
    "naive c1",
    "naive c16",
    "naive c64",
    "healthz c64",
}


@pytest.mark.slow
def test_quick_benchmark_reports_every_run_without_errors(tmp_path: Path, encoder_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "perf.embedding_bench", "--requests", "64", "--duration-s", "5", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=600,
        capture_output=True,
    )
    report = json.loads((tmp_path / "embedding_bench.json").read_text())
    rows = {row["name"]: row["measurement"] for row in report["results"]["rows"]}
    assert set(rows) == EXPECTED_RUNS
    assert all(m["errors"] == 0 and m["throughput_per_s"] > 0 for m in rows.values()), rows
    assert len(report["results"]["targets"]) == 4
    assert report["results"]["flops"]["matmul_gflops"] > 0
    assert "## Targets" in (tmp_path / "embedding_bench.md").read_text()
