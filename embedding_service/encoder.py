"""The TF encoder: one SavedModel call per padded batch, XLA-compiled per bucket shape on request."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from embedding_service.buckets import Buckets
from embedding_service.manifest import SAVED_MODEL_DIR, EncoderManifest

INPUT_SIGNATURE = (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32))

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Embedding:
    sentence: FloatArray  # [D], pooled and normalised as the manifest says
    length: int  # tokens the text ran with, special tokens included
    tokens: FloatArray | None  # [length, D], the last hidden state without padding; None: from the cache

    def token_vectors(self) -> FloatArray:
        if self.tokens is None:
            raise ValueError("a cached embedding has no token vectors: token-level requests bypass the cache")
        return self.tokens


class TFEncoder:
    """Runs padded batches through the exported graph. Not thread-safe: the batcher calls it from one thread."""

    def __init__(self, export_dir: Path, buckets: Buckets, *, xla: bool, mixed_precision: bool) -> None:
        self.manifest = EncoderManifest.read(export_dir)
        self.buckets = buckets
        gpus = tf.config.list_physical_devices("GPU")
        self.device = "GPU" if gpus else "CPU"
        if mixed_precision:
            option = "auto_mixed_precision" if gpus else "auto_mixed_precision_onednn_bfloat16"
            tf.config.optimizer.set_experimental_options({option: True})
        model: Any = tf.saved_model.load(str(export_dir / SAVED_MODEL_DIR))
        signature = model.signatures["serving_default"]
        self._model = model  # keeps the variables the signature reads alive
        # Traced once for any shape; with XLA, each new (batch, length) shape is compiled on first use.
        self._run = tf.function(
            lambda ids, mask: signature(input_ids=ids, attention_mask=mask),
            input_signature=INPUT_SIGNATURE,
            jit_compile=xla,
        )
        logger.info(
            "encoder %s loaded on %s (xla=%s, mixed_precision=%s)",
            self.manifest.model_name,
            self.device,
            xla,
            mixed_precision,
        )

    def __call__(self, batch: list[npt.NDArray[np.int32]]) -> list[Embedding]:
        rows = self.buckets.batch_size(len(batch))
        length = self.buckets.seq_length(max(len(ids) for ids in batch))
        input_ids = np.zeros((rows, length), dtype=np.int32)
        mask = np.zeros((rows, length), dtype=np.int32)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        outputs = self._run(tf.constant(input_ids), tf.constant(mask))
        sentences = outputs["sentence_embedding"].numpy().astype(np.float32, copy=False)
        tokens = outputs["token_embeddings"].numpy().astype(np.float32, copy=False)
        return [Embedding(sentences[row], len(ids), tokens[row, : len(ids)]) for row, ids in enumerate(batch)]

    def warm_up(self, max_batch_tokens: int) -> None:
        """Compiles every bucket shape a batch can take, so no request ever waits for a compile."""
        shapes = self.buckets.shapes(max_batch_tokens)
        started = time.perf_counter()
        for rows, length in shapes:
            self([np.ones(length, dtype=np.int32)] * rows)
        logger.info("warmed up %d shapes in %.1fs", len(shapes), time.perf_counter() - started)
