"""The encoder interface: what the batcher calls, whichever backend runs it, and the padding every backend
shares. It imports no backend; embedding_service.backend_choice picks and loads one."""

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from embedding_service.buckets import Buckets
from embedding_service.int8_manifest import Int8Manifest
from embedding_service.manifest import EncoderManifest

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
Backend = Literal["tensorflow", "openvino"]
# What the encoder's arithmetic runs at: it changes the vectors (within a tolerance), so the cache keys on it
# and every answer says it. bf16: OpenVINO's bf16 hint, or TensorFlow's oneDNN auto mixed precision on CPU;
# fp16: TensorFlow's auto mixed precision on a GPU; int8: the OpenVINO IR quantized ahead of time
# (models.quantize_encoder), its other operations in fp32. See docs/precision.md.
Precision = Literal["fp32", "bf16", "fp16", "int8"]


@dataclass(frozen=True)
class Embedding:
    sentence: FloatArray  # [D], pooled and normalised as the manifest says
    length: int  # tokens the text ran with, special tokens included
    tokens: FloatArray | None  # [length, D], the last hidden state without padding; None: not asked for

    def token_vectors(self) -> FloatArray:
        if self.tokens is None:
            raise ValueError("this embedding was computed without token vectors (pooled only, or from the cache)")
        return self.tokens


class Encoder(Protocol):
    """Runs padded batches of token ids. Not thread-safe: the batcher calls it from one thread."""

    manifest: EncoderManifest
    buckets: Buckets  # the shapes it pads batches to
    backend: Backend
    device: str
    precision: Precision  # what it really runs at, which may be less than what was asked for
    int8: Int8Manifest | None  # at int8: the build it runs (its fidelity, the head versions it checked)
    threads: int  # threads one encoder call uses

    def __call__(self, batch: list[IntArray], *, token_vectors: bool = False) -> list[Embedding]:
        """Each text's sentence vector, and its token vectors only when `token_vectors`: a pooled batch
        never materialises the `[batch, tokens, D]` output."""
        ...

    def warm_up(self, max_batch_tokens: int) -> None:
        """Whatever makes the first request as fast as the next: compiles, allocations."""
        ...


def padded(batch: list[IntArray], rows: int, length: int) -> tuple[IntArray, IntArray]:
    """Token ids and attention mask of `rows` x `length`, zero-padded."""
    input_ids = np.zeros((rows, length), dtype=np.int32)
    mask = np.zeros((rows, length), dtype=np.int32)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask


def embeddings(batch: list[IntArray], sentences: FloatArray, tokens: FloatArray | None) -> list[Embedding]:
    return [
        Embedding(sentences[row], len(ids), None if tokens is None else tokens[row, : len(ids)])
        for row, ids in enumerate(batch)
    ]


def sentence_vectors(encoder: Encoder, batch: list[IntArray]) -> FloatArray:
    """The texts' sentence vectors, [texts, D], run in batches the encoder takes (its largest bucket)."""
    size = encoder.buckets.batch_sizes[-1]
    return np.stack([e.sentence for start in range(0, len(batch), size) for e in encoder(batch[start : start + size])])
