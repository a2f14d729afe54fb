"""What every benchmark writes: targets met or not, the machine it ran on, and the markdown tables."""

import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from perf.flops import MATMUL_SIZE
from perf.loadgen import Measurement

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("tensorflow", "transformers", "tokenizers", "numpy", "fastapi", "uvicorn", "orjson", "pydantic")


@dataclass(frozen=True)
class Row:
    name: str
    measurement: Measurement


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    goal: str
    met: bool | None  # None: informational, or not measurable


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _at_least(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f">= {goal}", None if value is None else value >= goal)


def at_most(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f"<= {goal}", None if value is None else value <= goal)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def targets(rows: dict[str, Measurement], ceiling_row: str) -> list[Target]:
    service = rows["service c64"].throughput_per_s
    c1, b1 = rows["service c1"].p50_ms, rows["in-process batch 1"].p50_ms
    ceiling = rows[ceiling_row].throughput_per_s
    return [
        _at_least(f"service c64 / {ceiling_row} throughput", _ratio(service, ceiling), 0.85),
        _at_least("service c64 / naive c64 throughput", _ratio(service, rows["naive c64"].throughput_per_s), 2.5),
        at_most("service c1 p50 - in-process batch 1 p50 (ms)", None if c1 is None or b1 is None else c1 - b1, 2.0),
        Target(
            "healthz c64 / service c64 throughput (load-generator headroom)",
            _ratio(rows["healthz c64"].throughput_per_s, service),
            "several x",
            None,
        ),
    ]


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "tensorflow_device": device,
        "tensorflow": tf.__version__,
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
    }


_MET = {None: "-", True: "yes", False: "NO"}


def runs_table(rows: list[Row], footnote: str) -> list[str]:
    return [
        "| run | throughput /s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r.name} | {r.measurement.throughput_per_s:.1f} | {num(r.measurement.p50_ms)} | "
            f"{num(r.measurement.p99_ms)} | {r.measurement.errors} |"
            for r in rows
        ),
        "",
        footnote,
    ]


def targets_table(goals: list[Target]) -> list[str]:
    return [
        "| target | value | goal | met |",
        "|---|---:|---:|---|",
        *(f"| {t.name} | {num(t.value)} | {t.goal} | {_MET[t.met]} |" for t in goals),
    ]


def _flops_table(flops: dict[str, Any]) -> list[str]:
    lines = [
        f"FLOP ceiling: fp32 matmul at {flops['matmul_gflops']:.1f} GFLOP/s ({MATMUL_SIZE}x{MATMUL_SIZE}, "
        "best of 5) over the encoder's matmul FLOPs per sentence.",
        "",
        "| sequence length | tokens | GFLOP/sentence | bound sentences/s | in-process fraction of bound |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, row in flops["lengths"].items():
        lines.append(
            f"| {kind} | {row['tokens']:.1f} | {row['gflop_per_sentence']:.4f} | "
            f"{row['bound_sentences_per_s']:.0f} | {row['in_process_fraction_of_bound']:.3f} |"
        )
    return lines


def write_report(out: Path, name: str, report: dict[str, Any], markdown_text: str) -> None:
    """`<out>/<name>.json` and `<out>/<name>.md`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown_text, encoding="utf-8")


def markdown(report: dict[str, Any], rows: list[Row], goals: list[Target]) -> str:
    machine, bench = report["machine"], report["settings"]["bench"]
    dirty = " (with uncommitted changes)" if machine["git_dirty"] else ""
    lines = [
        f"# Embedding benchmark, {report['started_utc']}",
        "",
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, TensorFlow {machine['tensorflow']} on "
        f"{machine['tensorflow_device']}, commit {machine['git_commit'][:12]}{dirty}. "
        f"Up to {bench['requests']} requests and {bench['duration_s']:.0f}s per level, on loopback.",
        "",
        *runs_table(
            rows,
            "Throughput: sentences/s in-process, requests/s (one sentence each) over HTTP. "
            "In-process latency is per encoder call (a whole batch).",
        ),
        "",
        "## Targets",
        "",
        *targets_table(goals),
        "",
        *_flops_table(report["results"]["flops"]),
    ]
    return "\n".join(lines) + "\n"
