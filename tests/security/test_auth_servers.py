"""Auth on the real services: the embedding service and the orchestrator with keys, the orchestrator passing its
own key to the embedding hop (readiness checks included), the official `openai` client's `api_key`, lane keys with
auth on and off, and logs that never hold a key or a text."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from stack import services
from tests.conftest import HeadServer, running_embedding, running_orchestrator
from tests.servers import Server

pytestmark = pytest.mark.slow

EMBEDDING_ENV_KEY = "emb-env-key-7f3a9c1e"
EMBEDDING_FILE_KEY = "emb-file-key-52d0b8aa"
ORCHESTRATOR_KEY = "orch-key-c41e7d90"
SECRET_TEXT = "zebra-quartz-secret-sentence"  # must never reach a log
TIMEOUT = 30.0


@dataclass(frozen=True)
class AuthedPipeline:
    orchestrator: Server
    embedding: Server


@pytest.fixture(scope="module")
def authed(
    encoder_dir: Path, xla_cache_dir: Path, head_server: HeadServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthedPipeline]:
    """The embedding service takes one key from its variable and one from a file; the orchestrator has its own key
    and sends the file one on. Log levels are the defaults."""
    logs = tmp_path_factory.mktemp("auth-logs")
    keys_file = logs / "embedding-keys"
    keys_file.write_text(f"{EMBEDDING_FILE_KEY}\n", encoding="utf-8")
    with (
        running_embedding(
            encoder_dir,
            xla_cache_dir,
            logs / "embedding.log",
            api_keys=EMBEDDING_ENV_KEY,
            api_keys_file=str(keys_file),
            xla="false",
        ) as embedding,
        running_orchestrator(
            embedding.url,
            head_server,
            logs / "orchestrator.log",
            api_keys=ORCHESTRATOR_KEY,
            embedding_api_key=EMBEDDING_FILE_KEY,
        ) as orchestrator,
    ):
        # running_orchestrator waited for /readyz: its readiness checks reached /v1/models with the key.
        yield AuthedPipeline(orchestrator, embedding)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_embedding_service_refuses_requests_without_a_key(authed: AuthedPipeline) -> None:
    url = authed.embedding.url
    for method, path in (("POST", "/v1/embeddings"), ("POST", "/embed"), ("GET", "/v1/models")):
        for headers in ({}, bearer(ORCHESTRATOR_KEY)):
            response = httpx.request(method, url + path, headers=headers, json={"input": "hi"}, timeout=TIMEOUT)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "authentication_error"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(url + path, timeout=TIMEOUT).status_code == 200, path


def test_the_orchestrator_takes_its_key_and_sends_its_own_to_the_embedding_hop(authed: AuthedPipeline) -> None:
    url = authed.orchestrator.url + "/classify"
    body = {"texts": ["What a wonderful film.", "The service was awful."]}
    refused = httpx.post(url, json=body, headers=bearer(EMBEDDING_FILE_KEY), timeout=TIMEOUT)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    answered = httpx.post(url, json=body, headers=bearer(ORCHESTRATOR_KEY), timeout=TIMEOUT)
    assert answered.status_code == 200, answered.text
    assert [p["label"] for p in answered.json()["predictions"]] == ["positive", "negative"]
    assert httpx.get(authed.orchestrator.url + "/readyz", timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("key", [EMBEDDING_ENV_KEY, EMBEDDING_FILE_KEY])
def test_the_openai_client_api_key_works(authed: AuthedPipeline, key: str) -> None:
    client = openai.OpenAI(base_url=f"{authed.embedding.url}/v1", api_key=key, max_retries=0, timeout=TIMEOUT)
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello", "world"])
    assert [len(d.embedding) for d in result.data] == [384, 384]
    assert [m.id for m in client.models.list()] == ["sentence-transformers/all-MiniLM-L6-v2"]


def test_the_openai_client_with_a_wrong_key_gets_an_authentication_error(authed: AuthedPipeline) -> None:
    client = openai.OpenAI(base_url=f"{authed.embedding.url}/v1", api_key="wrong", max_retries=0, timeout=TIMEOUT)
    with pytest.raises(openai.AuthenticationError, match="not valid"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input="hi")


def test_no_key_and_no_text_reaches_the_logs(authed: AuthedPipeline) -> None:
    """Requests of every outcome, each carrying keys and a recognisable text; then the log files are searched."""
    orchestrator, embedding = authed.orchestrator.url, authed.embedding.url
    wrong_key = "wrong-key-" + SECRET_TEXT
    calls = [
        (orchestrator + "/classify", {"texts": [SECRET_TEXT]}, ORCHESTRATOR_KEY),  # 200
        (orchestrator + "/classify", {"texts": [SECRET_TEXT, ""]}, ORCHESTRATOR_KEY),  # 400
        (orchestrator + "/classify", {"texts": [SECRET_TEXT * 1000]}, ORCHESTRATOR_KEY),  # 400: too long
        (orchestrator + "/classify", {"text": SECRET_TEXT, SECRET_TEXT: 1}, ORCHESTRATOR_KEY),  # 400: unknown field
        (orchestrator + "/classify", {"texts": [SECRET_TEXT]}, wrong_key),  # 401
        (embedding + "/v1/embeddings", {"input": [SECRET_TEXT]}, EMBEDDING_ENV_KEY),  # 200
        (embedding + "/v1/embeddings", {"input": [SECRET_TEXT], "truncate": False}, EMBEDDING_ENV_KEY),  # 200
        (embedding + "/v1/embeddings", {"input": ["hi"], SECRET_TEXT: 1}, EMBEDDING_ENV_KEY),  # 200: field ignored
        (embedding + "/embed", {"inputs": SECRET_TEXT, "pooling": SECRET_TEXT}, EMBEDDING_FILE_KEY),  # 400
        (embedding + "/v1/embeddings", {"input": [SECRET_TEXT]}, wrong_key),  # 401
    ]
    statuses = []
    for url, body, key in calls:
        response = httpx.post(url, json=body, headers={**bearer(key), "X-Request-ID": "log-check"}, timeout=TIMEOUT)
        statuses.append(response.status_code)
    statuses.append(
        httpx.post(embedding + "/embed", content=b"\xff" + SECRET_TEXT.encode(), timeout=TIMEOUT).status_code
    )
    assert statuses == [200, 400, 400, 400, 401, 200, 200, 200, 400, 401, 401]
    for server in (authed.orchestrator, authed.embedding):
        log = server.log.read_text(encoding="utf-8", errors="replace")
        assert "log-check" in log and " 401 " in log  # the access log has the requests: the search means something
        for secret in (SECRET_TEXT, EMBEDDING_ENV_KEY, EMBEDDING_FILE_KEY, ORCHESTRATOR_KEY, "Bearer", "authorization"):
            assert secret.lower() not in log.lower(), (server.log.name, secret)


def test_without_api_keys_the_embedding_service_serves_anonymous_callers_whatever_token_they_send(
    embedding_server: Server,
) -> None:
    """The service as `make run` starts it: the orchestrator's lane key configured, no API keys."""
    url = embedding_server.url + "/v1/embeddings"
    for headers in ({}, bearer("sk-no-key-needed"), bearer(services.orchestrator_lane_key())):
        response = httpx.post(url, json={"input": "hi"}, headers=headers, timeout=TIMEOUT)
        assert response.status_code == 200, (headers, response.text)
    log = embedding_server.log.read_text(encoding="utf-8", errors="replace")
    assert services.orchestrator_lane_key() not in log


def test_with_api_keys_the_lane_key_is_accepted_too(authed: AuthedPipeline) -> None:
    url = authed.embedding.url + "/v1/embeddings"
    lane_key = bearer(services.orchestrator_lane_key())  # stack.services gives every embedding service this one
    assert httpx.post(url, json={"input": "hi"}, headers=lane_key, timeout=TIMEOUT).status_code == 200
    assert httpx.post(url, json={"input": "hi"}, headers=bearer("sk-unknown"), timeout=TIMEOUT).status_code == 401
    assert services.orchestrator_lane_key() not in authed.embedding.log.read_text(encoding="utf-8", errors="replace")
