"""The choice of encoder backend and its loading. Each backend (embedding_service.tf_encoder,
embedding_service.ov_encoder) is imported only when chosen, so the OpenVINO service never loads TensorFlow."""

import importlib.util
from pathlib import Path
from typing import Literal

from embedding_service.buckets import Buckets
from embedding_service.encoder import Backend, Encoder
from embedding_service.host import gpu_visible
from embedding_service.manifest import EncoderManifest

BackendSetting = Literal["auto", "tensorflow", "openvino"]


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
