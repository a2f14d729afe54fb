"""The several-heads benchmark's quick mode runs end to end against the real services: every variant
answers with every head it asks, and every figure (latency, throughput, CPU per request, the profile, the
load client's headroom) is in the JSON, with the markdown written. The targets themselves are not
asserted here (machine noise): the report gives them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow

VARIANTS = {"a": ["sentiment"], "b": ["sentiment", "topic"], "c": ["sentiment", "topic", "sentiment2"]}
ENGINES = {"orchestrator", "head", "embedding", "client", "orchestrator_plus_head"}


def test_quick_mode_reports_every_figure(tmp_path: Path, encoder_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "perf.heads_bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=420,
        capture_output=True,
    )
    report = json.loads((tmp_path / "heads_bench.json").read_text())
    results = report["results"]

    assert {key: list(check["labels"]) for key, check in results["checks"].items()} == VARIANTS
    assert {head["name"] for head in results["heads_listed"]} >= set(VARIANTS["c"])
    rounds = report["settings"]["plan"]["rounds"]
    assert len(results["runs"]) == rounds * len(VARIANTS) * 2  # c1 and c64, every variant, every round

    for key, heads in VARIANTS.items():
        variant = results["variants"][key]
        assert variant["heads"] == heads
        for level in ("c1", "c64"):
            figures = variant[level]
            assert figures["errors"] == 0 and figures["requests"] > 0, (key, level)
            assert figures["throughput_per_s"] > 0 and len(figures["throughput_per_round"]) == rounds
            assert 0 < figures["latency_ms"]["p50"] <= figures["latency_ms"]["p99"]
            cpu = figures["cpu"]
            assert set(cpu["core_ms_per_request"]) == ENGINES and set(cpu["net_of_idle"]) >= ENGINES - {"client"}
            assert cpu["core_ms_per_request"]["orchestrator"] > 0 and cpu["core_ms_per_request"]["head"] > 0
            assert set(cpu["by_thread"]) == {"orchestrator", "head"} and cpu["by_thread"]["orchestrator"]
            assert cpu["hop_calls"]["embedding_calls"] > 0 and cpu["hop_calls"]["requests_per_embedding_call"] >= 1
        # One Predict per head asked, per embedding call (a few more: the readiness checks' label reads).
        assert variant["c64"]["cpu"]["hop_calls"]["head_calls_per_embedding_call"] >= len(heads) * 0.9

    for other in ("b", "c"):
        compared = results["comparisons"][f"{other}_over_a"]
        assert compared["c64_throughput_ratio"] > 0 and len(compared["c64_throughput_ratio_per_round"]) == rounds
        assert isinstance(compared["c1_p50_delta_ms"], float) and len(compared["c1_p50_delta_ms_per_round"]) == rounds

    for clock, profile in results["profile"].items():
        assert "skipped" not in profile, (clock, profile.get("skipped"))
        assert len(profile["top_cumulative"]) == len(profile["top_own"]) == 15
        assert profile["run"]["profiled_requests"] > 0 and profile["us_per_request"] > 0
        assert abs(sum(area["share"] for area in profile["by_area"]) - 1) < 1e-6
        assert Path(profile["profile_file"]).is_file()
    assert set(results["profile"]) == {"cpu", "wall"}

    headroom = results["headroom"]
    assert headroom["null_server"]["requests_per_s"] > 0 and headroom["healthz"]["requests_per_s"] > 0
    assert set(headroom["healthz"]["outcomes"]) == {"200"}

    names = [t["name"] for t in results["targets"]]
    assert any("(b)/(a)" in n for n in names) and any("(b)-(a)" in n for n in names)
    assert any("orchestrator + head core-ms" in n for n in names) and any("null-server" in n for n in names)
    assert all(t["value"] is not None for t in results["targets"]), results["targets"]
    assert set(results["services"]) == {"embedding", "head", "orchestrator"}
    assert all(s["ready_after_s"] > 0 and s["command"] for s in results["services"].values())
    assert "sentiment2" in results["heads_config"]
    assert report["machine"]["git_commit"] and report["command"]
    markdown = (tmp_path / "heads_bench.md").read_text()
    assert "## Targets" in markdown and "## Profile of the orchestrator" in markdown
