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


def median_of(runs: Sequence[Run], system: str, mode: str, load: float, field: str) -> float | None:
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


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def in_process_batch(runs: Sequence[Run]) -> float:
    """The largest batch the in-process encoder was timed at: the service's largest batch."""
    return max(r.load for r in runs if r.system == "in-process")
