"""The one metric every HTTP service exports the same way: request latency by route. Each service defines
its own families in its own `metrics` module, so a process exports only what it measures."""

from prometheus_client import Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route and status",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
