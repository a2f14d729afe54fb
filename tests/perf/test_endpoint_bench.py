"""The endpoint benchmark's quick mode runs end to end against the real service: the queue held full
and overloaded both refuse, every figure is in the JSON and the markdown is written. The speed targets
are not asserted here (machine noise): the report and the README give them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow

RUN_FIGURES = {
    "requests",
    "outcomes",
    "wall_s",
    "refusals",
    "refusals_per_s",
    "refusal_ms_from_send",
    "service_cpu_s",
    "service_us_per_refusal",
    "core_fraction_at_1000_per_s",
    "client_cpu_s",
    "client_us_per_request",
    "server_counted",
}


def test_quick_mode_reports_every_figure(tmp_path: Path, encoder_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "perf.endpoint_bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=420,
        capture_output=True,
    )
    report = json.loads((tmp_path / "endpoint_bench.json").read_text())
    results = report["results"]
    held, overload = results["refusals"]["held"], results["refusals"]["overload"]

    # Held full: nothing but 429s, each counted by the admission middleware before the body was read.
    for name in ("at_rate", "saturated"):
        run = held[name]
        assert set(run) >= RUN_FIGURES, name
        assert run["refusals"] > 0 and set(run["outcomes"]) == {"429"}, run["outcomes"]
        assert run["refusal_ms_from_send"]["p50"] > 0
        assert run["service_cpu_s"] > 0 and run["service_us_per_refusal"]["net"] is not None
        assert run["client_us_per_request"] > 0
    assert held["at_rate"]["server_counted"]["before_body_requests"] == held["at_rate"]["refusals"]
    assert held["fill_request"] == {"texts": 64, "status": 200, "embeddings": 64}
    assert held["healthz"]["admitted"] > 0 and held["idle"]["wall_s"] > 0

    # 3x overload: some admitted, some refused, nothing else (the client stays under uvicorn's limit).
    run = overload["run"]
    assert overload["capacity"]["admitted_per_s"] > 0 and overload["offered_per_s"] > 0
    assert run["refusals"] > 0 and run["admitted"] > 0, run["outcomes"]
    assert set(run["outcomes"]) <= {"200", "429"}, run["outcomes"]
    assert run["refusal_ms_from_send"]["p50"] > 0
    assert "service_us_per_refusal_estimate" in run["attributed"]

    client = results["client"]
    assert client["null_server"]["saturated"]["refusals"] > 0
    assert client["ceiling_over_refusals"] > 0 and client["null_over_refusals"] > 0
    assert client["null_over_open_loop_rate"] > 0 and client["highest_open_loop_rate_per_s"] > 0

    batch = results["batch"]
    assert batch["distinct_texts"] == 2048 and batch["small_concurrency"] == 64
    assert {r["kind"] for r in batch["runs"]} == {"one_of_2048", "64_of_32"}
    assert batch["one_of_2048_texts_per_s"] > 0 and batch["64_of_32_texts_per_s"] > 0 and batch["ratio"] > 0
    assert len(batch["ratio_per_round"]) == report["settings"]["plan"]["rounds"]

    names = [t["name"] for t in results["targets"]]
    assert any("429 p50" in n for n in names) and any("2,048" in n for n in names)
    assert all(t["value"] is not None for t in results["targets"]), results["targets"]
    assert set(results["services"]) == {"embedding-small-queue", "embedding-default"}
    assert all(s["ready_after_s"] > 0 and s["command"] for s in results["services"].values())
    assert report["machine"]["git_commit"] and report["command"]
    assert "## Targets" in (tmp_path / "endpoint_bench.md").read_text()
