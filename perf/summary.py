"""What the suite's runs add up to: saturation throughput, the noise between rounds, the targets, and
the markdown report. Reads the report dict, so a results JSON can be summarised again."""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from perf.loadgen import Measurement
from perf.report import Target, at_least, at_most, num, targets_table

SCHEME_ORDER = ("1", "1x", "2", "3", "4")
MEMORY_NOTE = "resident memory of the processes each system runs on, idle after start-up and after the load"


@dataclass(frozen=True)
class Run:
    system: str  # System.key
    mode: Literal["closed", "open"]
    load: float  # concurrency, or offered requests/s
    round: int
    measurement: Measurement


def runs_of(report: dict[str, Any]) -> list[Run]:
    return [Run(**{**r, "measurement": Measurement(**r["measurement"])}) for r in report["results"]["runs"]]


def schemes(runs: Sequence[Run]) -> list[str]:
    present = {r.system for r in runs}
    return [key for key in SCHEME_ORDER if key in present]


def _by_round(runs: Sequence[Run], system: str, mode: str, load: float | None = None) -> dict[int, list[Run]]:
    found: dict[int, list[Run]] = {}
    for r in runs:
        if r.system == system and r.mode == mode and (load is None or r.load == load):
            found.setdefault(r.round, []).append(r)
    return found


def saturation_per_round(runs: Sequence[Run], system: str) -> list[float]:
    """Per round, the highest closed-loop throughput over the concurrency levels: at saturation."""
    return [max(r.measurement.throughput_per_s for r in rs) for rs in _by_round(runs, system, "closed").values()]


def saturation(runs: Sequence[Run], system: str) -> float:
    return statistics.median(saturation_per_round(runs, system))


def _median_of(runs: Sequence[Run], system: str, mode: str, load: float, field: str) -> float | None:
    values = [getattr(r.measurement, field) for rs in _by_round(runs, system, mode, load).values() for r in rs]
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def noise(runs: Sequence[Run], systems: Sequence[str]) -> float | None:
    """The largest round-to-round spread of saturation throughput, (max - min) / median, over `systems`:
    how much the same scheme moves between two runs on this machine. None with one round."""
    spreads = []
    for system in systems:
        values = saturation_per_round(runs, system)
        if len(values) >= 2:
            spreads.append((max(values) - min(values)) / statistics.median(values))
    return max(spreads) if spreads else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def in_process_batch(runs: Sequence[Run]) -> float:
    """The largest batch the in-process encoder was timed at: the service's largest batch."""
    return max(r.load for r in runs if r.system == "in-process")


def _below_one(name: str, value: float | None) -> Target:
    return Target(name, value, "< 1", None if value is None else value < 1)


def targets(report: dict[str, Any]) -> list[Target]:
    runs = runs_of(report)
    results = report["results"]
    top = report["settings"]["plan"]["levels"][-1]
    batch = in_process_batch(runs)
    s1, s3, s4 = (saturation(runs, key) for key in ("1", "3", "4"))
    split_noise = noise(runs, ("3", "4"))
    split_gap = abs(s3 - s4) / statistics.mean((s3, s4))
    return [
        at_least("scheme 4 / scheme 1 throughput at saturation", _ratio(s4, s1), 2.5),
        *(
            _below_one(
                f"scheme 4 p99 / scheme 1 p99 at {rate:g} req/s offered",
                _ratio(_median_of(runs, "4", "open", rate, "p99_ms"), _median_of(runs, "1", "open", rate, "p99_ms")),
            )
            for rate in results["open_loop_rates"]
        ),
        Target(
            "gap between schemes 3 and 4 (difference / mean), throughput at saturation",
            split_gap,
            f"< noise ({num(split_noise, 3)})",
            None if split_noise is None else split_gap < split_noise,
        ),
        at_least(
            f"embedding service c{top} / in-process batch throughput",
            _ratio(
                _median_of(runs, "embedding", "closed", top, "throughput_per_s"),
                _median_of(runs, "in-process", "closed", batch, "throughput_per_s"),
            ),
            0.85,
        ),
        at_most(
            "embedding service c1 p50 - in-process batch 1 p50 (ms)",
            _difference(
                _median_of(runs, "embedding", "closed", 1, "p50_ms"),
                _median_of(runs, "in-process", "closed", 1, "p50_ms"),
            ),
            2.0,
        ),
        at_most(
            "scheme 4 c1 p50 - embedding service c1 p50 (ms)",
            _difference(
                _median_of(runs, "4", "closed", 1, "p50_ms"), _median_of(runs, "embedding", "closed", 1, "p50_ms")
            ),
            3.0,
        ),
        at_least(
            f"scheme 4 c{top} / embedding service c{top} throughput",
            _ratio(
                _median_of(runs, "4", "closed", top, "throughput_per_s"),
                _median_of(runs, "embedding", "closed", top, "throughput_per_s"),
            ),
            0.9,
        ),
        at_most("head gRPC Predict c1 p50 (ms)", _median_of(runs, "head gRPC", "closed", 1, "p50_ms"), 2.0),
        Target(
            f"load client: /healthz c{top} / fastest scheme's saturation (its headroom)",
            _ratio(
                _median_of(runs, "healthz", "closed", top, "throughput_per_s"),
                max(saturation(runs, key) for key in schemes(runs)),
            ),
            "several x",
            None,
        ),
    ]


