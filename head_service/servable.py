"""One loaded model version: its signatures (as TF Serving reads them from saved_model.pb) and how to run them."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from head_service.errors import invalid_argument
from head_service.json_decode import InputSpec

logger = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
Arrays = dict[str, np.ndarray]
PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass(frozen=True)
class Signature:
    key: str
    proto: meta_graph_pb2.SignatureDef
    function: Any  # the loaded concrete function, called with one keyword per input alias

    @property
    def inputs(self) -> dict[str, InputSpec]:
        return {alias: _spec(info) for alias, info in self.proto.inputs.items()}

    def check_input_names(self, given: set[str]) -> None:
        """TF Serving's messages for a request whose input names do not match the signature."""
        expected = set(self.proto.inputs)
        if len(given) != len(expected):
            extra, missing = sorted(given - expected), sorted(expected - given)
            raise invalid_argument(
                f"input size does not match signature: {len(given)}!={len(expected)} "
                f"len({{{','.join(sorted(given))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
            )
        for alias in sorted(given - expected):
            raise invalid_argument(
                f"Signature input alias: {alias} not found in request and no default value provided. "
                f"Inputs expected to be in the set {{{','.join(sorted(expected))}}}."
            )

    def run(self, inputs: dict[str, np.ndarray], output_filter: list[str]) -> dict[str, np.ndarray]:
        for position, (alias, spec) in enumerate(sorted(self.inputs.items())):
            given = inputs[alias].dtype
            if given != spec.dtype and not (spec.dtype == np.object_ and given.kind in "SUO"):
                raise invalid_argument(
                    f"Expects arg[{position}] to be {_tf_name(spec.dtype)} but {_tf_name(given)} is provided"
                )
        for alias in output_filter:
            if alias not in self.proto.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(self.proto.outputs))}}}."
                )
        try:
            outputs = self.function(**{alias: tf.constant(value) for alias, value in inputs.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise invalid_argument(str(getattr(exc, "message", exc))) from exc
        wanted = output_filter or list(outputs)
        return {alias: outputs[alias].numpy() for alias in wanted}


def _spec(info: meta_graph_pb2.TensorInfo) -> InputSpec:
    shape = (
        None if info.tensor_shape.unknown_rank else tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim)
    )
    dtype = np.dtype(object) if info.dtype == types_pb2.DT_STRING else tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
    return InputSpec(dtype=np.dtype(dtype), shape=shape)


def _tf_name(dtype: np.dtype) -> str:
    """The TF runtime's name for a dtype, as its errors print it: float, double, int64, string."""
    enum = types_pb2.DT_STRING if dtype.kind in "SUO" else tf.dtypes.as_dtype(dtype).as_datatype_enum
    return str(types_pb2.DataType.Name(enum)).removeprefix("DT_").lower()


class Servable:
    """A model version loaded from `<base_path>/<version>`; immutable once loaded."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name = name
        self.version = version
        self.path = path
        meta_graph = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes()).meta_graphs[0]
        self._model = tf.saved_model.load(str(path))
        self.signatures = {
            key: Signature(key, proto, self._model.signatures[key])
            for key, proto in meta_graph.signature_def.items()
            if key in self._model.signatures
        }

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """What GetModelMetadata reports for this version."""
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self.signatures.items():
            signature_map.signature_def[key].CopyFrom(signature.proto)
        return signature_map

    def signature(self, key: str) -> Signature | None:
        return self.signatures.get(key or "serving_default")

    def warm_up(self) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` (PredictionLog records) as TF Serving does;
        a failing record fails the load. Returns how many records ran."""
        path = self.path / WARMUP_FILE
        if not path.is_file():
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(str(path)):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                raise invalid_argument("only predict_log warm-up records are supported")
            request = log.predict_log.request
            signature = self.signature(request.model_spec.signature_name)
            if signature is None:
                raise invalid_argument(f"warm-up record names unknown signature {request.model_spec.signature_name!r}")
            signature.run({k: tf.make_ndarray(v) for k, v in request.inputs.items()}, list(request.output_filter))
            count += 1
        return count
