"""Every endpoint and error of the embedding service, against the real model in a real server."""

import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from embedding_service.app import create_app
from embedding_service.manifest import EncoderManifest
from embedding_service.schemas import IDENTITY_HEADER, PRECISION_HEADER
from embedding_service.settings import EmbeddingSettings
from tests.servers import Server

pytestmark = pytest.mark.slow

INFO = "embedding_encoder_info"

BAD_REQUESTS = [
    # (body, status, param)
    ({"input": 3}, 400, "input"),
    ({"input": [1.5, 2]}, 400, "input[0]"),
    ({"input": [["nested"]]}, 400, "input[0][0]"),
    ({"input": None}, 400, "input"),
    ({"input": []}, 400, "input"),
    ({"input": ""}, 400, "input[0]"),
    ({"input": ["fine", ""]}, 400, "input[1]"),
    ({}, 400, "input"),
    ({"input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
    ({"input": "x", "dimensions": 128}, 400, "dimensions"),
    ({"input": "x", "truncate": "maybe"}, 400, "truncate"),
    ({"input": "x", "model": "gpt-4"}, 404, "model"),
    (["input"], 400, "body"),
    ({"input": ["x"] * 2049}, 400, "input"),
    ({"input": ["ok", "y" * 20_001]}, 400, "input[1]"),
    ({"input": ["ok", "word " * 400], "truncate": False}, 400, "input[1]"),
]


def assert_error(response: httpx.Response, status: int, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["message"]


@pytest.mark.parametrize(("body", "status", "param"), BAD_REQUESTS)
def test_bad_input_gets_a_4xx_naming_the_field(embedding_server: Server, body: object, status: int, param: str) -> None:
    response = httpx.post(f"{embedding_server.url}/v1/embeddings", json=body)
    assert_error(response, status, param)
    assert httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": "still serving"}).status_code == 200


def test_non_json_and_wrong_content_type(embedding_server: Server) -> None:
    url = f"{embedding_server.url}/v1/embeddings"
    assert_error(httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400, "body")
    assert_error(httpx.post(url, content=b'{"input": "x"}', headers={"content-type": "text/plain"}), 400, "body")
    assert_error(httpx.post(url, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400, "body")


def test_bodies_over_the_limit_are_refused(embedding_server: Server) -> None:
    url = f"{embedding_server.url}/v1/embeddings"
    huge = b'{"input": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    assert_error(httpx.post(url, content=huge, headers={"content-type": "application/json"}), 413, "body")
    chunked = httpx.post(url, content=iter([huge[:1000], huge[1000:]]), headers={"content-type": "application/json"})
    assert_error(chunked, 413, "body")


def test_unknown_routes_and_methods_use_the_error_shape(embedding_server: Server) -> None:
    assert_error(httpx.get(f"{embedding_server.url}/v2/nothing"), 404, None)
    assert_error(httpx.get(f"{embedding_server.url}/v1/embeddings"), 405, None)


def test_over_long_texts_are_truncated_and_reported(embedding_server: Server) -> None:
    body = {"input": ["short", "word " * 400, "also short"]}
    response = httpx.post(f"{embedding_server.url}/v1/embeddings", json=body)
    assert response.status_code == 200
    assert response.json()["truncated"] == [1]
    assert response.json()["usage"]["prompt_tokens"] == 3 + 256 + 4
    alone = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": "word " * 400}).json()
    assert alone["truncated"] == [0]
    np.testing.assert_allclose(alone["data"][0]["embedding"], response.json()["data"][1]["embedding"], atol=1e-5)


def test_native_embed_pooling_and_normalisation(embedding_server: Server) -> None:
    url = f"{embedding_server.url}/embed"
    text = "Token level vectors for a reranker"
    tokens = httpx.post(url, json={"inputs": text, "pooling": "none"}).json()
    matrix = np.asarray(tokens["embeddings"][0])
    assert matrix.shape == (tokens["usage"]["prompt_tokens"], 384)
    assert tokens["normalize"] is False

    default = httpx.post(url, json={"inputs": [text]}).json()
    openai = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": text}).json()
    assert (default["pooling"], default["normalize"]) == ("mean", True)
    np.testing.assert_allclose(default["embeddings"][0], openai["data"][0]["embedding"])
    np.testing.assert_allclose(default["embeddings"][0], matrix.mean(0) / np.linalg.norm(matrix.mean(0)), atol=1e-5)

    expected = {"cls": matrix[0], "max": matrix.max(0), "mean": matrix.mean(0)}
    for pooling, vector in expected.items():
        raw = httpx.post(url, json={"inputs": text, "pooling": pooling, "normalize": False}).json()
        np.testing.assert_allclose(raw["embeddings"][0], vector, atol=1e-5)
    normalised_tokens = httpx.post(url, json={"inputs": text, "pooling": "none", "normalize": True}).json()
    assert np.allclose(np.linalg.norm(normalised_tokens["embeddings"][0], axis=1), 1.0, atol=1e-5)


def test_native_embed_errors_name_the_field(embedding_server: Server) -> None:
    url = f"{embedding_server.url}/embed"
    assert_error(httpx.post(url, json={"inputs": "x", "pooling": "sum"}), 400, "pooling")
    assert_error(httpx.post(url, json={"input": "x"}), 400, "inputs")
    assert_error(httpx.post(url, json={"inputs": ["a", "word " * 400], "truncate": False}), 400, "inputs[1]")


def test_ops_endpoints_headers_and_request_id(embedding_server: Server) -> None:
    url = embedding_server.url
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    models = httpx.get(f"{url}/v1/models").json()
    assert models["data"][0]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    response = httpx.post(f"{url}/v1/embeddings", json={"input": "hi"}, headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    timing = response.headers["server-timing"]
    assert [part.split(";")[0] for part in timing.split(", ")] == ["tokenize", "queue", "infer"]
    assert httpx.post(f"{url}/v1/embeddings", json={"input": "hi"}).headers["x-request-id"]
    metrics = httpx.get(f"{url}/metrics").text
    for name in (
        "embedding_stage_duration_seconds_bucket",
        "embedding_batch_texts_bucket",
        "embedding_queue_texts",
        "http_request_duration_seconds_bucket",
    ):
        assert name in metrics


def test_every_embedding_answer_names_its_encoder_and_precision(embedding_server: Server, encoder_dir: Path) -> None:
    identity = EncoderManifest.read(encoder_dir).identity
    text = "whose vector is this?"
    with httpx.Client(base_url=embedding_server.url, timeout=30) as client:
        answers = {
            "float": client.post("/v1/embeddings", json={"input": text}),
            "base64": client.post("/v1/embeddings", json={"input": text, "encoding_format": "base64"}),
            "embed": client.post("/embed", json={"inputs": text}),
            "embed, another pooling": client.post("/embed", json={"inputs": text, "pooling": "cls"}),
            "embed, token vectors": client.post("/embed", json={"inputs": text, "pooling": "none"}),
        }
    for kind, answer in answers.items():
        assert answer.status_code == 200, (kind, answer.text)
        assert answer.headers[IDENTITY_HEADER] == identity, kind
        assert answer.headers[PRECISION_HEADER] == "fp32", kind  # EMBEDDING_PRECISION's default


def test_the_model_card_the_info_metric_and_the_log_name_the_same_encoder(
    embedding_server: Server, encoder_dir: Path
) -> None:
    identity = EncoderManifest.read(encoder_dir).identity
    card = httpx.get(f"{embedding_server.url}/v1/models").json()["data"][0]
    runtime = card["runtime"]
    assert (card["identity"], runtime["precision"]) == (identity, "fp32")
    exposition = httpx.get(f"{embedding_server.url}/metrics").text
    # An Info metric, which Prometheus' text format carries as a gauge of value 1 named with `_info`.
    [sample] = [s for f in text_string_to_metric_families(exposition) for s in f.samples if s.name == INFO]
    assert sample.value == 1.0
    assert sample.labels == {
        "model": card["id"],
        "identity": identity,
        "precision": runtime["precision"],
        "backend": runtime["backend"],
        "device": runtime["device"],
    }
    ready = next(line for line in embedding_server.log.read_text("utf-8").splitlines() if "ready in " in line)
    assert f"(identity {identity})" in ready and f" in {runtime['precision']}," in ready


def test_a_browser_page_may_read_the_encoder_headers(encoder_dir: Path) -> None:
    """In-process (CORS needs no model): with origins configured, the encoder headers are exposed."""
    origin = "https://app.example.com"
    app = create_app(EmbeddingSettings(model_dir=encoder_dir, cors_origins=origin))
    answer = TestClient(app).get("/healthz", headers={"Origin": origin})  # no lifespan: the model never loads
    assert answer.headers["access-control-allow-origin"] == origin
    exposed = {name.strip().lower() for name in answer.headers["access-control-expose-headers"].split(",")}
    assert {IDENTITY_HEADER.lower(), PRECISION_HEADER.lower(), "x-request-id"} <= exposed


def test_garbage_on_the_socket_does_not_hurt_the_server(embedding_server: Server) -> None:
    host, port = embedding_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x00\x01GARBAGE / HTTP/9\r\n\r\n")
        sock.recv(1024)
    assert httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": "alive"}).status_code == 200