def _measure_cells(m: Measurement) -> str:
    return (
        f"{m.throughput_per_s:.1f} | {num(m.p50_ms)} | {num(m.p90_ms)} | {num(m.p99_ms)} | {num(m.max_ms)} | "
        f"{m.errors} |"
    )


def _schemes_table(report: dict[str, Any], runs: Sequence[Run]) -> list[str]:
    results = report["results"]
    bound = results["ceiling"]["flops"]["unpadded"]["bound_texts_per_s"]
    lines = [
        "| scheme | what | texts/s at saturation | of the FLOP bound | c1 p50 ms | c1 p99 ms | memory MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key in schemes(runs):
        system = results["systems"][key]
        memory = sum(results["services"][name]["loaded_rss_mb"] for name in system["uses"])
        lines.append(
            f"| {key} | {system['title']} | {saturation(runs, key):.1f} | {saturation(runs, key) / bound:.3f} | "
            f"{num(_median_of(runs, key, 'closed', 1, 'p50_ms'))} | {num(_median_of(runs, key, 'closed', 1, 'p99_ms'))}"
            f" | {memory:.0f} |"
        )
    return lines


def _ceiling_lines(ceiling: dict[str, Any], runs: Sequence[Run]) -> list[str]:
    flops = ceiling["flops"]
    batch = in_process_batch(runs)
    lines = [
        f"In-process encoder on {ceiling['device']} (medians over rounds): batch 1 p50 "
        f"{num(_median_of(runs, 'in-process', 'closed', 1, 'p50_ms'))} ms per call; batch {batch:g}: "
        f"{num(_median_of(runs, 'in-process', 'closed', batch, 'throughput_per_s'), 0)} texts/s.",
        "",
        f"FLOP bound: the best fp32 matmul rate of the rounds ({flops['matmul_gflops']:.0f} GFLOP/s; per round: "
        f"{', '.join(f'{g:.0f}' for g in ceiling['matmul_gflops_per_round'])}) over the encoder's matmul FLOPs per "
        f"text ({flops['model']['layers']} layers, hidden {flops['model']['hidden']}).",
        "",
        "| token length | mean tokens | GFLOP/text | bound texts/s |",
        "|---|---:|---:|---:|",
    ]
    for kind, row in flops.items():
        if isinstance(row, dict) and "bound_texts_per_s" in row:
            lines.append(
                f"| {kind} | {row['mean_tokens']:.1f} | {row['gflop_per_text']:.4f} | {row['bound_texts_per_s']:.0f} |"
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    runs = runs_of(report)
    machine, plan = report["machine"], report["settings"]["plan"]
    dirty = " (with uncommitted changes)" if machine["git_dirty"] else ""
    closed = sorted((r for r in runs if r.mode == "closed"), key=lambda r: (r.system, r.load, r.round))
    opened = sorted((r for r in runs if r.mode == "open"), key=lambda r: (r.system, r.load, r.round))
    lines = [
        f"# Benchmark suite, {report['started_utc']} ({plan['mode']} mode, {report['settings']['texts']} texts)",
        "",
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, GPU: {machine['gpus'] or 'none'}, "
        f"TensorFlow {machine['tensorflow']}, commit {machine['git_commit'][:12]}{dirty}. "
        f"{plan['rounds']} alternating round(s); closed-loop runs up to {plan['run_requests']} requests or "
        f"{plan['run_s']:g}s; open-loop runs {plan['open_s']:g}s. One text per request, on loopback.",
        "",
        "## Schemes (medians over rounds)",
        "",
        *_schemes_table(report, runs),
        "",
        f"Memory: {MEMORY_NOTE}.",
        "",
        "![latency and throughput per scheme](bench.png)",
        "",
        "## Targets",
        "",
        *targets_table(targets(report)),
        "",
        "## Closed loop: concurrency sweep",
        "",
        "| system | concurrency | round | throughput /s | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r.system} | {r.load:g} | {r.round} | {_measure_cells(r.measurement)}" for r in closed),
        "",
        "`in-process`: the load is the batch size, throughput is texts/s and latency is per encoder call.",
        "",
        "## Open loop: fixed offered rates (latency from each request's due time)",
        "",
        "| scheme | offered /s | round | answered /s | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r.system} | {r.load:g} | {r.round} | {_measure_cells(r.measurement)}" for r in opened),
        "",
        "## Ceiling",
        "",
        *_ceiling_lines(report["results"]["ceiling"], runs),
    ]
    return "\n".join(lines) + "\n"
