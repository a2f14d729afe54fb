"""The one report writer: the machine a run was on, its targets met or not, the tables every scenario
shares, and the files (`<name>.json`, `<name>.md`). It imports no ML runtime, so a scenario's helpers
start light."""

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from embedding_service.host import cpu

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = ("tensorflow", "openvino", "transformers", "tokenizers", "numpy", "fastapi", "uvicorn", "orjson", "grpcio")
# The CPU features that decide how fast the encoder's kernels can go, at each precision.
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    goal: str
    met: bool | None  # None: informational, or not measurable


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def dig(found: Any, path: str) -> Any:
    """`found` at a dotted path ("runs.0.latency_ms.p99": list items by index)."""
    for key in path.split("."):
        found = found[int(key)] if isinstance(found, list) else found[key]
    return found


def at_least(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f">= {goal:g}", None if value is None else value >= goal)


def at_most(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f"<= {goal:g}", None if value is None else value <= goal)


def below(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f"< {goal:g}", None if value is None else value < goal)


def info(name: str, value: float | None) -> Target:
    return Target(name, value, "-", None)


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def gpus() -> list[str]:
    """The machine's NVIDIA GPUs, by name (`nvidia-smi -L`); none where it is absent."""
    if shutil.which("nvidia-smi") is None:
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [line.split(":", 1)[1].split("(")[0].strip() for line in listed.splitlines() if line.startswith("GPU")]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def machine_info() -> dict[str, Any]:
    model_name, flags = cpu()
    found = gpus()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model_name or platform.processor() or "unknown",
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags],
        "gpus": found,
        "tensorflow_device": "GPU" if found else "CPU",
        "tensorflow": _version("tensorflow"),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
    }


def run_header(command: str, started_at: datetime) -> dict[str, Any]:
    """What a report's JSON starts with: when it started, its command line, and the machine."""
    return {"started_utc": started_at.isoformat(timespec="seconds"), "command": command, "machine": machine_info()}


def run_line(report: dict[str, Any]) -> str:
    """The markdown line under a report's title: when, how, where, and on which commit."""
    machine = report["machine"]
    return (
        f"{report['started_utc']}, `{report['command']}`; {machine['cpu_model']}, {machine['nproc']} cores, "
        f"GPUs: {', '.join(machine['gpus']) or 'none'}; TensorFlow {machine['tensorflow']}; "
        f"git {machine['git_commit'][:10]}{' (dirty)' if machine['git_dirty'] else ''}. "
        "Compare ratios inside one run, not absolute figures across runs: the machine may be shared."
    )


_MET = {None: "-", True: "yes", False: "NO"}

# A table column: its header, a row's value, and its decimals (None: text, left-aligned).
Column = tuple[str, Callable[[Any], Any], int | None]


def table(columns: Sequence[Column], rows: Iterable[Any]) -> list[str]:
    """A markdown table of `rows`, one line each; numbers right-aligned, a missing value "n/a"."""

    def cell(value: Any, digits: int | None) -> str:
        if value is None:
            return "n/a"
        return str(value) if digits is None else f"{value:,.{digits}f}"

    return [
        "| " + " | ".join(header for header, _, _ in columns) + " |",
        "|" + "|".join("---" if digits is None else "---:" for _, _, digits in columns) + "|",
        *("| " + " | ".join(cell(value(row), digits) for _, value, digits in columns) + " |" for row in rows),
    ]


# A row of side_by_side(): a figure's name, its dotted path (dig) in each column's figures, its decimals.
Row = tuple[str, str, int]


def side_by_side(rows: Iterable[Row], columns: Mapping[str, Any]) -> list[str]:
    """A markdown table of figures, a row each, side by side in a column for each of `columns` (its header
    -> its figures); a list's items joined, any other text as it is."""

    def cell(found: Any, digits: int) -> str:
        if isinstance(found, list):
            return ", ".join(num(v, digits) for v in found)
        return num(found, digits) if found is None or isinstance(found, int | float) else str(found)

    return [
        "| figure | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
        *(
            f"| {name} | " + " | ".join(cell(dig(c, path), d) for c in columns.values()) + " |"
            for name, path, d in rows
        ),
    ]


def targets_table(goals: Sequence[dict[str, Any]]) -> list[str]:
    return [
        "| target | value | goal | met |",
        "|---|---:|---:|---|",
        *(f"| {t['name']} | {num(t['value'])} | {t['goal']} | {_MET[t['met']]} |" for t in goals),
    ]


def headroom_table(runs: dict[str, Any]) -> list[str]:
    """The load client's rate against each trivial endpoint (perf.harness.headroom)."""
    return [
        "| endpoint | requests/s | p50 ms | server core-ms per request | client us per request |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {run['requests_per_s']:.0f} | {num(run['latency_ms']['p50'])} | "
            f"{num(run.get('service_core_ms_per_request'), 3)} | {run['client_us_per_request']:.0f} |"
            for name, run in runs.items()
        ),
    ]


def services_table(services: dict[str, Any]) -> list[str]:
    """Each service a run started: time to ready, memory, and its settings but host and port."""
    return [
        "| service | ready after s | idle RSS MB | loaded RSS MB | settings |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {name} | {s['ready_after_s']:.1f} | {s['idle_rss_mb']:.0f} | {s['loaded_rss_mb']:.0f} | "
            + ", ".join(f"{k}={v}" for k, v in s["env"].items() if not k.endswith(("_HOST", "_PORT")))
            + " |"
            for name, s in services.items()
        ),
    ]


def write_report(out: Path, name: str, report: dict[str, Any], markdown: str) -> None:
    """`<out>/<name>.json` and `<out>/<name>.md`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
