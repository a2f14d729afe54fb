"""The tracing benchmark's quick mode runs end to end against the real services: both pipelines (tracing
off, tracing on with 10% sampling) answer every /classify, the ON stack's spans reach the sink and the
OFF stack makes none, the off path's calls are timed, and every figure (throughput, latency, CPU per
request, the off path's share, the load client's headroom) is in the JSON, with the markdown written. The
targets themselves are not asserted here (machine noise): the report gives them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stack.services import ROOT

pytestmark = pytest.mark.slow

VARIANTS = ("off", "on")
ENGINES = ("orchestrator", "head", "embedding")
SERVICES = {f"{name}-{key}" for name in ("embedding", "head", "orchestrator") for key in VARIANTS}
CALLS = {"span", "hop_span", "infer_span", "served", "enabled", "current", "inject", "traceresponse", "ids"}


def test_quick_mode_reports_every_figure(tmp_path: Path, encoder_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "perf.tracing_bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=420,
        capture_output=True,
    )
    report = json.loads((tmp_path / "tracing_bench.json").read_text())
    results, plan = report["results"], report["settings"]["plan"]

    assert results["checks"]["off"] == {"status": 200, "traceresponse": None}
    assert results["checks"]["on"]["traceresponse"].startswith("00-")
    assert len(results["runs"]) == 2 * plan["rounds"]
    assert [r["variant"] for r in results["runs"][:4]] == ["off", "on", "on", "off"]  # alternating first
    for key in VARIANTS:
        variant = results["variants"][key]
        assert variant["runs"] == plan["rounds"] and variant["requests"] > 0, key
        assert variant["errors"] == 0 and variant["cache_hits"] == 0, key  # every text is new
        assert variant["throughput_per_s"] > 0 and len(variant["throughput_per_s_per_round"]) == plan["rounds"]
        assert 0 < variant["p50_ms"] <= variant["p99_ms"], key
        assert len(variant["p50_ms_per_round"]) == len(variant["p99_ms_per_round"]) == plan["rounds"]
        cpu = variant["core_ms_per_request"]
        assert all(cpu[name] > 0 for name in ENGINES), (key, cpu)
        assert cpu["three_services"] == pytest.approx(sum(cpu[name] for name in ENGINES))
    assert results["variants"]["off"]["env"] == {}
    assert results["variants"]["on"]["env"]["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    assert results["throughput_ratio"] > 0 and len(results["throughput_ratio_per_round"]) == plan["rounds"]

    sink = results["sink"]
    assert sink["export_requests"] > 0 and sink["undecoded"] == 0 and sink["spans"] > 0 and sink["traces"] > 0
    assert sink["spans_by_name"].get("orchestrator: classify", 0) > 0
    assert 0 < results["sampled_share"] < 0.5  # 10% sampled, give or take
    assert results["on_requests_sent"] > results["variants"]["on"]["requests"]

    path = results["off_path"]
    assert set(path["calls"]) >= CALLS
    assert all(c["ns_per_call"] >= 0 and sum(c["per_classify"].values()) > 0 for c in path["calls"].values())
    assert path["calls"]["span"]["ns_per_call"] > 0 and path["us_per_classify"] > 0
    assert path["us_per_classify"] == pytest.approx(sum(path["us_by_service"].values()))
    assert 0 < results["off_path_share"] < 1

    headroom = results["headroom"]
    assert set(headroom["null_server"]["outcomes"]) == {"429"} and headroom["null_server"]["requests_per_s"] > 0
    assert set(headroom["healthz"]["outcomes"]) == {"200"} and headroom["healthz"]["requests_per_s"] > 0

    names = [t["name"] for t in results["targets"]]
    assert any("ON/OFF" in n for n in names) and any("off path" in n for n in names)
    assert any("sink" in n for n in names) and any("null-server" in n for n in names)
    assert all(t["value"] is not None for t in results["targets"]), results["targets"]
    assert set(results["services"]) == SERVICES | {"null-server", "otlp-sink"}
    assert all(s["ready_after_s"] > 0 and s["command"] for s in results["services"].values())
    assert report["machine"]["git_commit"] and report["command"]
    markdown = (tmp_path / "tracing_bench.md").read_text()
    assert all(f"## {title}" in markdown for title in ("Targets", "On against off", "The sink", "The off path"))
