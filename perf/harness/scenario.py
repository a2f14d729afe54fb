"""What a benchmark declares, and the one runner: a scenario names its plans (quick and full), runs its
stacks and workloads through the harness, and says its targets and tables; the runner parses the command
line, makes the results folder, and writes the report once (JSON, markdown, and a chart where it has one)."""

import argparse
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perf.harness.progress import begin, say
from perf.harness.report import REPO, Target, headroom_table, run_header, run_line, services_table, targets_table
from perf.harness.report import write_report as write
from perf.harness.stacks import Stacks

MODES = ("quick", "full")


@dataclass
class Context:
    plan: Any  # the scenario's plan dataclass, in the mode asked for
    out: Path
    args: argparse.Namespace
    stacks: Stacks
    settings: dict[str, Any] = field(default_factory=dict)  # more of what the run was asked to do, reported

    @property
    def logs(self) -> Path:
        return self.stacks.logs


@dataclass(frozen=True)
class Scenario:
    name: str  # `python -m perf <name>`, `make bench-<name>`, and the report's file names
    title: str
    plans: Mapping[str, Any]  # "quick" and "full" -> the plan (a frozen dataclass with a `rounds` field or not)
    run: Callable[[Context], dict[str, Any]]  # -> results
    targets: Callable[[dict[str, Any]], list[Target]]  # results -> targets
    tables: Callable[[dict[str, Any]], list[str]]  # the report -> its markdown below the targets
    figures: tuple[str, ...]  # dotted paths into results that every run fills (checked by the tests)
    # What a valid run must show, speed aside (every request answered as expected...): results -> problems.
    checks: Callable[[dict[str, Any]], list[str]]
    options: Callable[[argparse.ArgumentParser], None] = lambda _: None  # the scenario's own flags
    chart: Callable[[Path, dict[str, Any]], None] | None = None  # writes <out>/<name>.png from the report


def _parse(scenario: Scenario, doc: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m perf {scenario.name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the quick plan: short runs, one round")
    parser.add_argument("--rounds", type=int, help="rounds, where the plan has them")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    scenario.options(parser)
    return parser.parse_args(argv)


def markdown(scenario: Scenario, report: dict[str, Any]) -> str:
    results = report["results"]
    mode = report["settings"]["plan"].get("mode", "")
    lines = [
        f"# {scenario.title} ({mode} mode)",
        "",
        run_line(report),
        "",
        "## Targets",
        "",
        *targets_table(results["targets"]),
        "",
        *(f"**Problem:** {problem}\n" for problem in results["problems"]),
        *scenario.tables(report),
    ]
    if results.get("headroom"):
        lines += ["", "## The load client's headroom", "", *headroom_table(results["headroom"])]
    if results.get("services"):
        lines += ["", "## Services", "", *services_table(results["services"])]
    return "\n".join(lines) + "\n"


def run(scenario: Scenario, doc: str, argv: list[str]) -> Path:
    """Runs `scenario` as the command line `argv` asks; returns the results folder."""
    args = _parse(scenario, doc, argv)
    plan = scenario.plans["quick" if args.quick else "full"]
    if args.rounds and hasattr(plan, "rounds"):
        plan = replace(plan, rounds=args.rounds)
    begun = datetime.now(UTC)
    out: Path = args.out or REPO / "perf" / "results" / begun.strftime("%Y%m%d-%H%M%S")
    begin(scenario.name)
    context = Context(plan, out, args, Stacks(out / "logs"))
    results = scenario.run(context)
    if context.stacks.records:
        results["services"] = context.stacks.records
    report: dict[str, Any] = {
        **run_header(" ".join(["python -m perf", scenario.name, *argv]), begun),
        "scenario": scenario.name,
        "settings": {"plan": asdict(plan), **context.settings},
        "results": results,
    }
    results["targets"] = [asdict(t) for t in scenario.targets(results)]
    results["problems"] = scenario.checks(results)
    for problem in results["problems"]:
        say(f"PROBLEM: {problem}")
    write(out, scenario.name, report, markdown(scenario, report))
    if scenario.chart is not None:
        scenario.chart(out / f"{scenario.name}.png", report)
    say(f"wrote {out}/{scenario.name}.json and .md")
    return out
