"""The embedding service's Prometheus metrics; stage names match perf/'s latency breakdown."""

from prometheus_client import Counter, Gauge, Histogram

from service_common.metrics import LATENCY_BUCKETS

STAGE_SECONDS = Histogram(
    "embedding_stage_duration_seconds",
    "Latency of one stage of an embedding request (tokenize, queue, infer)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
BATCH_TEXTS = Histogram("embedding_batch_texts", "Texts per encoder call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_PADDED_TOKENS = Histogram(
    "embedding_batch_padded_tokens",
    "Padded tokens (batch x sequence bucket) per encoder call",
    buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
)
QUEUE_TEXTS = Gauge("embedding_queue_texts", "Texts waiting for the encoder")
ADMITTED_TEXTS = Gauge(
    "embedding_admitted_texts", "Texts of admitted requests not yet answered (what max_queue_texts bounds)"
)
TEXTS_TOTAL = Counter("embedding_texts_total", "Texts embedded")
TRUNCATED_TOTAL = Counter("embedding_truncated_texts_total", "Texts cut to the model's max sequence length")
REJECTED_TOTAL = Counter("embedding_rejected_texts_total", "Texts refused before inference", ["reason"])
REJECTED_REQUESTS_TOTAL = Counter(
    "embedding_rejected_requests_total", "Requests refused before their body was read", ["reason"]
)
