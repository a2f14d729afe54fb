"""The OpenVINO backend: the exported SavedModel read as it is by OpenVINO's TensorFlow front end (or, for
int8, the IR quantized ahead of time beside it), run on the CPU at any shape (no compile per shape, so no
padding to buckets and a start in seconds), at the precision asked for. The default on CPU
(embedding_service.backend_choice.resolve_backend)."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino.frontend import FrontEndManager

from embedding_service.buckets import Buckets
from embedding_service.encoder import Backend, Embedding, IntArray, Precision, embeddings, padded
from embedding_service.host import cores
from embedding_service.int8_manifest import INT8_DIR, INT8_MODEL, Int8Manifest
from embedding_service.manifest import SAVED_MODEL_DIR, EncoderManifest

logger = logging.getLogger(__name__)

# OpenVINO's element type names (ov.Type.get_type_name) of the precisions it runs the floating-point
# operations at. int8's quantized operations run int8 whatever the hint; the others stay fp32.
_OV_TYPES: dict[Precision, str] = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_RAN: dict[str, Precision] = {"f32": "fp32", "bf16": "bf16"}


def read_model(export_dir: Path, precision: Precision) -> ov.Model:
    """The graph to compile: the SavedModel, or for int8 the quantized IR (refused unless it was built from
    this very export)."""
    return _graph(export_dir, checked_int8(export_dir) if precision == "int8" else None)


def checked_int8(export_dir: Path) -> Int8Manifest:
    """The int8 build's manifest, refused unless it was quantized from this very export."""
    int8 = Int8Manifest.read(export_dir)
    identity = EncoderManifest.read(export_dir).identity
    if int8.identity != identity:
        raise ValueError(
            f"{export_dir / INT8_DIR} was quantized from encoder {int8.identity}, not this export's {identity}: "
            "rebuild it (`make models-int8`)"
        )
    return int8


def _graph(export_dir: Path, int8: Int8Manifest | None) -> ov.Model:
    if int8 is None:
        front_end = FrontEndManager().load_by_framework("tf")
        return front_end.convert(front_end.load(str(export_dir / SAVED_MODEL_DIR)))
    return ov.Core().read_model(str(export_dir / INT8_DIR / INT8_MODEL))


class OpenVINOEncoder:
    backend: Backend = "openvino"
    device = "CPU"

    def __init__(
        self,
        export_dir: Path,
        buckets: Buckets,
        *,
        threads: int = 0,
        precision: Precision = "fp32",
        model: ov.Model | None = None,
    ) -> None:
        """`model`: the graph read_model(export_dir, precision) gives, when the caller has read it already."""
        if precision not in _OV_TYPES:
            raise ValueError(f"the openvino backend runs fp32, bf16 or int8, not {precision}")
        self.manifest = EncoderManifest.read(export_dir)
        self.buckets = buckets
        # The int8 build of record: none when the caller brings the graph (the int8 build measuring the
        # model it has not written yet, or auto's shared fp32 graph).
        self.int8 = checked_int8(export_dir) if precision == "int8" and model is None else None
        self._model = model or _graph(export_dir, self.int8)
        self._config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",  # one stream: the batcher runs one call at a time
            # OpenVINO's CPU default on bf16-capable CPUs is bf16: fp32 (and int8's float parts) must ask for f32.
            "INFERENCE_PRECISION_HINT": _OV_TYPES[precision],
            "INFERENCE_NUM_THREADS": threads or cores(),
        }
        pooled = ov.Model([self._model.output("sentence_embedding")], self._model.get_parameters(), "sentences")
        compiled = ov.Core().compile_model(pooled, self.device, self._config)
        self._sentences = compiled.create_infer_request()
        self._everything: Any = None  # token-level batches' request, compiled at warm-up (auto drops a candidate)
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        # What the compiled model really runs at: a CPU without bf16 ignores the hint and runs f32.
        ran = _precision(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision: Precision = "int8" if precision == "int8" else ran
        if self.precision != precision:
            logger.warning("%s was asked for, but this CPU runs the encoder in %s", precision, self.precision)
        logger.info(
            "encoder %s loaded: backend %s on CPU (precision=%s, threads=%d)",
            self.manifest.model_name,
            runtime_version(),
            self.precision,
            self.threads,
        )

    def __call__(self, batch: list[IntArray], *, token_vectors: bool = False) -> list[Embedding]:
        rows = self.buckets.batch_size(len(batch))
        length = self.buckets.seq_length(max(len(ids) for ids in batch))
        input_ids, mask = padded(batch, rows, length)
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if not token_vectors:
            sentences = self._sentences.infer(feed, share_inputs=True)[0]
            return embeddings(batch, np.asarray(sentences, dtype=np.float32), None)
        everything = self._whole()
        outputs = everything.infer(feed, share_inputs=True)
        sentences = np.asarray(outputs["sentence_embedding"], dtype=np.float32)
        return embeddings(batch, sentences, np.asarray(outputs["token_embeddings"], dtype=np.float32))

    def warm_up(self, max_batch_tokens: int) -> None:
        """One call of each request kind: OpenVINO compiled the graphs for every shape when it loaded them."""
        self([np.ones(16, dtype=np.int32)])
        self([np.ones(16, dtype=np.int32)], token_vectors=True)

    def _whole(self) -> Any:
        """The whole graph's request (another pooling, or the token vectors themselves), compiled once."""
        if self._everything is None:
            self._everything = ov.Core().compile_model(self._model, self.device, self._config).create_infer_request()
        return self._everything


def _precision(element_type: ov.Type) -> Precision:
    name = element_type.get_type_name()
    if name not in _RAN:
        raise ValueError(f"OpenVINO runs the encoder in {name}, which this service does not report")
    return _RAN[name]


def runtime_version() -> str:
    return f"openvino {ov.get_version()}"
