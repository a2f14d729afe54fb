"""The FLOP ceiling: the encoder's matmul FLOPs per sentence over this machine's measured fp32 matmul rate."""

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from embedding_service.buckets import Buckets
from models.manifest import EncoderManifest
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

    def flops_per_sentence(self, tokens: float) -> float:
        """Matmul FLOPs of the layers: Q, K, V, output and FFN projections, plus QK^T and attention x V."""
        h, i = self.hidden, self.intermediate
        return self.layers * tokens * (2 * (4 * h * h + 2 * h * i) + 2 * 2 * tokens * h)


def _batch_padded_tokens(lengths: list[int], batch: int, buckets: Buckets) -> float:
    """Sequence length per sentence as the in-process batches ran, each padded to its longest's bucket."""
    return float(np.mean([buckets.seq_length(max(b)) for b in distinct_batches(lengths, batch)]))


def flop_ceiling(
    shape: EncoderShape, gflops: float, token_lengths: list[int], batch: int, ceiling: float, buckets: Buckets
) -> dict[str, Any]:
    """Sentences/s the matmul rate allows at three sequence lengths, and the in-process share of that."""
    mean_tokens = float(np.mean(token_lengths))
    lengths = {
        "unpadded": mean_tokens,
        "mean padded to its bucket": buckets.seq_length(math.ceil(mean_tokens)),
        f"as batch {batch} ran (padded to each batch's longest)": _batch_padded_tokens(token_lengths, batch, buckets),
    }
    result: dict[str, Any] = {"matmul_gflops": gflops, "model": asdict(shape), "lengths": {}}
    for kind, tokens in lengths.items():
        flops = shape.flops_per_sentence(tokens)
        bound = gflops * 1e9 / flops
        result["lengths"][kind] = {
            "tokens": tokens,
            "gflop_per_sentence": flops / 1e9,
            "bound_sentences_per_s": bound,
            "in_process_fraction_of_bound": ceiling / bound,
        }
    return result
