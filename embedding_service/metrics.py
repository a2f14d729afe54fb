"""The embedding service's Prometheus metrics; stage names match perf/'s latency breakdown."""

from prometheus_client import Counter, Gauge, Histogram, Info

from service_common.metrics import LATENCY_BUCKETS

# embedding_encoder_info{model, identity, precision, backend, device} 1, once the model is ready: which
# encoder answers, to join its other series on (or alert when replicas disagree).
ENCODER_INFO = Info("embedding_encoder", "The encoder this service runs, set when it is ready")

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
TOKENS_TOTAL = Counter("embedding_tokens_total", "Tokens of the texts the encoder ran, special tokens included")
PADDED_TOKENS_TOTAL = Counter(
    "embedding_padded_tokens_total",
    "Tokens the encoder computed, padding included (rows x length of each call): "
    "embedding_tokens_total / this is the padding efficiency",
)
QUEUE_TEXTS = Gauge("embedding_queue_texts", "Texts waiting for the encoder")
ADMITTED_TEXTS = Gauge(
    "embedding_admitted_texts", "Texts of admitted requests not yet answered (what max_queue_texts bounds)"
)
MAX_QUEUE_TEXTS = Gauge("embedding_max_queue_texts", "The bound on embedding_admitted_texts (max_queue_texts)")
TEXTS_TOTAL = Counter("embedding_texts_total", "Texts embedded")
TRUNCATED_TOTAL = Counter("embedding_truncated_texts_total", "Texts cut to the model's max sequence length")
REJECTED_TOTAL = Counter("embedding_rejected_texts_total", "Texts refused before inference", ["reason"])
# At 0 from the start: the autoscaler's rate() sees the first refusals for a full queue (a series first
# scraped at 64 shows no increase).
REJECTED_TOTAL.labels("queue_full")
REJECTED_REQUESTS_TOTAL = Counter(
    "embedding_rejected_requests_total", "Requests refused before their body was read", ["reason"]
)

# Per lane: the label is a configured lane's name, `anonymous` or `other` (embedding_service.lanes).
LANE_QUEUED_TEXTS = Gauge("embedding_lane_queued_texts", "Texts of a lane waiting for the encoder", ["lane"])
LANE_TEXTS_TOTAL = Counter("embedding_lane_texts_total", "Texts of a lane the encoder ran", ["lane"])
LANE_TOKENS_TOTAL = Counter("embedding_lane_tokens_total", "Tokens of a lane the encoder ran", ["lane"])
LANE_REFUSALS_TOTAL = Counter(
    "embedding_lane_refusals_total",
    "Requests of a lane refused: queue_share (over its share of a full queue), pushed_out (admitted, then "
    "its room given to a lane within its share), quota (past its tokens per second)",
    ["lane", "reason"],
)
LANE_QUEUE_SECONDS = Histogram(
    "embedding_lane_queue_seconds", "Time a lane's texts waited for the encoder", ["lane"], buckets=LATENCY_BUCKETS
)

CACHE_HITS_TOTAL = Counter("embedding_cache_hits_total", "Texts answered from the embedding cache")
CACHE_MISSES_TOTAL = Counter("embedding_cache_misses_total", "Texts looked up in the embedding cache and not found")
CACHE_BYTES = Gauge("embedding_cache_bytes", "Bytes the embedding cache holds (keys, vectors and overhead)")
CACHE_EVICTIONS_TOTAL = Counter("embedding_cache_evictions_total", "Entries dropped from the embedding cache for room")
INFLIGHT_SHARED_TOTAL = Counter(
    "embedding_inflight_shared_total", "Texts that awaited an identical text already queued or running"
)
