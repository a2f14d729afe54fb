"""Every Prometheus metric of our services, in one place; stage names match perf/'s latency breakdown."""

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route and status",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "stage_duration_seconds", "Latency of one pipeline stage", ["stage"], buckets=_LATENCY_BUCKETS
)
BATCH_TEXTS = Histogram("embedding_batch_texts", "Texts per encoder call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_PADDED_TOKENS = Histogram(
    "embedding_batch_padded_tokens",
    "Padded tokens (batch x sequence bucket) per encoder call",
    buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
)
QUEUE_TEXTS = Gauge("embedding_queue_texts", "Texts waiting for the encoder")
TEXTS_TOTAL = Counter("embedding_texts_total", "Texts embedded")
TRUNCATED_TOTAL = Counter("embedding_truncated_texts_total", "Texts cut to the model's max sequence length")
REJECTED_TOTAL = Counter("embedding_rejected_texts_total", "Texts refused before inference", ["reason"])
HOP_ERRORS_TOTAL = Counter(
    "orchestrator_hop_errors_total", "Failed calls from the orchestrator, by hop and kind", ["hop", "kind"]
)
HOP_RETRIES_TOTAL = Counter("orchestrator_hop_retries_total", "Calls retried after a connection failure", ["hop"])
CLASSIFIED_TEXTS_TOTAL = Counter("orchestrator_classified_texts_total", "Texts classified")
COALESCER_QUEUE_TEXTS = Gauge("orchestrator_queue_texts", "Texts waiting for a hop-call slot")
COALESCED_REQUESTS = Histogram(
    "orchestrator_requests_per_call", "/classify requests sharing one embedding call", buckets=(1, 2, 4, 8, 16, 32, 64)
)
