"""The OpenVINO backend: the exported SavedModel read as it is by OpenVINO's TensorFlow front end, run on
the CPU at any shape (no compile per shape, so no padding to buckets and a start in seconds), in fp32
unless bf16 is asked for. The default on CPU (embedding_service.backend_choice.resolve_backend)."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino.frontend import FrontEndManager

from embedding_service.buckets import Buckets
from embedding_service.encoder import Backend, Embedding, IntArray, Precision, embeddings, padded
from embedding_service.host import cores
from embedding_service.manifest import SAVED_MODEL_DIR, EncoderManifest

logger = logging.getLogger(__name__)

# OpenVINO's element type names (ov.Type.get_type_name) of the precisions it may run at, and ours.
_OV_TYPES: dict[Precision, str] = {"fp32": "f32", "bf16": "bf16"}


class OpenVINOEncoder:
    backend: Backend = "openvino"
    device = "CPU"

    def __init__(self, export_dir: Path, buckets: Buckets, *, threads: int = 0, bf16: bool = False) -> None:
        self.manifest = EncoderManifest.read(export_dir)
        self.buckets = buckets
        front_end = FrontEndManager().load_by_framework("tf")
        model = front_end.convert(front_end.load(str(export_dir / SAVED_MODEL_DIR)))
        asked: Precision = "bf16" if bf16 else "fp32"
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",  # one stream: the batcher runs one call at a time
            # OpenVINO's CPU default on bf16-capable CPUs is bf16: fp32 holds the fidelity contract.
            "INFERENCE_PRECISION_HINT": _OV_TYPES[asked],
            "INFERENCE_NUM_THREADS": threads or cores(),
        }
        core = ov.Core()
        pooled = ov.Model([model.output("sentence_embedding")], model.get_parameters(), "sentences")
        self._sentences = core.compile_model(pooled, self.device, config).create_infer_request()
        # Token-level batches (another pooling, or the token vectors themselves) run the whole graph.
        everything = core.compile_model(model, self.device, config)
        self._everything = everything.create_infer_request()
        self._token_output = everything.output("token_embeddings")
        self._sentence_output = everything.output("sentence_embedding")
        self.threads = int(everything.get_property("INFERENCE_NUM_THREADS"))
        # What the compiled model really runs at: a CPU without bf16 ignores the hint and runs f32.
        self.precision: Precision = _precision(everything.get_property("INFERENCE_PRECISION_HINT"))
        if self.precision != asked:
            logger.warning("%s was asked for, but this CPU runs the encoder in %s", asked, self.precision)
        logger.info(
            "encoder %s loaded: backend openvino %s on CPU (precision=%s, threads=%d)",
            self.manifest.model_name,
            ov.get_version(),
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
        outputs = self._everything.infer(feed, share_inputs=True)
        sentences = np.asarray(outputs[self._sentence_output], dtype=np.float32)
        return embeddings(batch, sentences, np.asarray(outputs[self._token_output], dtype=np.float32))

    def warm_up(self, max_batch_tokens: int) -> None:
        """One call of each request kind: OpenVINO compiled the graphs for every shape when it loaded them."""
        self([np.ones(16, dtype=np.int32)])
        self([np.ones(16, dtype=np.int32)], token_vectors=True)


def _precision(element_type: ov.Type) -> Precision:
    name = element_type.get_type_name()
    for precision, ov_name in _OV_TYPES.items():
        if ov_name == name:
            return precision
    raise ValueError(f"OpenVINO runs the encoder in {name}, which this service does not report")
