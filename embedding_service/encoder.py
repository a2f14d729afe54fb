"""The encoder runtime interface: what the batcher calls, whichever backend runs it, and the choice of
backend. The backends (embedding_service.tf_encoder, embedding_service.ov_encoder) run the same exported
SavedModel; each is imported only when chosen, so the OpenVINO service never loads TensorFlow."""

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from embedding_service.buckets import Buckets
from embedding_service.manifest import EncoderManifest

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
Backend = Literal["tensorflow", "openvino"]
BackendSetting = Literal["auto", "tensorflow", "openvino"]


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


def cores() -> int:
    """The CPU cores this process may run on: its affinity, capped by a cgroup v2 CPU quota (a container's
    CPU limit), so that a 4-core pod on a 64-core node does not start 64 encoder threads."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def gpu_visible() -> bool:
    """An NVIDIA GPU this process may use, seen without importing TensorFlow: the driver lists a GPU, and
    CUDA_VISIBLE_DEVICES does not hide them all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def resolve_backend(setting: BackendSetting) -> Backend:
    """`auto`: TensorFlow on a GPU (XLA, mixed precision); on CPU OpenVINO when it is installed, which runs
    the same SavedModel faster on the CPUs measured (perf/backends_bench.py) and starts in seconds."""
    if setting != "auto":
        return setting
    if gpu_visible() or importlib.util.find_spec("openvino") is None:
        return "tensorflow"
    return "openvino"


def load_encoder(
    backend: Backend,
    export_dir: Path,
    *,
    max_batch_size: int,
    threads: int,
    xla: bool,
    mixed_precision: bool,
) -> Encoder:
    """The chosen backend's encoder for `export_dir`; `threads` 0 is the backend's default (every core)."""
    manifest = EncoderManifest.read(export_dir)
    if backend == "openvino":
        from embedding_service.ov_encoder import OpenVINOEncoder

        buckets = Buckets.exact(max_batch_size, manifest.max_seq_length)
        return OpenVINOEncoder(export_dir, buckets, threads=threads, bf16=mixed_precision)
    from embedding_service.tf_encoder import TFEncoder

    return TFEncoder(
        export_dir,
        Buckets.default(max_batch_size, manifest.max_seq_length),
        xla=xla,
        mixed_precision=mixed_precision,
        threads=threads,
    )
