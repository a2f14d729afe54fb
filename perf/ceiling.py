"""The ceilings every scheme is measured against: the encoder called in-process (loaded as the service
loads it, fed tokenised batches, no HTTP, no queue) and the FLOP bound, the encoder's matmul FLOPs per
text over this machine's measured fp32 matmul rate."""

import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from embedding_service.buckets import Buckets
from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
from embedding_service.settings import EmbeddingSettings, configured_encoder
from embedding_service.tokenizer import Tokenizer
from perf.loadgen import Measurement
from perf.sentences import distinct_batches

MATMUL_SIZE = 2048


def matmul_gflops(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """The machine's fp32 matmul rate through TensorFlow: best of `repeats` square matmuls."""
    a = tf.random.uniform((size, size), dtype=tf.float32)
    b = tf.random.uniform((size, size), dtype=tf.float32)
    best = math.inf
    for _ in range(repeats + 1):  # the first call warms up the kernels
        started = time.perf_counter()
        tf.matmul(a, b)[0, 0].numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


@dataclass(frozen=True)
class EncoderShape:
    hidden: int
    intermediate: int
    layers: int

    @classmethod
    def read(cls, manifest: EncoderManifest) -> "EncoderShape":
        """From the source checkpoint's config.json, which the manifest names."""
        config = json.loads((Path(manifest.source) / "config.json").read_text(encoding="utf-8"))
        return cls(config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"])

    def flops_per_text(self, tokens: float) -> float:
        """Matmul FLOPs of the layers: Q, K, V, output and FFN projections, plus QK^T and attention x V."""
        h, i = self.hidden, self.intermediate
        return self.layers * tokens * (2 * (4 * h * h + 2 * h * i) + 2 * 2 * tokens * h)


def time_calls(call: Callable[[], object], calls: int, duration_s: float, items_per_call: int) -> Measurement:
    """`call` repeated up to `calls` times or for `duration_s`: latency per call, throughput in items."""
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(calls):
        if time.perf_counter() - started >= duration_s:
            break
        call_started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - call_started)
    return Measurement.of(latencies, Counter(), time.perf_counter() - started, items_per_call)


def flop_bounds(shape: EncoderShape, gflops: float, lengths: list[int], batch: int, buckets: Buckets) -> dict[str, Any]:
    """The bound with each text unpadded, and padded as the in-process batches ran (each batch to its
    longest text's bucket): the gap between the two is what padding costs."""
    padded = [buckets.seq_length(max(b)) for b in distinct_batches(lengths, batch)]
    flops = {
        "unpadded": np.mean([shape.flops_per_text(t) for t in lengths]),
        f"padded as batch {batch} ran": np.mean([shape.flops_per_text(t) for t in padded]),
    }
    tokens = {"unpadded": float(np.mean(lengths)), f"padded as batch {batch} ran": float(np.mean(padded))}
    result: dict[str, Any] = {"matmul_gflops": gflops, "model": asdict(shape)}
    for kind, per_text in flops.items():
        result[kind] = {
            "mean_tokens": tokens[kind],
            "gflop_per_text": float(per_text) / 1e9,
            "bound_texts_per_s": gflops * 1e9 / float(per_text),
        }
    return result


class InProcess:
    """The encoder loaded as the service loads it (its settings: backend, buckets), every batch shape the
    texts give compiled up front, then timed on demand: the suite times it in every round, beside the
    schemes."""

    def __init__(self, settings: EmbeddingSettings, texts: Sequence[str]) -> None:
        self.manifest = EncoderManifest.read(settings.model_dir)
        self.batch_sizes = (1, settings.max_batch_size)
        self._encoder = configured_encoder(settings)
        self.buckets = self._encoder.buckets
        self.backend = self._encoder.backend
        self.device = self._encoder.device
        tokenizer = Tokenizer(settings.model_dir / TOKENIZER_DIR, self.manifest.max_seq_length)
        ids = [t.ids for t in tokenizer(list(texts))]
        self.token_lengths = [len(i) for i in ids]
        self._batches = {size: distinct_batches(ids, size) for size in self.batch_sizes}
        for batches in self._batches.values():
            for batch in batches:
                self._encoder(batch)

    def time(self, batch_size: int, texts: int, duration_s: float) -> Measurement:
        """Throughput in texts/s; latency per encoder call (a whole batch)."""
        cycled = itertools.cycle(self._batches[batch_size])
        return time_calls(lambda: self._encoder(next(cycled)), max(texts // batch_size, 1), duration_s, batch_size)

    def flop_bounds(self, gflops: float) -> dict[str, Any]:
        shape = EncoderShape.read(self.manifest)
        return flop_bounds(shape, gflops, self.token_lengths, self.batch_sizes[-1], self.buckets)
