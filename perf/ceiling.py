"""The ceilings every scheme is measured against: the encoder called in-process (loaded as the service
loads it, fed tokenised batches, no HTTP, no queue) and the FLOP bound, the encoder's matmul FLOPs per
text over this machine's measured matmul rate at the precision the encoder runs at: fp32 through
TensorFlow, bf16 and int8 through OpenVINO (the backend that runs them)."""

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
import openvino as ov
import openvino.opset13 as ops
import tensorflow as tf

from embedding_service.buckets import Buckets
from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
from embedding_service.settings import EmbeddingSettings, chosen_encoder
from embedding_service.tokenizer import Tokenizer
from perf.harness.stats import Measurement
from perf.sentences import distinct_batches

MATMUL_SIZE = 2048
# OpenVINO's inference precision for a matmul at each precision: int8's quantized matmul runs int8 whatever
# the hint, and the encoder asks f32 for the rest of its int8 graph (embedding_service/ov_encoder.py).
OV_HINTS = {"bf16": "bf16", "int8": "f32"}


def best_gflops(call: Callable[[], object], size: int, repeats: int) -> float:
    """A square matmul's rate: the best of `repeats` calls, after one that warms up the kernels."""
    best = math.inf
    for _ in range(repeats + 1):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def matmul_gflops(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """The machine's fp32 matmul rate through TensorFlow: best of `repeats` square matmuls."""
    a = tf.random.uniform((size, size), dtype=tf.float32)
    b = tf.random.uniform((size, size), dtype=tf.float32)
    return best_gflops(lambda: tf.matmul(a, b)[0, 0].numpy(), size, repeats)


def matmul_model(precision: str, size: int) -> ov.Model:
    """One square matmul, x times a constant weight, as the encoder's graphs hold it at `precision`: the
    plain weight for bf16 (the hint makes it bf16); for int8, NNCF's pattern (activations through a
    FakeQuantize of 256 levels, int8 weights with a scale per output channel), which OpenVINO runs as an
    int8 matmul."""
    rng = np.random.default_rng(0)
    x = ops.parameter([size, size], ov.Type.f32, name="x")
    weight = rng.standard_normal((size, size)).astype(np.float32)
    if precision != "int8":
        return ov.Model([ops.matmul(x, ops.constant(weight), False, True)], [x], "matmul")
    low, high = ops.constant(np.float32(-1.0)), ops.constant(np.float32(1.0))
    scale = (np.abs(weight).max(axis=1, keepdims=True) / 127).astype(np.float32)
    quantized = ops.constant(np.round(weight / scale).astype(np.int8))
    dequantized = ops.multiply(ops.convert(quantized, ov.Type.f32), ops.constant(scale))
    return ov.Model([ops.matmul(ops.fake_quantize(x, low, high, low, high, 256), dequantized, False, True)], [x])


def openvino_matmul_gflops(precision: str, size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """The machine's matmul rate at bf16 or int8 through OpenVINO on the CPU, compiled as the encoder is
    (the LATENCY hint, every core): best of `repeats` square matmuls, as matmul_gflops times fp32's."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_HINTS[precision]}
    request = ov.Core().compile_model(matmul_model(precision, size), "CPU", config).create_infer_request()
    a = np.random.default_rng(1).uniform(-1.0, 1.0, (size, size)).astype(np.float32)
    return best_gflops(lambda: request.infer({0: a}, share_inputs=True), size, repeats)


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
        self._encoder = chosen_encoder(settings).encoder
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
