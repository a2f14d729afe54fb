"""The lanes benchmark's quick mode runs end to end against the real services: both pipelines (lanes on,
lanes off) answer the interactive caller, /classify and the bulk flood, the repeats run on both embedding
services, and every figure (latencies, bulk rates, cache counts, the load client's headroom) is in the
JSON, with the markdown written. The targets themselves are not asserted here (machine noise): the report
gives them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stack.services import ROOT

pytestmark = pytest.mark.slow

STACKS = ("a", "b")
CALLERS = ("interactive", "classify")
SERVICES = {f"{name}-{key}" for name in ("embedding", "head", "orchestrator") for key in STACKS} | {"null-server"}


def test_quick_mode_reports_every_figure(tmp_path: Path, encoder_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "perf.lanes_bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=420,
        capture_output=True,
    )
    report = json.loads((tmp_path / "lanes_bench.json").read_text())
    results, plan = report["results"], report["settings"]["plan"]

    for key in STACKS:
        stack = results["stacks"][key]
        for phase in ("alone", "flood"):
            for caller in CALLERS:
                run = stack[phase][caller]
                assert run["requests"] > 0 and run["per_s"] > 0, (key, phase, caller)
                assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"], (key, phase, caller)
        for caller in CALLERS:  # nothing else loads the services alone: every answer a 200
            assert set(stack["alone"][caller]["outcomes"]) == {"200"}, (key, caller)
        assert "bulk" not in stack["alone"] and set(stack["bulk_alone"]) >= {"bulk", "lanes"}
        for phase in ("flood", "bulk_alone"):
            bulk = stack[phase]["bulk"]
            assert bulk["texts"] > 0 and bulk["texts"] % 256 == 0 and bulk["texts_per_s"] > 0, (key, phase)
            assert bulk["requests"] == sum(bulk["outcomes"].values()) and bulk["wall_s"] > 0
        summary = stack["summary"]
        for caller in CALLERS:
            assert summary[caller]["p99_ratio"] > 0 and summary[caller]["errors"] >= 0
        assert summary["bulk"]["ratio"] > 0 and summary["bulk"]["refusals"] >= 0 and summary["bulk"]["errors"] >= 0
        assert summary["cache_hits"] == 0, key  # every text of the noisy neighbour is new
    # The service counts the lanes itself: on A each caller's texts in its own lane, on B all in one.
    lanes = results["stacks"]["a"]["flood"]["lanes"]
    assert all(lanes[lane]["texts"] > 0 for lane in ("web", "orchestrator", "bulk-job")), lanes
    lanes = results["stacks"]["b"]["flood"]["lanes"]
    assert lanes["anonymous"]["texts"] > 0 and lanes["web"]["texts"] == lanes["bulk-job"]["texts"] == 0, lanes

    repeats = results["repeats"]
    assert repeats["workload"]["sent"] == plan["repeats"] + 64
    assert 0 < repeats["workload"]["ideal_hit_rate"] < 1
    for key in STACKS:
        run = repeats[key]
        assert run["requests"] == plan["repeats"] and run["errors"] == 0, (key, run["outcomes"])
        assert run["throughput_per_s"] > 0 and 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
    cache_on, cache_off = repeats["a"]["cache"], repeats["b"]["cache"]
    assert cache_on["hits"] > 0 and cache_on["misses"] > 0 and 0 < repeats["a"]["hit_rate"] < 1
    assert cache_on["hits"] + cache_on["misses"] <= repeats["workload"]["sent"]
    assert cache_off["hits"] == 0 and cache_off["bytes"] == 0
    assert repeats["throughput_ratio"] > 0

    headroom = results["headroom"]
    assert set(headroom["null_server"]["outcomes"]) == {"429"} and headroom["null_server"]["requests_per_s"] > 0
    assert set(headroom["healthz"]["outcomes"]) == {"200"} and headroom["healthz"]["requests_per_s"] > 0

    names = [t["name"] for t in results["targets"]]
    assert any("interactive p99" in n for n in names) and any("/classify p99" in n for n in names)
    assert any("bulk texts/s" in n for n in names) and any("cache on / cache off" in n for n in names)
    assert any("null-server" in n for n in names)
    assert all(t["value"] is not None for t in results["targets"]), results["targets"]
    assert set(results["services"]) == SERVICES
    assert all(s["ready_after_s"] > 0 and s["command"] for s in results["services"].values())
    assert report["machine"]["git_commit"] and report["command"]
    markdown = (tmp_path / "lanes_bench.md").read_text()
    assert all(f"## {title}" in markdown for title in ("Targets", "Noisy neighbour", "Repeats", "Services"))
