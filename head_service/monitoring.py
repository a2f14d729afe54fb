"""TF Serving's Prometheus metrics, under its names (`:tensorflow:serving:...`) and exposition quirks:
`# TYPE` lines only, `name{} value` for unlabelled series, latencies in microseconds."""

from collections import defaultdict
from threading import Lock

_BUCKETS_US = (10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 500_000, 1_000_000)
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
WRAPPED_RUN_COUNT = ":tensorflow:serving:batching_session:wrapped_run_count"
# Each load of a version directory (TensorFlow's SavedModel loader counts it): its `model_path` names the head and
# version, so dashboards list versions and alerts see churn.
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._lock = Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def count_request(self, model: str, status: str) -> None:
        with self._lock:
            self._counters[REQUEST_COUNT][(("model_name", model), ("status", status))] += 1

    def count_load(self, model_path: str, succeeded: bool) -> None:
        with self._lock:
            self._counters[LOAD_ATTEMPT_COUNT][
                (("model_path", model_path), ("status", "success" if succeeded else "fail"))
            ] += 1

    def count_batch_run(self) -> None:
        with self._lock:
            self._counters[WRAPPED_RUN_COUNT][()] += 1

    def observe_request(self, model: str, api: str, entrypoint: str, seconds: float) -> None:
        self._observe(REQUEST_LATENCY, (("model_name", model), ("API", api), ("entrypoint", entrypoint)), seconds)

    def observe_runtime(self, model: str, api: str, seconds: float) -> None:
        self._observe(RUNTIME_LATENCY, (("model_name", model), ("API", api), ("runtime", "TF1")), seconds)

    def _observe(self, name: str, labels: Labels, seconds: float) -> None:
        micros = seconds * 1e6
        with self._lock:
            # per series: one count per bucket, then +Inf, then the sum
            series = self._histograms[name].setdefault(labels, [0.0] * (len(_BUCKETS_US) + 2))
            for i, bound in enumerate(_BUCKETS_US):
                if micros <= bound:
                    series[i] += 1
            series[-2] += 1
            series[-1] += micros

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, counter in sorted(self._counters.items()):
                lines.append(f"# TYPE {name} counter")
                lines += [f"{name}{_labels(labels)} {value:g}" for labels, value in counter.items()]
            for name, histogram in sorted(self._histograms.items()):
                lines.append(f"# TYPE {name} histogram")
                for labels, series in histogram.items():
                    for bound, count in zip((*_BUCKETS_US, "+Inf"), series[:-1], strict=True):
                        lines.append(f"{name}_bucket{_labels((*labels, ('le', str(bound))))} {count:g}")
                    lines.append(f"{name}_sum{_labels(labels)} {series[-1]:g}")
                    lines.append(f"{name}_count{_labels(labels)} {series[-2]:g}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels) + "}"
