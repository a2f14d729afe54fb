"""The deployment schemes' runs, as the schemes and write-up scenarios keep them, and what they add up
to: saturation throughput, medians over rounds, and the noise between rounds. Reads a report's dict, so
a results JSON can be summarised again."""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from perf.harness.stats import Measurement

SCHEME_ORDER = ("1", "1x", "2", "3", "4")


@dataclass(frozen=True)
class Run:
    system: str  # System.key
    mode: Literal["closed", "open"]
    load: float  # concurrency, or offered requests/s
    round: int
    measurement: Measurement


def runs_of(results: dict[str, Any]) -> list[Run]:
    return [Run(**{**r, "measurement": Measurement(**r["measurement"])}) for r in results["runs"]]


def schemes(runs: Sequence[Run]) -> list[str]:
    present = {r.system for r in runs}
    return [key for key in SCHEME_ORDER if key in present]


def saturation_per_round(runs: Sequence[Run], system: str) -> list[float]:
    """Per round, the highest closed-loop throughput over the concurrency levels: at saturation."""
    found: dict[int, float] = {}
    for r in runs:
        if r.system == system and r.mode == "closed":
            found[r.round] = max(found.get(r.round, 0.0), r.measurement.throughput_per_s)
    return list(found.values())


def saturation(runs: Sequence[Run], system: str) -> float:
    return statistics.median(saturation_per_round(runs, system))


def median_of(runs: Sequence[Run], system: str, mode: str, load: float, field: str) -> float | None:
    values = [getattr(r.measurement, field) for r in runs if (r.system, r.mode, r.load) == (system, mode, load)]
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def noise(runs: Sequence[Run], systems: Sequence[str]) -> float | None:
    """The largest round-to-round spread of saturation throughput, (max - min) / median, over `systems`:
    how much the same scheme moves between two runs on this machine. None with one round."""
    per_system = [saturation_per_round(runs, system) for system in systems]
    return max(((max(v) - min(v)) / statistics.median(v) for v in per_system if len(v) >= 2), default=None)


def in_process_batch(runs: Sequence[Run]) -> float:
    """The largest batch the in-process encoder was timed at: the service's largest batch."""
    return max(r.load for r in runs if r.system == "in-process")
