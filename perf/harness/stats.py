"""Figures from runs: percentiles, a run's rates and costs, medians per round, and ratios with their
noise. A ratio is taken only between runs of one results tree, round by round."""

import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from perf.harness.load import Run

T = TypeVar("T")


def ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max, in milliseconds."""
    if not seconds:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    found = np.percentile(np.asarray(seconds) * 1e3, [50, 90, 99, 100])
    return dict(zip(("p50", "p90", "p99", "max"), (float(v) for v in found), strict=True))


def figures(run: Run, *, items_per_request: int = 1, ok: str | None = "200") -> dict[str, Any]:
    """A run's outcomes, its throughput of `ok` answers (any HTTP answer where None) in items/s, their
    latency from send, and its CPU: the metered processes' core-ms and the client's microseconds per
    request."""
    samples, usage = run.samples, run.usage
    good = [s.service_s for s in samples if s.outcome == ok or (ok is None and s.outcome.isdigit())]
    count = max(len(samples), 1)
    return {
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "wall_s": usage.wall_s,
        "requests_per_s": len(samples) / usage.wall_s,
        "throughput_per_s": len(good) * items_per_request / usage.wall_s,
        "latency_ms": ms(good),
        "service_cores": usage.service_cpu_s / usage.wall_s,
        "service_core_ms_per_request": usage.service_cpu_s / count * 1e3,
        "client_us_per_request": usage.client_cpu_s / count * 1e6,
    }


def said(found: dict[str, Any]) -> str:
    """One progress line for `figures()`."""
    latency = found["latency_ms"]
    return (
        f"{found['throughput_per_s']:.1f}/s, p50 {latency['p50'] or 0:.1f} ms, p99 {latency['p99'] or 0:.1f} ms, "
        f"{found['service_core_ms_per_request']:.3f} core-ms per request, {found['outcomes']}"
    )


@dataclass(frozen=True)
class Measurement:
    """A run as the schemes benchmark keeps it: successes' latency, errors by kind, throughput."""

    completed: int
    errors: int
    error_kinds: dict[str, int]  # HTTP status or exception name -> count
    elapsed_s: float
    throughput_per_s: float  # successful items per second
    p50_ms: float | None  # of successful calls; None when there were none
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(
        cls, latencies_s: Sequence[float], error_kinds: Counter[str], elapsed_s: float, items_per_call: int = 1
    ) -> "Measurement":
        """`latencies_s` holds successful calls only; errors are counted in `error_kinds`."""
        latency = ms(latencies_s)
        return cls(
            completed=len(latencies_s) + sum(error_kinds.values()),
            errors=sum(error_kinds.values()),
            error_kinds=dict(error_kinds),
            elapsed_s=elapsed_s,
            throughput_per_s=len(latencies_s) * items_per_call / elapsed_s if elapsed_s > 0 else 0.0,
            p50_ms=latency["p50"],
            p90_ms=latency["p90"],
            p99_ms=latency["p99"],
            max_ms=latency["max"],
        )

    @classmethod
    def of_run(cls, run: Run, *, from_due: bool = False) -> "Measurement":
        """A closed run over its wall time; an open one (`from_due`) from its first due time to its last
        answer, each latency from the request's due time."""
        samples = run.samples
        ok = [s.latency_s if from_due else s.service_s for s in samples if s.outcome == "200"]
        errors = Counter(s.outcome for s in samples if s.outcome != "200")
        elapsed = max((s.due_s + s.latency_s for s in samples), default=0.0) if from_due else run.usage.wall_s
        return cls.of(ok, errors, elapsed)


def quotient(top: float | None, bottom: float | None) -> float | None:
    """`top` / `bottom`, or None where either is missing or `bottom` is 0."""
    return None if top is None or not bottom else top / bottom


def per_round(runs: Iterable[dict[str, Any]], key: str, value: Callable[[dict[str, Any]], float]) -> dict[int, float]:
    """The median of `value` over the runs of variant `key` ("variant" field), by "round"."""
    found: dict[int, list[float]] = {}
    for run in runs:
        if run["variant"] == key:
            found.setdefault(run["round"], []).append(value(run))
    return {round_: statistics.median(values) for round_, values in sorted(found.items())}


def ratio(
    runs: Sequence[dict[str, Any]], top: str, bottom: str, value: Callable[[dict[str, Any]], float]
) -> dict[str, Any]:
    """`top`'s figure over `bottom`'s, round by round (both from this run), its median and its noise: the
    spread of the rounds' ratios (max - min)."""
    above, below = per_round(runs, top, value), per_round(runs, bottom, value)
    rounds = [above[r] / below[r] for r in above if below.get(r)]
    return {
        "per_round": rounds,
        "median": statistics.median(rounds) if rounds else None,
        "spread": max(rounds) - min(rounds) if rounds else None,
    }


def alternating(keys: Sequence[T], round_: int) -> list[T]:
    """The order of the variants in round `round_` (from 1): as given in odd rounds, reversed in even."""
    return list(keys) if round_ % 2 else list(keys)[::-1]


def rotated(keys: Sequence[T], round_: int) -> list[T]:
    """The variants rotated by the round (from 1): each goes first once in len(keys) rounds."""
    shift = (round_ - 1) % len(keys) if keys else 0
    return [*keys[shift:], *keys[:shift]]
