"""The benchmark suite's quick mode runs end to end against the real services: every scheme measured
closed- and open-loop with no errors, the ceiling and every target reported, and the three files written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow

SCHEMES = {"1", "2", "3", "4"}


def test_quick_mode_measures_every_scheme_without_errors(
    tmp_path: Path, default_head: Path, xla_cache_dir: Path
) -> None:
    # The session's XLA cache, which the embedding service's tests have filled: no shape compiles twice.
    env = {**os.environ, "EMBEDDING_XLA_CACHE_DIR": str(xla_cache_dir)}
    subprocess.run(
        [sys.executable, "-m", "perf", "--quick", "--texts", "mixed", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=420,
        capture_output=True,
        env=env,
    )
    report = json.loads((tmp_path / "bench.json").read_text())
    results = report["results"]
    runs = results["runs"]
    for scheme in SCHEMES:
        mine = [r for r in runs if r["system"] == scheme]
        assert {r["mode"] for r in mine} == {"closed", "open"}, scheme
        assert all(r["measurement"]["errors"] == 0 and r["measurement"]["throughput_per_s"] > 0 for r in mine), mine
    assert {r["system"] for r in runs} == SCHEMES | {"in-process", "embedding", "healthz", "head gRPC"}
    assert all(r["measurement"]["errors"] == 0 for r in runs)
    assert results["open_loop_rates"] and all(rate > 0 for rate in results["open_loop_rates"])
    assert results["ceiling"]["flops"]["unpadded"]["bound_texts_per_s"] > 0
    assert {t["name"].split(" ")[0] for t in results["targets"]} >= {"scheme", "embedding", "head", "load"}
    assert report["machine"]["git_commit"] and "cpu_flags" in report["machine"]
    assert report["settings"]["texts"] == "mixed"  # a quarter of the texts about 130 tokens long
    assert set(results["services"]) == {"embedding", "head", "whole", "orchestrator", "monolith"}
    assert all(s["command"] and s["idle_rss_mb"] > 0 for s in results["services"].values())
    markdown = (tmp_path / "bench.md").read_text()
    assert "## Targets" in markdown and "## Open loop" in markdown
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
