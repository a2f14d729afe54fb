"""TF Serving's REST API on the running head service: routes, row and columnar predict, errors, metrics."""

import json

import httpx
import numpy as np
import pytest

from embedding_service.manifest import EncoderManifest
from tests.conftest import DEFAULT_ENCODER, HeadServer

pytestmark = pytest.mark.slow

ROW = np.random.default_rng(7).normal(size=384).round(4).tolist()


def post(server: HeadServer, path: str, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.rest_url}{path}", content=content, timeout=10)


def test_status_and_metadata(head_server: HeadServer) -> None:
    status = httpx.get(f"{head_server.rest_url}/v1/models/sentiment").json()
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert httpx.get(f"{head_server.rest_url}/v1/models/sentiment/versions/1").json() == status
    metadata = httpx.get(f"{head_server.rest_url}/v1/models/sentiment/metadata").json()
    assert metadata["model_spec"] == {"name": "sentiment", "signature_name": "", "version": "1"}
    serving = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert serving["method_name"] == "tensorflow/serving/predict"
    assert serving["inputs"]["embeddings"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in serving["inputs"]["embeddings"]["tensor_shape"]["dim"]] == ["-1", "384"]
    encoder = metadata["metadata"]["signature_def"]["signature_def"]["encoder"]
    assert encoder["outputs"]["encoder"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in encoder["outputs"]["encoder"]["tensor_shape"]["dim"]] == ["-1", "1"]


def test_row_and_columnar_predict_agree(head_server: HeadServer) -> None:
    rows = post(head_server, "/v1/models/sentiment:predict", {"instances": [ROW, ROW]})
    keyed = post(head_server, "/v1/models/sentiment/versions/1:predict", {"instances": [{"embeddings": ROW}]})
    columns = post(head_server, "/v1/models/sentiment:predict", {"inputs": {"embeddings": [ROW]}})
    bare_columns = post(head_server, "/v1/models/sentiment:predict", {"inputs": [ROW]})
    assert rows.status_code == keyed.status_code == columns.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert len(predictions) == 2 and len(predictions[0]) == 2
    assert abs(sum(predictions[0]) - 1) < 1e-5
    assert keyed.json()["predictions"][0] == predictions[0]
    assert columns.json() == bare_columns.json() == {"outputs": [predictions[0]]}


def test_labels_signature(head_server: HeadServer) -> None:
    response = post(head_server, "/v1/models/sentiment:predict", {"signature_name": "labels", "instances": [ROW]})
    assert response.json() == {"predictions": [["negative", "positive"]]}


def test_encoder_signature(head_server: HeadServer) -> None:
    identity = EncoderManifest.read(DEFAULT_ENCODER).identity
    rows = post(head_server, "/v1/models/sentiment:predict", {"signature_name": "encoder", "instances": [ROW, ROW]})
    assert rows.json() == {"predictions": [[identity], [identity]]}
    columns = post(head_server, "/v1/models/sentiment:predict", {"signature_name": "encoder", "inputs": [ROW]})
    assert columns.json() == {"outputs": [[identity]]}


REST_ERRORS = [
    ("/v1/models/nope:predict", {"instances": [ROW]}, 404, "Servable not found for request: Latest(nope)"),
    (
        "/v1/models/sentiment/versions/9:predict",
        {"instances": [ROW]},
        404,
        "Servable not found for request: Specific(sentiment, 9)",
    ),
    ("/v1/models/sentiment:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("/v1/models/sentiment:predict", b"{nope", 400, "JSON Parse error:"),
    ("/v1/models/nope:predict", b"{nope", 400, "JSON Parse error:"),  # the body is checked before the model
    ("/v1/models/sentiment:predict", {"rows": [ROW]}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/sentiment:predict", {"instances": [["x"] * 384]}, 400, "is not of expected type: float"),
    ("/v1/models/sentiment:predict", {"instances": [ROW[:3]]}, 400, "Matrix size-incompatible: In[0]: [1,3]"),
    ("/v1/models/sentiment:predict", {"instances": [ROW, ROW[:3]]}, 400, "Expecting tensor size"),
    (
        "/v1/models/sentiment:predict",
        {"inputs": {"x": [ROW]}},
        400,
        "Missing named input: embeddings in 'inputs' object.",
    ),
    (
        "/v1/models/sentiment:predict",
        {"signature_name": "x", "instances": [ROW]},
        400,
        'Serving signature name: "x" not found in signature def',
    ),
    ("/v1/models/sentiment:classify", {"examples": [{"a": 1}]}, 400, "Expected classify signature method_name"),
    ("/v1/models/sentiment/versions/abc:predict", {"instances": [ROW]}, 400, "Malformed request: POST"),
    ("/v1/models/sentiment", {"instances": [ROW]}, 400, "Malformed request: POST /v1/models/sentiment"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), REST_ERRORS)
def test_errors_have_tf_serving_status_and_body(
    head_server: HeadServer, path: str, body: object, status: int, message: str
) -> None:
    response = post(head_server, path, body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]


def test_get_routes_errors(head_server: HeadServer) -> None:
    url = head_server.rest_url
    assert httpx.get(f"{url}/v1/models").json() == {"error": "Missing model name in request."}
    missing = httpx.get(f"{url}/v1/models/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "Could not find any versions of model nope")
    assert (
        httpx.get(f"{url}/v1/models/sentiment/versions/9").json()["error"]
        == "Could not find version 9 of model sentiment"
    )
    outside = httpx.get(f"{url}/healthz")
    assert outside.status_code == 404 and outside.headers["content-type"].startswith("text/html")


def test_prometheus_metrics_use_tf_serving_names(head_server: HeadServer) -> None:
    post(head_server, "/v1/models/sentiment:predict", {"instances": [ROW]})
    post(head_server, "/v1/models/nope:predict", {"instances": [ROW]})
    text = httpx.get(f"{head_server.rest_url}/monitoring/prometheus/metrics").text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="sentiment",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}' in text
    loaded = f'{{model_path="{head_server.base_path / "1"}",status="success"}} '
    assert f":tensorflow:cc:saved_model:load_attempt_count{loaded}" in text  # what dashboards list versions by
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="sentiment",API="predict",entrypoint="REST",le=' in text
    )
    assert "# HELP" not in text
