"""TF Serving's gRPC API (port 8500): PredictionService and ModelService on the official stubs' servicers."""

import math
import time
from typing import Any, NoReturn

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from head_service.errors import HeadError, invalid_argument
from head_service.runner import Runner
from head_service.servable import PREDICT_METHOD, Servable
from service_common import tracing

_METHOD_FOR = {"Classify": "classification", "Regress": "regression", "MultiInference": "classification"}
_METHOD_NAME = {"classification": "tensorflow/serving/classify", "regression": "tensorflow/serving/regress"}
# As in TF, one value fills a whole shape, so a tiny request can claim any size: this bounds what one input may
# allocate (2**25 elements: 128 MiB of float32, far past any real batch of embeddings).
_MAX_TENSOR_ELEMENTS = 2**25


def _as_tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """Typed repeated fields (float_val ...), TF Serving's default output encoding, not tensor_content."""
    proto = tf.make_tensor_proto(value)
    if value.dtype != np.object_ and proto.tensor_content:
        typed = tensor_pb2.TensorProto(dtype=proto.dtype, tensor_shape=proto.tensor_shape)
        field = {np.float32: "float_val", np.float64: "double_val", np.int64: "int64_val", np.bool_: "bool_val"}
        getattr(typed, field.get(value.dtype.type, "int_val")).extend(value.ravel().tolist())
        return typed
    return proto


def _ndarray(alias: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    if math.prod(dim.size for dim in proto.tensor_shape.dim) > _MAX_TENSOR_ELEMENTS:
        raise invalid_argument(f"tensor parsing error: {alias}")  # TF Serving's message for a tensor it cannot build
    try:
        array: np.ndarray = tf.make_ndarray(proto)
    except (TypeError, ValueError) as exc:
        raise invalid_argument(f"Malformed TensorProto: {exc}") from exc
    return array


def _resolve(runner: Runner, spec: model_pb2.ModelSpec, has_spec: bool) -> Servable:
    if not has_spec:
        raise invalid_argument("Missing ModelSpec")
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    return runner.manager.resolve(spec.name, version, label)


async def _abort(context: grpc.aio.ServicerContext, error: HeadError) -> NoReturn:
    """Ends the call with TF Serving's code and message; `context.abort` raises, so this never returns."""
    await context.abort(error.code, error.grpc_details)
    raise AssertionError("grpc.aio's abort returned")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def Predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        name = request.model_spec.name
        try:
            servable = _resolve(self.runner, request.model_spec, request.HasField("model_spec"))
            key = request.model_spec.signature_name or "serving_default"
            signature = servable.signature(key)
            if signature is None:
                raise HeadError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
            signature.check_input_names(set(request.inputs))
            inputs = {alias: _ndarray(alias, tensor) for alias, tensor in request.inputs.items()}
            metadata = dict(context.invocation_metadata() or ())
            with tracing.served("predict", metadata, {"model.name": name, "rpc.system": "grpc"}):
                outputs = await self.runner.run(servable, signature, inputs, list(request.output_filter), "Predict")
        except HeadError as error:
            self.runner.metrics.count_request(name, error.code.name)
            await _abort(context, error)
        self.runner.metrics.count_request(name, "OK")
        self.runner.metrics.observe_request(name, "Predict", "GRPC", time.perf_counter() - started)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = key
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(_as_tensor_proto(value))
        return response

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            servable = _resolve(self.runner, request.model_spec, request.HasField("model_spec"))
            if "signature_def" not in request.metadata_field:
                raise invalid_argument("Metadata field signature_def must be specified")
        except HeadError as error:
            await _abort(context, error)
        packed = any_pb2.Any()
        packed.Pack(servable.signature_def_map())
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].CopyFrom(packed)
        return response

    async def _unsupported(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """This model has only predict signatures, so Classify, Regress and MultiInference fail as in TF Serving."""
        try:
            specs = [task.model_spec for task in request.tasks] if method == "MultiInference" else [request.model_spec]
            for spec in specs or [model_pb2.ModelSpec()]:
                servable = _resolve(self.runner, spec, bool(spec.name) or spec.HasField("version"))
                signature = servable.signature(spec.signature_name)
                kind = _METHOD_FOR[method]
                raise invalid_argument(
                    f"Expected {kind} signature method_name to be {_METHOD_NAME[kind]}. "
                    f"Was: {signature.proto.method_name if signature else PREDICT_METHOD}"
                )
        except HeadError as error:
            await _abort(context, error)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unsupported("Classify", request, context)

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unsupported("Regress", request, context)

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unsupported("MultiInference", request, context)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            statuses = self.runner.manager.model(spec.name).status(version)
        except HeadError as error:
            await _abort(context, error)
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)

    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the stand-in takes its model config from --model_config_file only (re-read with "
            "--model_config_file_poll_wait_seconds)",
        )


def add_services(server: grpc.aio.Server, runner: Runner) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(runner), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(runner), server)
