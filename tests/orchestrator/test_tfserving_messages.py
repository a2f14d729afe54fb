"""The orchestrator's TF Serving messages against the official generated ones: same wire, no TensorFlow."""

import subprocess
import sys

import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from orchestrator.clients import tfserving_messages as ours
from orchestrator.clients.head_grpc import float_array, tensor
from stack.services import ROOT

PAIRS = [
    (ours.PredictRequest, predict_pb2.PredictRequest),
    (ours.PredictResponse, predict_pb2.PredictResponse),
    (ours.GetModelStatusRequest, get_model_status_pb2.GetModelStatusRequest),
    (ours.GetModelStatusResponse, get_model_status_pb2.GetModelStatusResponse),
    (ours.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest),
    (ours.GetModelMetadataResponse, get_model_metadata_pb2.GetModelMetadataResponse),
    (ours.SignatureDefMap, get_model_metadata_pb2.SignatureDefMap),
    (ours.ModelServerConfig, model_server_config_pb2.ModelServerConfig),
]


def _wire_type(field: FieldDescriptor) -> int:
    return FieldDescriptor.TYPE_INT32 if field.type == FieldDescriptor.TYPE_ENUM else field.type


def _assert_subset(mine: Descriptor, official: Descriptor, seen: set[str]) -> None:
    if mine.full_name in seen:
        return
    seen.add(mine.full_name)
    assert mine.full_name == official.full_name
    for field in mine.fields:
        upstream = official.fields_by_name.get(field.name)
        assert upstream is not None, f"{mine.full_name}.{field.name} is not upstream's"
        assert (field.number, _wire_type(field)) == (upstream.number, _wire_type(upstream)), field.full_name
        assert field.is_repeated == upstream.is_repeated, field.full_name
        if field.message_type is not None:
            _assert_subset(field.message_type, upstream.message_type, seen)


@pytest.mark.parametrize(("mine", "official"), PAIRS, ids=lambda c: getattr(c, "__name__", ""))
def test_every_field_has_upstreams_name_number_and_wire_type(mine: type, official: type) -> None:
    _assert_subset(mine.DESCRIPTOR, official.DESCRIPTOR, set())


def test_a_request_we_send_reads_the_same_with_the_official_stubs() -> None:
    embeddings = np.random.default_rng(0).normal(size=(3, 384)).astype(np.float32)
    request = ours.PredictRequest()
    request.model_spec.name = "head"
    request.model_spec.signature_name = "labels"
    request.model_spec.version.value = 7
    request.inputs["embeddings"].CopyFrom(tensor(embeddings))
    official = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert (official.model_spec.name, official.model_spec.version.value) == ("head", 7)
    assert official.model_spec.signature_name == "labels"
    decoded = official.inputs["embeddings"]
    assert decoded.dtype == 1  # DT_FLOAT
    assert [d.size for d in decoded.tensor_shape.dim] == [3, 384]
    np.testing.assert_array_equal(np.frombuffer(decoded.tensor_content, "<f4").reshape(3, 384), embeddings)


def test_official_responses_read_the_same_with_ours() -> None:
    official = predict_pb2.PredictResponse()
    official.model_spec.name = "head"
    official.model_spec.version.value = 3
    probabilities = official.outputs["probabilities"]
    probabilities.dtype = 1
    probabilities.tensor_shape.dim.add(size=2)
    probabilities.tensor_shape.dim.add(size=2)
    probabilities.float_val.extend([0.25, 0.75, 0.5, 0.5])  # typed values rather than tensor_content
    labels = official.outputs["labels"]
    labels.dtype = 7
    labels.tensor_shape.dim.add(size=1)
    labels.tensor_shape.dim.add(size=2)
    labels.string_val.extend([b"negative", b"positive"])
    response = ours.PredictResponse.FromString(official.SerializeToString())
    assert response.model_spec.version.value == 3
    np.testing.assert_array_equal(float_array(response.outputs["probabilities"]), [[0.25, 0.75], [0.5, 0.5]])
    assert list(response.outputs["labels"].string_val) == [b"negative", b"positive"]

    status = get_model_status_pb2.GetModelStatusResponse()
    status.model_version_status.add(version=2, state=30)
    status.model_version_status.add(version=1, state=40)
    mine = ours.GetModelStatusResponse.FromString(status.SerializeToString())
    assert [(s.version, s.state) for s in mine.model_version_status] == [(2, ours.AVAILABLE), (1, 40)]


def test_the_orchestrator_never_imports_tensorflow() -> None:
    probe = "import sys, orchestrator.app, orchestrator.cli; print(sorted(m for m in sys.modules if 'tensorflow' in m))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_tensor_that_is_not_float32_is_refused_not_misread() -> None:
    doubles = ours.TensorProto(dtype=2, tensor_content=np.ones(2, "<f8").tobytes())  # DT_DOUBLE
    doubles.tensor_shape.dim.add(size=2)
    with pytest.raises(ValueError, match="DT_FLOAT"):
        float_array(doubles)
    short = tensor(np.ones((2, 3), np.float32))
    short.tensor_content = short.tensor_content[:-4]
    with pytest.raises(ValueError):
        float_array(short)
