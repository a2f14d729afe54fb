"""The backends benchmark's quick mode runs end to end against the real services: the `today` (TensorFlow,
XLA, arrival order) and `openvino` stacks answer every workload, report their runtime and padding, the
texts sent are counted with the tokenizer, both backends are timed in-process beside the FLOP bound, and
every figure (rates, latencies, server CPU, time to ready, the load client's headroom) is in the JSON, with
the markdown written. The targets themselves are not asserted here (machine noise): the report gives them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedding_service.settings import EmbeddingSettings
from stack.services import ROOT

pytestmark = pytest.mark.slow

STACKS = {"today": "tensorflow", "openvino": "openvino"}  # quick mode: no openvino-1-thread, no Infinity
WORKLOADS = {"single_c1": 1, "single_c16": 1, "single_c64": 1, "batch32_c16": 32, "mixed_c64": 1}


def test_quick_mode_reports_every_figure(tmp_path: Path, encoder_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "perf.backends_bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    report = json.loads((tmp_path / "backends_bench.json").read_text())
    results = report["results"]

    assert set(results["stacks"]) == set(STACKS) and results["infinity"] is None
    for key, backend in STACKS.items():
        stack = results["stacks"][key]
        assert stack["ready_after_s"] > 0 and stack["model"], key
        assert stack["runtime"]["backend"] == backend and stack["runtime"]["ready_s"] > 0, key
        assert stack["runtime"]["group_window"] == (0 if key == "today" else EmbeddingSettings().group_window), key
        assert stack["settings"]["cache_bytes"] == "0", key
        assert set(stack["runs"]) == set(WORKLOADS), key
        for name, per_request in WORKLOADS.items():
            run = stack["runs"][name]
            assert set(run["outcomes"]) == {"200"}, (key, name, run["outcomes"])  # nothing else loads it
            assert run["requests"] == sum(run["outcomes"].values()) > 0 and run["errors"] == 0, (key, name)
            assert run["texts"] == run["outcomes"]["200"] * per_request and run["texts_per_s"] > 0, (key, name)
            assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"], (key, name)
            assert run["server_cores"] > 0 and run["server_core_ms_per_text"] > 0, (key, name)
            assert run["client_us_per_request"] > 0, (key, name)
            assert 0 < run["tokens"]["real"] <= run["tokens"]["padded"], (key, name)
            assert 0 < run["padding_efficiency"] <= 1, (key, name)

    tokens = results["tokens"]
    assert 10 < tokens["short"]["mean_tokens"] < 30 and 110 < tokens["long"]["mean_tokens"] < 150, tokens
    assert tokens["short"]["texts"] > tokens["long"]["texts"] > 0

    in_process = results["in_process"]
    assert in_process["matmul_gflops"] > 0 and in_process["texts"] == 2048
    assert set(in_process["backends"]) == set(STACKS.values())
    for backend, found in in_process["backends"].items():
        assert found["threads"] > 0 and found["load_s"] > 0, backend
        for size in ("batch_1", "batch_32", "batch_32_by_length"):
            timed = found[size]
            assert timed["texts_per_s"] > 0 and timed["calls"] > 0 and timed["shapes"] > 0, (backend, size)
            assert 0 < timed["call_ms"]["p50"] <= timed["call_ms"]["p99"], (backend, size)
            assert timed["mean_tokens"] == pytest.approx(in_process["mean_tokens"]), (backend, size)
            assert timed["padded_mean_tokens"] >= timed["mean_tokens"], (backend, size)
            assert timed["bound_texts_per_s"] >= timed["padded_bound_texts_per_s"] > 0, (backend, size)
            assert 0 < timed["fraction_of_bound"] <= timed["fraction_of_padded_bound"], (backend, size)

    null = results["headroom"]["null_server"]
    assert set(null["outcomes"]) == {"429"} and null["requests_per_s"] > 0 and null["client_us_per_request"] > 0

    names = [t["name"] for t in results["targets"]]
    for part in ("padding efficiency, openvino", "openvino / today", "in-process openvino at batch 32"):
        assert any(part in n for n in names), part
    for part in ("fraction of the FLOP bound", "openvino: time to ready", "null-server"):
        assert any(part in n for n in names), part
    assert not any("infinity" in n for n in names)
    assert all(t["value"] is not None for t in results["targets"]), results["targets"]
    assert set(results["services"]) == {"embedding-today", "embedding-openvino", "null-server"}
    assert all(s["ready_after_s"] > 0 and s["command"] for s in results["services"].values())
    assert results["services"]["embedding-today"]["env"]["EMBEDDING_MAX_BATCH_SIZE"] == "4"
    assert report["machine"]["git_commit"] and report["command"]
    markdown = (tmp_path / "backends_bench.md").read_text()
    for title in ("Targets", "Served", "In-process", "Time to ready and runtime", "Services", "Reproduce"):
        assert f"## {title}" in markdown, title
    assert "Infinity was not measured" in markdown
