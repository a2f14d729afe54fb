"""HeadGrpcClient: TF Serving's PredictionService/ModelService over one grpc.aio channel, tensor_content."""

import time
from typing import Any, Self

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from orchestrator.clients import tfserving_messages as pb
from orchestrator.clients.head import (
    EMBEDDINGS_INPUT,
    HOP,
    MALFORMED,
    PROBABILITIES_SIGNATURE,
    ModelNotFoundError,
    Signatures,
    head_error,
    unreached,
)
from orchestrator.metrics import STAGE_SECONDS
from orchestrator.retry import UnreachedRetries
from orchestrator.settings import OrchestratorSettings
from service_common import tracing
from service_common.deadline import Deadline
from service_common.logs import request_id_var
from service_common.middleware import REQUEST_ID_HEADER

# A restarted head is found again within a second: gRPC's default reconnect backoff grows to 120 s.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # With a `dns:///` target naming several replicas (a headless Service), spread calls over all of
    # them; one HTTP/2 connection would otherwise carry every call to one replica.
    ("grpc.lb_policy_name", "round_robin"),
]


def tensor(array: np.ndarray) -> Any:
    proto = pb.TensorProto(dtype=pb.DT_FLOAT, tensor_content=np.ascontiguousarray(array, dtype="<f4").tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def float_array(proto: Any) -> np.ndarray:
    """A DT_FLOAT tensor as an array; ValueError for any other dtype or a size that does not fit its shape."""
    if proto.dtype != pb.DT_FLOAT:
        raise ValueError(f"expected DT_FLOAT, got dtype {proto.dtype}")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype="<f4").reshape(shape)
    return np.asarray(proto.float_val, dtype=np.float32).reshape(shape)


def _unreached(exc: Exception) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and unreached(exc.code().name, exc.details() or "")


class HeadGrpcClient:
    def __init__(self, settings: OrchestratorSettings) -> None:
        self.target = settings.head_grpc_target
        self._settings = settings
        self._retries = UnreachedRetries(HOP, self.target, settings, _unreached)
        self._channel = grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        self._predict = self._channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )
        self._status = self._channel.unary_unary(
            "/tensorflow.serving.ModelService/GetModelStatus",
            request_serializer=pb.GetModelStatusRequest.SerializeToString,
            response_deserializer=pb.GetModelStatusResponse.FromString,
        )
        self._metadata = self._channel.unary_unary(
            "/tensorflow.serving.PredictionService/GetModelMetadata",
            request_serializer=pb.GetModelMetadataRequest.SerializeToString,
            response_deserializer=pb.GetModelMetadataResponse.FromString,
        )

    async def __aenter__(self) -> Self:
        return self

    @property
    def down(self) -> str | None:
        return self.target if self._retries.down else None

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def predict(self, model: str, version: int, embeddings: np.ndarray, deadline: Deadline) -> np.ndarray:
        request = self._request(model, version, PROBABILITIES_SIGNATURE, embeddings)
        started = time.perf_counter()
        try:
            response = await self._call(self._predict, request, deadline)
        finally:
            STAGE_SECONDS.labels("head_call").observe(time.perf_counter() - started)
        try:
            return float_array(response.outputs["probabilities"])
        except (KeyError, ValueError) as exc:
            raise head_error(MALFORMED, repr(exc), where=self.target, timeout_s=0) from None

    async def constants(
        self, model: str, version: int, signature: str, dimensions: int, deadline: Deadline
    ) -> list[str]:
        request = self._request(model, version, signature, np.zeros((1, dimensions), np.float32))
        response = await self._call(self._predict, request, deadline)
        try:
            row = response.outputs[signature]
            width = row.tensor_shape.dim[-1].size
            return [value.decode() for value in row.string_val[:width]]
        except (KeyError, IndexError, ValueError) as exc:
            raise head_error(MALFORMED, repr(exc), where=self.target, timeout_s=0) from None

    async def versions(self, model: str, timeout_s: float) -> list[int]:
        request = pb.GetModelStatusRequest()
        request.model_spec.name = model
        try:
            response = await self._call(self._status, request, Deadline(timeout_s))
        except ModelNotFoundError:  # no version of the model is loaded (yet), or no such model
            return []
        return sorted(s.version for s in response.model_version_status if s.state == pb.AVAILABLE)

    async def signatures(self, model: str, version: int, timeout_s: float) -> Signatures:
        request = pb.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        request.model_spec.version.value = version
        response = await self._call(self._metadata, request, Deadline(timeout_s))
        try:
            signatures = pb.SignatureDefMap.FromString(response.metadata["signature_def"].value).signature_def
            dims = signatures[PROBABILITIES_SIGNATURE].inputs[EMBEDDINGS_INPUT].tensor_shape.dim
        except (KeyError, ValueError, DecodeError) as exc:
            raise head_error(MALFORMED, repr(exc), where=self.target, timeout_s=0) from None
        return Signatures(dims[-1].size if dims and dims[-1].size > 0 else None, frozenset(signatures))

    def _request(self, model: str, version: int, signature: str, embeddings: np.ndarray) -> Any:
        request = pb.PredictRequest()
        request.model_spec.name = model
        request.model_spec.version.value = version
        request.model_spec.signature_name = signature
        request.inputs[EMBEDDINGS_INPUT].CopyFrom(tensor(embeddings))
        return request

    async def _call(self, method: grpc.aio.UnaryUnaryMultiCallable, request: Any, deadline: Deadline) -> Any:
        timeout_s = deadline.budget_s(self._settings.head_timeout_s)
        hop_deadline = Deadline(timeout_s)
        carrier = {REQUEST_ID_HEADER: request_id_var.get()}
        tracing.inject(carrier)
        metadata = tuple(carrier.items())
        try:
            return await self._retries.call(
                lambda: method(request, timeout=hop_deadline.remaining_s(), metadata=metadata), hop_deadline
            )
        except grpc.aio.AioRpcError as exc:
            raise head_error(exc.code().name, exc.details() or "", where=self.target, timeout_s=timeout_s) from None
