"""Fields the service does not know: /v1/embeddings ignores them, as OpenAI-compatible servers do (LiteLLM
forwards `metadata`), and logs each name once; the native routes refuse them, naming the field."""

import uuid
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.servers import Server

pytestmark = pytest.mark.slow

TEXTS = ["The hotel room was spotless.", "I want my money back."]


def unknown_field() -> str:
    """A name no other request of the session sends, so the log lines naming it are this test's."""
    return f"x_unknown_{uuid.uuid4().hex[:12]}"


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], np.float32)


def test_the_openai_clients_extra_body_is_ignored(embedding_server: Server) -> None:
    """What LiteLLM does: the official client's `extra_body` puts its fields beside OpenAI's."""
    sent: list[bytes] = []

    def record(request: Any) -> None:
        sent.append(request.content)

    http = openai.DefaultHttpxClient(event_hooks={"request": [record]})
    client = openai.OpenAI(base_url=f"{embedding_server.url}/v1", api_key="unused", max_retries=0, http_client=http)
    extra = {"metadata": {"trace_user_id": "u1", "tags": ["a"]}, unknown_field(): 1}
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float", extra_body=extra)
    assert all(name.encode() in sent[-1] for name in extra), "the client sent them"
    plain = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": TEXTS}, timeout=30)
    got = np.array([d.embedding for d in result.data], np.float32)
    np.testing.assert_allclose(got, vectors(plain), rtol=0, atol=1e-6)


def test_an_unknown_field_is_answered_and_logged_once_per_name(embedding_server: Server) -> None:
    name = unknown_field()
    url = f"{embedding_server.url}/v1/embeddings"
    for _ in range(2):
        response = httpx.post(url, json={"input": "hi", name: {"k": [1, 2]}}, timeout=30)
        assert response.status_code == 200, response.text
    logged = [line for line in embedding_server.log.read_text("utf-8").splitlines() if name in line]
    assert len(logged) == 1, logged
    assert "ignoring unknown field" in logged[0]


@pytest.mark.parametrize(("path", "field"), [("/embed", "inputs"), ("/tokenize", "input")])
def test_the_native_routes_refuse_an_unknown_field(embedding_server: Server, path: str, field: str) -> None:
    response = httpx.post(f"{embedding_server.url}{path}", json={field: ["hi"], "metadata": {}}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "metadata"
