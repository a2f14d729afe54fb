"""Every benchmark scenario's quick plan runs end to end against the real services: the report is
written, every figure the scenario declares is filled, every target with a goal has a value, and the run
shows none of the problems its scenario checks for (requests answered as they should be, phases passed).
Speed targets are not asserted here (machine noise): the reports give them."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perf.harness.report import dig
from perf.scenarios import NAMES
from tests.servers import ROOT

pytestmark = pytest.mark.slow

# More flags for a scenario's quick run: the schemes on mixed lengths cover both text kinds.
QUICK_ARGS = {"schemes": ["--texts", "mixed"]}


def test_every_scenario_module_is_named_once() -> None:
    """NAMES (the order of `python -m perf`'s list) is the scenario modules, which `make bench-<name>` reads."""
    modules = {path.stem for path in (ROOT / "perf" / "scenarios").glob("*.py")} - {"__init__"}
    assert sorted(NAMES) == sorted(modules)


@pytest.mark.parametrize("name", NAMES)
def test_the_quick_plan_fills_every_figure(name: str, tmp_path: Path, default_head: Path, xla_cache_dir: Path) -> None:
    # The session's XLA cache, which the embedding service's tests have filled: no shape compiles twice.
    env = {**os.environ, "EMBEDDING_XLA_CACHE_DIR": str(xla_cache_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "perf", name, "--quick", "--out", str(tmp_path), *QUICK_ARGS.get(name, [])],
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / f"{name}.json").read_text())
    assert (tmp_path / f"{name}.md").read_text().startswith("# ")
    scenario = importlib.import_module(f"perf.scenarios.{name}").SCENARIO
    if scenario.chart is not None:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = report["results"]
    missing = [path for path in scenario.figures if dig(results, path) is None]
    assert missing == [], missing
    unmeasured = [t["name"] for t in results["targets"] if t["goal"] != "-" and t["value"] is None]
    assert unmeasured == [], unmeasured
    assert results["problems"] == [], results["problems"]
    assert report["machine"]["git_commit"] and report["command"].startswith(f"python -m perf {name}")
    assert all(s["ready_after_s"] > 0 and s["command"] for s in results.get("services", {}).values())
