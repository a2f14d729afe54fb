"""The choice of encoder backend and precision, and the encoder's loading. Each backend (embedding_service.
tf_encoder, embedding_service.ov_encoder) is imported only when chosen, so the OpenVINO service never loads
TensorFlow. EMBEDDING_PRECISION=auto measures fp32 against bf16 here (docs/precision.md)."""

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from embedding_service.buckets import Buckets
from embedding_service.encoder import Backend, Encoder, Precision
from embedding_service.host import cores, gpu_visible, native_bf16
from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
from embedding_service.precision import PrecisionChoice, PrecisionSetting, decide, explicit, unmeasured

BackendSetting = Literal["auto", "tensorflow", "openvino"]


def resolve_backend(setting: BackendSetting) -> Backend:
    """`auto`: TensorFlow on a GPU (XLA); on CPU OpenVINO when it is installed, which runs the same SavedModel
    faster on the CPUs measured (perf/backends_bench.py) and starts in seconds."""
    if setting != "auto":
        return setting
    if gpu_visible() or importlib.util.find_spec("openvino") is None:
        return "tensorflow"
    return "openvino"


def load_encoder(
    backend: Backend, export_dir: Path, *, precision: Precision, max_batch_size: int, threads: int, xla: bool
) -> Encoder:
    """The chosen backend's encoder for `export_dir` at `precision`; `threads` 0 is the backend's default
    (every core)."""
    manifest = EncoderManifest.read(export_dir)
    if backend == "openvino":
        from embedding_service.ov_encoder import OpenVINOEncoder

        buckets = Buckets.exact(max_batch_size, manifest.max_seq_length)
        return OpenVINOEncoder(export_dir, buckets, threads=threads, precision=precision)
    from embedding_service.tf_encoder import TFEncoder

    return TFEncoder(
        export_dir,
        Buckets.default(max_batch_size, manifest.max_seq_length),
        xla=xla,
        precision=precision,
        threads=threads,
    )


@dataclass(frozen=True)
class ChosenEncoder:
    encoder: Encoder
    choice: PrecisionChoice


def load_chosen(
    backend: Backend,
    export_dir: Path,
    *,
    setting: PrecisionSetting,
    max_batch_size: int,
    threads: int,
    xla: bool,
    memo_dir: Path | None,
) -> ChosenEncoder:
    """The encoder at the precision EMBEDDING_PRECISION names, or that `auto` decides: on the OpenVINO
    backend, on a CPU with native bf16, from a measurement of this model on this CPU (kept in `memo_dir`, or
    made now); fp32 anywhere else."""

    def load(precision: Precision) -> Encoder:
        return load_encoder(
            backend, export_dir, precision=precision, max_batch_size=max_batch_size, threads=threads, xla=xla
        )

    if setting != "auto":
        return ChosenEncoder(load(setting), explicit(setting))
    if backend != "openvino":
        why = "auto measures on the openvino backend; tensorflow runs fp32 unless EMBEDDING_PRECISION=bf16"
        return ChosenEncoder(load("fp32"), unmeasured(why))
    if not native_bf16():
        return ChosenEncoder(load("fp32"), unmeasured("this CPU has no native bf16 (AVX-512 BF16 or AMX)"))
    return _measured(export_dir, max_batch_size, threads, memo_dir)


def _measured(export_dir: Path, max_batch_size: int, threads: int, memo_dir: Path | None) -> ChosenEncoder:
    from embedding_service.ov_encoder import OpenVINOEncoder, read_model, runtime_version
    from embedding_service.precision_memo import PrecisionMemo, memo_key
    from embedding_service.precision_probe import measure
    from embedding_service.tokenizer import Tokenizer

    started = time.perf_counter()
    manifest = EncoderManifest.read(export_dir)
    memo = PrecisionMemo(memo_dir)
    key = memo_key(manifest.identity, runtime_version(), threads or cores())
    model = read_model(export_dir, "fp32")
    buckets = Buckets.exact(max_batch_size, manifest.max_seq_length)
    loaded: dict[Precision, Encoder] = {}

    def load(precision: Precision) -> Encoder:
        if precision not in loaded:
            loaded[precision] = OpenVINOEncoder(export_dir, buckets, threads=threads, precision=precision, model=model)
        return loaded[precision]

    remembered = memo.recall(key)
    measurement = remembered
    if measurement is None:
        tokenizer = Tokenizer(export_dir / TOKENIZER_DIR, manifest.max_seq_length)
        measurement = measure(load("fp32"), load("bf16"), tokenizer)
        memo.keep(key, measurement)
    chosen, reason = decide(measurement)
    choice = PrecisionChoice(
        setting="auto",
        chosen=chosen,
        reason=reason,
        measurement=measurement,
        remembered=remembered is not None,
        measured_s=None if remembered else round(time.perf_counter() - started, 3),
    )
    return ChosenEncoder(load(chosen), choice)
