"""The lanes benchmark's quick mode runs end to end against the real services: both pipelines (lanes on,
lanes off) answer the interactive caller, /classify and the bulk flood, the repeats run on both embedding
services, the two keyed lanes of the weighted share both run on a service of their own, and every figure
(latencies, bulk rates, cache counts, the load client's headroom, the weighted share) is in the JSON, with
the markdown written. The targets themselves are not asserted here (machine noise): the report gives them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stack.services import ROOT

pytestmark = pytest.mark.slow

STACKS = ("a", "b")
CALLERS = ("interactive", "classify")
SERVICES = {f"{name}-{key}" for name in ("embedding", "head", "orchestrator") for key in STACKS} | {
    "null-server",
    "embedding-w",  # the weighted share's: an embedding service alone
}


def test_plans_keep_the_weighted_share_short_and_after_a_warm_up() -> None:
    from perf.lanes_bench import FULL, QUICK

    assert QUICK.share_warm_s > 0 and QUICK.share_warm_s + QUICK.share_s <= 30
    assert FULL.share_warm_s >= QUICK.share_warm_s and FULL.share_s >= QUICK.share_s


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
    # The service counts the lanes itself: on A /classify's texts in the orchestrator's lane (its key) and the
    # keyless callers' (whatever their `user`) in the anonymous lane; on B everything in the one FIFO queue.
    lanes = results["stacks"]["a"]["flood"]["lanes"]
    assert set(lanes) == {"orchestrator", "anonymous"} and all(f["texts"] > 0 for f in lanes.values()), lanes
    lanes = results["stacks"]["b"]["flood"]["lanes"]
    assert lanes["anonymous"]["texts"] > 0 and lanes["orchestrator"]["texts"] == 0, lanes

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

    shares = results["shares"]  # both lanes ran in the window, all their texts new, every request answered
    assert set(shares["lanes"]) == {"fast", "bulk"} and shares["cache_hits"] == 0 and shares["wall_s"] > 0
    for lane, figures in shares["lanes"].items():
        assert figures["texts"] > 0 and figures["tokens"] > figures["texts"], (lane, figures)
        assert set(figures["run"]["outcomes"]) == {"200"}, (lane, figures["run"])
    fast, bulk = shares["lanes"]["fast"], shares["lanes"]["bulk"]
    assert bulk["tokens_per_text"] > 4 * fast["tokens_per_text"]  # short against ~120-token texts
    assert shares["fast_share"] == pytest.approx(fast["tokens"] / (fast["tokens"] + bulk["tokens"]))

    names = [t["name"] for t in results["targets"]]
    share = next(t for t in results["targets"] if t["name"].startswith("weighted share"))
    assert share["value"] == shares["fast_share"] and share["goal"] == "0.8 ± 0.05"
    assert any("interactive p99" in n for n in names) and any("/classify p99" in n for n in names)
    assert any("bulk texts/s" in n for n in names) and any("cache on / cache off" in n for n in names)
    assert any("null-server" in n for n in names)
    assert all(t["value"] is not None for t in results["targets"]), results["targets"]
    assert set(results["services"]) == SERVICES
    assert all(s["ready_after_s"] > 0 and s["command"] for s in results["services"].values())
    assert report["machine"]["git_commit"] and report["command"]
    markdown = (tmp_path / "lanes_bench.md").read_text()
    titles = ("Targets", "Noisy neighbour", "Repeats", "Weighted share", "Services")
    assert all(f"## {title}" in markdown for title in titles)
    # The run's API keys are not in the report.
    assert results["services"]["embedding-w"]["env"]["EMBEDDING_API_KEYS"] == "(hidden)"
