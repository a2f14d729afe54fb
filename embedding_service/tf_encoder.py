"""The TensorFlow backend: one SavedModel call per padded batch, XLA-compiled per bucket shape at warm-up;
the device's reduced precision on request (TensorFlow's auto mixed precision, a graph rewrite that XLA-compiled
functions do not get: docs/precision.md). The default on a GPU."""

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from embedding_service.buckets import Buckets
from embedding_service.encoder import Backend, Embedding, IntArray, Precision, embeddings, padded
from embedding_service.host import cores
from embedding_service.int8_manifest import Int8Manifest
from embedding_service.manifest import SAVED_MODEL_DIR, EncoderManifest

INPUT_SIGNATURE = (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32))

logger = logging.getLogger(__name__)


class TFEncoder:
    backend: Backend = "tensorflow"

    def __init__(
        self, export_dir: Path, buckets: Buckets, *, xla: bool, precision: Precision = "fp32", threads: int = 0
    ) -> None:
        """`precision` bf16: bf16 on a CPU (oneDNN), fp16 on a GPU of compute capability 7.0 or more, fp32 on
        an older one."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"the tensorflow backend runs fp32 or bf16 (mixed precision), not {precision}")
        self.manifest = EncoderManifest.read(export_dir)
        self.buckets = buckets
        if threads:  # before TensorFlow's runtime starts: the service loads the encoder first
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        self.threads = tf.config.threading.get_intra_op_parallelism_threads() or cores()
        gpus = tf.config.list_physical_devices("GPU")
        self.device = "GPU" if gpus else "CPU"
        self.precision: Precision = "fp32"
        self.int8: Int8Manifest | None = None  # the tensorflow backend runs no int8 build
        if precision == "bf16":
            if xla:
                # A graph rewrite that does not reach into XLA-compiled functions: pooled batches would run fp32.
                raise ValueError("mixed precision needs xla=False")
            option = "auto_mixed_precision" if gpus else "auto_mixed_precision_onednn_bfloat16"
            tf.config.optimizer.set_experimental_options({option: True})
            if not gpus:
                self.precision = "bf16"
            elif any(_fast_fp16(gpu) for gpu in gpus):  # else TensorFlow skips the rewrite: fp32 it stays
                self.precision = "fp16"
        model: Any = tf.saved_model.load(str(export_dir / SAVED_MODEL_DIR))
        signature = model.signatures["serving_default"]
        self._model = model  # keeps the variables the signature reads alive
        # Pooled batches: traced once for any shape; with XLA, each (batch, length) bucket is compiled at
        # warm-up, and the token output never leaves the compiled program.
        self._sentences = tf.function(
            lambda ids, mask: signature(input_ids=ids, attention_mask=mask)["sentence_embedding"],
            input_signature=INPUT_SIGNATURE,
            jit_compile=xla,
        )
        # Token-level batches (rare: another pooling, or the token vectors themselves): graph mode, so no
        # request ever waits for a compile of a shape warm-up did not cover.
        self._everything = tf.function(
            lambda ids, mask: signature(input_ids=ids, attention_mask=mask), input_signature=INPUT_SIGNATURE
        )
        logger.info(
            "encoder %s loaded: backend tensorflow on %s (xla=%s, precision=%s, threads=%d)",
            self.manifest.model_name,
            self.device,
            xla,
            self.precision,
            self.threads,
        )

    def __call__(self, batch: list[IntArray], *, token_vectors: bool = False) -> list[Embedding]:
        rows = self.buckets.batch_size(len(batch))
        length = self.buckets.seq_length(max(len(ids) for ids in batch))
        input_ids, mask = padded(batch, rows, length)
        if not token_vectors:
            sentences = self._sentences(tf.constant(input_ids), tf.constant(mask)).numpy()
            return embeddings(batch, sentences.astype(np.float32, copy=False), None)
        outputs = self._everything(tf.constant(input_ids), tf.constant(mask))
        sentences = outputs["sentence_embedding"].numpy().astype(np.float32, copy=False)
        tokens = outputs["token_embeddings"].numpy().astype(np.float32, copy=False)
        return embeddings(batch, sentences, tokens)

    def warm_up(self, max_batch_tokens: int) -> None:
        """Compiles every bucket shape a pooled batch can take, so no request ever waits for a compile."""
        shapes = self.buckets.shapes(max_batch_tokens)
        started = time.perf_counter()
        for rows, length in shapes:
            self([np.ones(length, dtype=np.int32)] * rows)
        logger.info("warmed up %d shapes in %.1fs", len(shapes), time.perf_counter() - started)


def _fast_fp16(gpu: Any) -> bool:
    """TensorFlow's auto mixed precision rewrites the graph only for GPUs of compute capability 7.0 or more."""
    details: dict[str, Any] = tf.config.experimental.get_device_details(gpu)
    return tuple(details.get("compute_capability", (0, 0))) >= (7, 0)
