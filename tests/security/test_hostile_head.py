"""Hostile requests against the real head (TF Serving protocol): NaN/Inf, wrong shapes and types, broken JSON and
protobufs, tensors that claim more elements than they carry. TF Serving's 4xx or gRPC codes (or a 200 where TF
Serving accepts the input), never a 5xx/INTERNAL, never a hang; the process stays up with bounded memory."""

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.conftest import HeadServer
from tests.security.hostile import CLIENT_TIMEOUT_S, MAX_RSS_GROWTH_MB, as_json, nested, post, rss_mb

pytestmark = pytest.mark.slow

DIM = 384
ROW = [0.1] * DIM
NON_FINITE_ROW = b"[" + b", ".join([b"NaN", b"Infinity", b"-Infinity"] * (DIM // 3)) + b"]"

# (case, body, status)
REST_CASES: list[tuple[str, bytes, int]] = [
    ("nan-inf-rows", b'{"instances": [' + NON_FINITE_ROW + b"]}", 200),
    ("nan-inf-columns", b'{"inputs": {"embeddings": [' + NON_FINITE_ROW + b"]}}", 200),
    ("huge-float", as_json({"instances": [[1e308] * DIM]}), 400),
    ("short-row", as_json({"instances": [ROW[:-1]]}), 400),
    ("scalar-rows", as_json({"instances": [0.1, 0.2]}), 400),
    ("rank-3", as_json({"instances": [[ROW]]}), 400),
    ("ragged", as_json({"instances": [ROW, ROW[:2]]}), 400),
    ("empty-instances", as_json({"instances": []}), 400),
    ("empty-row", as_json({"instances": [[]]}), 400),
    ("strings", as_json({"instances": [["x"] * DIM]}), 400),
    ("bools", as_json({"instances": [[True] * DIM]}), 400),
    ("nulls", as_json({"instances": [[None] * DIM]}), 400),
    ("b64", as_json({"instances": [{"b64": "AAAA"}]}), 400),
    ("wrong-input-name", as_json({"instances": [{"x": ROW}]}), 400),
    ("both-formats", as_json({"instances": [ROW], "inputs": [ROW]}), 400),
    ("neither-format", as_json({"rows": [ROW]}), 400),
    ("instances-string", as_json({"instances": "abc"}), 400),
    ("signature-number", as_json({"signature_name": 5, "instances": [ROW]}), 400),
    ("signature-unknown", as_json({"signature_name": "nope", "instances": [ROW]}), 400),
    ("root-list", as_json([ROW]), 400),
    ("invalid-utf8", b'{"instances": [[0.1]], "x": "\xff"}', 400),
    ("lone-surrogate-key", b'{"instances": [[0.1]], "\\ud800": 1}', 400),
    ("nested-100k", b'{"instances": ' + nested(100_000) + b"}", 400),
    ("nested-100k-unclosed", b"[" * 100_000, 400),
    ("huge-integer", b'{"instances": [[' + b"9" * 5000 + b"]]}", 400),
    ("ten-mb-garbage", b'{"instances": [[' + b"0.5, " * 2_000_000 + b'"x"]]}', 400),
    ("empty-body", b"", 400),
    ("control-chars", b'{"instances": [[0.1]], "\x01": 1}', 400),
]


def test_rest_predict_survives_hostile_bodies(head_server: HeadServer) -> None:
    url = f"{head_server.rest_url}/v1/models/sentiment:predict"
    good = as_json({"instances": [ROW]})
    for _ in range(3):
        assert post(url, good).status_code == 200
    before = rss_mb(head_server.process.pid)
    failures = []
    for name, body, status in REST_CASES:
        response = post(url, body)
        if response.status_code != status or (status != 200 and "error" not in response.json()):
            failures.append(f"{name}: {response.status_code} {response.text[:300]}")
        assert head_server.process.poll() is None, f"{name} killed the head"
        assert post(url, good).status_code == 200, f"the head no longer answers after {name}"
    growth = rss_mb(head_server.process.pid) - before
    assert not failures, "\n".join(failures)
    assert growth < MAX_RSS_GROWTH_MB, f"RSS grew {growth:.0f} MB over the corpus"


def tensor(dims: list[int], dtype: int = types_pb2.DT_FLOAT, **values: object) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)  # type: ignore[arg-type]


def floats(array: np.ndarray) -> tensor_pb2.TensorProto:
    return tensor(list(array.shape), tensor_content=array.astype("<f4").tobytes())


INVALID = {grpc.StatusCode.INVALID_ARGUMENT}
GOOD_ROWS = np.full((1, DIM), 0.1, np.float32)
# (case, inputs, the codes TF Serving answers it with; OK where it accepts it)
GRPC_CASES: list[tuple[str, dict[str, tensor_pb2.TensorProto], set[grpc.StatusCode]]] = [
    ("nan-inf", {"embeddings": floats(np.array([[np.nan, np.inf, -np.inf] * (DIM // 3)]))}, {grpc.StatusCode.OK}),
    ("short-row", {"embeddings": floats(np.zeros((1, DIM - 1)))}, INVALID),
    ("rank-1", {"embeddings": floats(np.zeros(DIM))}, INVALID),
    ("rank-3", {"embeddings": floats(np.zeros((1, 1, DIM)))}, INVALID),
    ("no-rows", {"embeddings": floats(np.zeros((0, DIM)))}, {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}),
    ("content-too-short", {"embeddings": tensor([1, DIM], tensor_content=b"\0" * 12)}, INVALID),
    ("content-not-floats", {"embeddings": tensor([1, DIM], tensor_content=b"\0" * 7)}, INVALID),
    # As in TF (and TF Serving), the last value fills the rest of the shape.
    ("values-too-few", {"embeddings": tensor([2, DIM], float_val=[0.1, 0.2, 0.3])}, {grpc.StatusCode.OK}),
    ("claims-2e9-rows", {"embeddings": tensor([2**31, DIM], tensor_content=b"\0" * 16)}, INVALID),
    ("claims-2e9-rows-one-value", {"embeddings": tensor([2**31, DIM], float_val=[0.1])}, INVALID),
    ("claims-2e9-rows-no-value", {"embeddings": tensor([2**31, DIM])}, INVALID),
    ("claims-overflowing-dims", {"embeddings": tensor([2**62, 2**62], float_val=[0.1])}, INVALID),
    ("negative-dim", {"embeddings": tensor([-5, DIM], float_val=[0.1])}, INVALID),
    ("strings", {"embeddings": tensor([1], types_pb2.DT_STRING, string_val=[b"\xff\x00"])}, INVALID),
    ("doubles", {"embeddings": tensor([1, DIM], types_pb2.DT_DOUBLE, double_val=[0.1] * DIM)}, INVALID),
    ("int64", {"embeddings": tensor([1, DIM], types_pb2.DT_INT64, int64_val=[1] * DIM)}, INVALID),
    ("invalid-dtype", {"embeddings": tensor([1, DIM], 9999, float_val=[0.1] * DIM)}, INVALID),
    ("no-inputs", {}, INVALID),
    ("wrong-input-name", {"x": floats(GOOD_ROWS)}, INVALID),
    ("extra-input", {"embeddings": floats(GOOD_ROWS), "extra": floats(GOOD_ROWS)}, INVALID),
]


def test_grpc_predict_survives_hostile_tensors(head_server: HeadServer) -> None:
    with grpc.insecure_channel(head_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def predict(inputs: dict[str, tensor_pb2.TensorProto], name: str = "sentiment") -> grpc.StatusCode:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            for alias, value in inputs.items():
                request.inputs[alias].CopyFrom(value)
            try:
                stub.Predict(request, timeout=CLIENT_TIMEOUT_S)
            except grpc.RpcError as error:
                return error.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        for _ in range(3):
            assert predict({"embeddings": floats(GOOD_ROWS)}) == grpc.StatusCode.OK
        before = rss_mb(head_server.process.pid)
        failures = []
        cases = [*GRPC_CASES, ("unknown-model", {"embeddings": floats(GOOD_ROWS)}, {grpc.StatusCode.NOT_FOUND})]
        for name, inputs, codes in cases:
            code = predict(inputs, "nope" if name == "unknown-model" else "sentiment")
            if code not in codes:
                failures.append(f"{name}: {code}")
            assert head_server.process.poll() is None, f"{name} killed the head"
            assert predict({"embeddings": floats(GOOD_ROWS)}) == grpc.StatusCode.OK, f"no answer after {name}"
        growth = rss_mb(head_server.process.pid) - before
    assert not failures, "\n".join(failures)
    assert growth < MAX_RSS_GROWTH_MB, f"RSS grew {growth:.0f} MB over the corpus"
