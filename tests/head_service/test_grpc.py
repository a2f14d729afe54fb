"""The official tensorflow-serving-api stubs against the running head service, and TF Serving's gRPC errors."""

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from embedding_service.manifest import EncoderManifest
from tests.conftest import DEFAULT_ENCODER, HeadServer

pytestmark = pytest.mark.slow

DIM = 384


@pytest.fixture
def channel(head_server: HeadServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(head_server.grpc_target) as channel:
        yield channel


def predict_request(
    x: np.ndarray,
    *,
    name: str = "sentiment",
    signature: str = "",
    alias: str = "embeddings",
    version: int | None = None,
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(x))
    return request


def embeddings(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).normal(size=(rows, DIM)).astype(np.float32)


def test_predict_with_tensor_content_and_with_float_val_agree(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = embeddings(3)
    packed = predict_request(x)
    assert packed.inputs["embeddings"].tensor_content  # make_tensor_proto packs the bytes
    typed = predict_pb2.PredictRequest()
    typed.CopyFrom(packed)
    typed.inputs["embeddings"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=packed.inputs["embeddings"].tensor_shape,
            float_val=x.ravel().tolist(),
        )
    )
    first, second = stub.Predict(packed, timeout=10), stub.Predict(typed, timeout=10)
    probabilities = tf.make_ndarray(first.outputs["probabilities"])
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities, tf.make_ndarray(second.outputs["probabilities"]))
    assert first.outputs["probabilities"].float_val  # typed fields out, as TF Serving answers by default
    assert (first.model_spec.name, first.model_spec.version.value, first.model_spec.signature_name) == (
        "sentiment",
        1,
        "serving_default",
    )


def test_labels_travel_with_the_version(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(embeddings(2), signature="labels"), timeout=10)
    labels = tf.make_ndarray(response.outputs["labels"])
    assert [[s.decode() for s in row] for row in labels] == [["negative", "positive"]] * 2


def test_the_encoder_stamp_travels_with_the_version(channel: grpc.Channel) -> None:
    """The `encoder` signature as any TF Serving client reads it: one row per input row."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(embeddings(3), signature="encoder"), timeout=10)
    stamp = tf.make_ndarray(response.outputs["encoder"])
    assert stamp.shape == (3, 1)
    assert {s.decode() for s in stamp.ravel()} == {EncoderManifest.read(DEFAULT_ENCODER).identity}
    assert response.model_spec.signature_name == "encoder"


def test_metadata_and_status(channel: grpc.Channel) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "sentiment"
    metadata = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert serving.inputs["embeddings"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in serving.inputs["embeddings"].tensor_shape.dim] == [-1, DIM]
    assert [d.size for d in serving.outputs["probabilities"].tensor_shape.dim] == [-1, 2]
    assert set(signatures.signature_def) == {"serving_default", "labels", "encoder"}
    encoder = signatures.signature_def["encoder"]
    assert encoder.method_name == "tensorflow/serving/predict"
    assert [d.size for d in encoder.inputs["embeddings"].tensor_shape.dim] == [-1, DIM]
    assert encoder.outputs["encoder"].dtype == types_pb2.DT_STRING
    assert [d.size for d in encoder.outputs["encoder"].tensor_shape.dim] == [-1, 1]

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "sentiment"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=10)
    assert [(v.version, v.state) for v in status.model_version_status][-1] == (
        1,
        get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    )


def _double(x: np.ndarray) -> predict_pb2.PredictRequest:
    return predict_request(x.astype(np.float64))


GRPC_ERRORS = [
    (
        lambda: predict_request(embeddings(1), name="nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    (
        lambda: predict_request(embeddings(1), version=99),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(sentiment, 99)",
    ),
    (lambda: predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    (
        lambda: predict_request(embeddings(1), signature="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    (
        lambda: predict_request(embeddings(1), alias="x"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Signature input alias: x not found in request",
    ),
    (
        lambda: _double(embeddings(1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but double is provided",
    ),
    (
        lambda: predict_request(embeddings(1)[:, :3]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Matrix size-incompatible: In[0]: [1,3]",
    ),
]


@pytest.mark.parametrize(("make", "code", "message"), GRPC_ERRORS)
def test_errors_carry_tf_serving_codes(
    channel: grpc.Channel, make: object, code: grpc.StatusCode, message: str
) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(make(), timeout=10)  # type: ignore[operator]
    assert raised.value.code() == code
    assert message in raised.value.details()
    assert stub.Predict(predict_request(embeddings(1)), timeout=10).outputs["probabilities"]


def test_missing_and_extra_inputs_are_named(channel: grpc.Channel) -> None:
    request = predict_request(embeddings(1))
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto(np.zeros(1, np.float32)))
    with pytest.raises(grpc.RpcError) as raised:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input size does not match signature: 2!=1" in raised.value.details()
    assert "Sent extra: {extra}" in raised.value.details()


def test_output_filter_and_unknown_output(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request(embeddings(2))
    request.output_filter.append("probabilities")
    assert set(stub.Predict(request, timeout=10).outputs) == {"probabilities"}
    request.output_filter[:] = ["z"]
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=10)
    assert "output tensor alias not found in signature: z" in raised.value.details()


def test_status_errors_and_classify_on_a_predict_only_model(channel: grpc.Channel) -> None:
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as raised:
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=10)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "sentiment"
    with pytest.raises(grpc.RpcError) as raised:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(classify, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expected classification signature method_name to be tensorflow/serving/classify" in raised.value.details()
