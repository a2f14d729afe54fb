"""The orchestrator's Prometheus metrics; stage names match perf/'s latency breakdown."""

from prometheus_client import Counter, Gauge, Histogram

from service_common.metrics import LATENCY_BUCKETS

STAGE_SECONDS = Histogram(
    "orchestrator_stage_duration_seconds",
    "Latency of one hop call of /classify (embed_call, head_call)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
HOP_ERRORS_TOTAL = Counter(
    "orchestrator_hop_errors_total", "Failed calls from the orchestrator, by hop and kind", ["hop", "kind"]
)
HOP_RETRIES_TOTAL = Counter("orchestrator_hop_retries_total", "Calls retried after a connection failure", ["hop"])
CLASSIFIED_TEXTS_TOTAL = Counter("orchestrator_classified_texts_total", "Texts classified, by head", ["head"])
COALESCER_QUEUE_TEXTS = Gauge("orchestrator_queue_texts", "Texts waiting for a hop-call slot")
COALESCED_REQUESTS = Histogram(
    "orchestrator_requests_per_call", "/classify requests sharing one embedding call", buckets=(1, 2, 4, 8, 16, 32, 64)
)
ENCODER_HEAD_VERSIONS = Gauge(
    "orchestrator_encoder_head_versions",
    "Served head versions trained on each encoder an embedding service serves: 0 means the encoder can be retired",
    ["encoder"],
)
ENCODER_REFUSALS_TOTAL = Counter(
    "orchestrator_encoder_refusals_total",
    "Heads refused a request's texts for their encoder: encoder_mismatch (no version of the head was trained "
    "on a served encoder, or on the one that embedded them), unstamped_head (its versions carry no stamp) or "
    "unchecked_precision (int8 vectors, and the int8 build did not check that head version)",
    ["head", "code"],
)
