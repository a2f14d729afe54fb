"""The schemes scenario's chart: open-loop latency percentiles per scheme against offered load, and closed-loop
throughput per scheme against concurrency beside the in-process and FLOP ceilings."""

import statistics
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only: no display here, and none wanted

import matplotlib.pyplot as plt

from perf.scheme_runs import in_process_batch, runs_of, schemes


def _medians(points: list[tuple[float, float | None]]) -> tuple[list[float], list[float]]:
    """(load, value) pairs from several rounds -> loads and the median value at each."""
    by_load: dict[float, list[float]] = {}
    for load, value in points:
        if value is not None:
            by_load.setdefault(load, []).append(value)
    loads = sorted(by_load)
    return loads, [statistics.median(by_load[load]) for load in loads]


def write(path: Path, report: dict[str, Any]) -> None:
    runs = runs_of(report["results"])
    ceiling = report["results"]["ceiling"]
    batch = in_process_batch(runs)
    _, (in_process,) = _medians(
        [(batch, r.measurement.throughput_per_s) for r in runs if r.system == "in-process" and r.load == batch]
    )
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(13, 5))
    for key in schemes(runs):
        line: Any = None
        for field, style in (("p99_ms", "-"), ("p50_ms", ":")):
            loads, values = _medians(
                [(r.load, getattr(r.measurement, field)) for r in runs if r.system == key and r.mode == "open"]
            )
            color = None if line is None else line.get_color()
            (drawn,) = latency.plot(loads, values, style, marker="o", color=color, label=f"{key} {field[:3]}")
            line = line or drawn
        loads, values = _medians(
            [(r.load, r.measurement.throughput_per_s) for r in runs if r.system == key and r.mode == "closed"]
        )
        throughput.plot(loads, values, marker="o", label=f"scheme {key}")
    latency.set(xlabel="offered load (requests/s, open loop)", ylabel="latency (ms)", yscale="log")
    latency.set_title("Latency per scheme: p99 solid, p50 dotted")
    throughput.axhline(in_process, color="grey", linestyle="--", label=f"in-process batch {batch:g}")
    throughput.axhline(
        ceiling["flops"]["unpadded"]["bound_texts_per_s"], color="black", linestyle="--", label="FLOP bound"
    )
    throughput.set(xlabel="concurrency (closed loop)", ylabel="texts/s", xscale="log", yscale="log")
    throughput.set_title("Throughput per scheme")
    for axes in (latency, throughput):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    machine = report["machine"]
    figure.suptitle(
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, {report['settings']['texts']} texts, "
        f"{report['settings']['plan']['mode']} mode, {report['started_utc']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
