"""What every perf/ command writes: the machine it ran on, targets met or not, and the files."""

import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("tensorflow", "transformers", "tokenizers", "numpy", "fastapi", "uvicorn", "orjson", "grpcio", "httpx")
# The CPU features that decide how fast TensorFlow's fp32 kernels can go.
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    goal: str
    met: bool | None  # None: informational, or not measurable


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def at_least(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f">= {goal}", None if value is None else value >= goal)


def at_most(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f"<= {goal}", None if value is None else value <= goal)


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _cpuinfo(field: str) -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return ""


def _gpu_name(gpu: Any) -> str:
    return str(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))


def machine_info(device: str) -> dict[str, Any]:
    flags = set(_cpuinfo("flags").split())
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpuinfo("model name") or platform.processor() or "unknown",
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags],
        "gpus": [_gpu_name(gpu) for gpu in tf.config.list_physical_devices("GPU")],
        "tensorflow_device": device,
        "tensorflow": tf.__version__,
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
    }


def run_header(module: str, argv: Sequence[str], started_at: datetime) -> dict[str, Any]:
    """What a benchmark's JSON starts with: when it started, its command line, and the machine."""
    return {
        "started_utc": started_at.isoformat(timespec="seconds"),
        "command": " ".join([f"python -m {module}", *argv]),
        "machine": machine_info("GPU" if tf.config.list_physical_devices("GPU") else "CPU"),
    }


def run_line(report: dict[str, Any], xla: bool) -> str:
    """The markdown line under a benchmark's title: when, how, where, and on which commit."""
    machine = report["machine"]
    return (
        f"{report['started_utc']}, `{report['command']}`; {machine['cpu_model']}, {machine['nproc']} cores, "
        f"GPUs: {', '.join(machine['gpus']) or 'none'}; TensorFlow {machine['tensorflow']}; "
        f"git {machine['git_commit'][:10]}{' (dirty)' if machine['git_dirty'] else ''}; encoder XLA: {xla}."
    )


_MET = {None: "-", True: "yes", False: "NO"}


def targets_table(goals: list[Target]) -> list[str]:
    return [
        "| target | value | goal | met |",
        "|---|---:|---:|---|",
        *(f"| {t.name} | {num(t.value)} | {t.goal} | {_MET[t.met]} |" for t in goals),
    ]


def headroom_table(runs: dict[str, Any]) -> list[str]:
    """The load client's rate against each trivial endpoint (perf.endpoint_bench's null server, a /healthz)."""
    return [
        "| endpoint | requests/s | p50 ms | client us per request |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {run['requests_per_s']:.0f} | {num(run['latency_ms']['p50'])} | "
            f"{run['client_us_per_request']:.0f} |"
            for name, run in runs.items()
        ),
    ]


def services_table(services: dict[str, Any]) -> list[str]:
    """Each service the benchmark started: time to ready, memory, and its settings but host and port."""
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


def write_report(out: Path, name: str, report: dict[str, Any], markdown_text: str) -> None:
    """`<out>/<name>.json` and `<out>/<name>.md`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown_text, encoding="utf-8")
