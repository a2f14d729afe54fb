"""What the orchestrator sends the embedding service: its key (its identity there, hence its lane), never a
`user` anyone could send, and a body within the overhead its limits allow for."""

import base64
import json
from pathlib import Path

import httpx
import numpy as np

from orchestrator.clients.embedding import EmbeddingClient
from orchestrator.limits import CALL_OVERHEAD_BYTES
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import Deadline

TEXTS = ["first", "second"]


async def sent(settings: OrchestratorSettings, *, chunk: bool) -> httpx.Request:
    """The /v1/embeddings request the client makes for TEXTS, through its own headers."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        vector = base64.b64encode(np.zeros(4, dtype="<f4").tobytes()).decode()
        return httpx.Response(200, json={"data": [{"index": i, "embedding": vector} for i in range(len(TEXTS))]})

    async with EmbeddingClient(settings) as client:
        headers = client._client.headers  # as the client set them up: the key is on every call
        await client._client.aclose()
        client._client = httpx.AsyncClient(base_url=client.url, headers=headers, transport=httpx.MockTransport(answer))
        await client.embed(TEXTS, Deadline(5.0), chunk=chunk)
    (request,) = requests
    return request


async def test_the_orchestrator_sends_its_lane_key_and_no_user(tmp_path: Path) -> None:
    keys = tmp_path / "lane-keys"
    keys.write_text("orchestrator:lane-key-0001\norchestrator:next-lane-key-0002\n", encoding="utf-8")
    for chunk in (False, True):
        request = await sent(OrchestratorSettings(embedding_api_key_file=str(keys)), chunk=chunk)
        assert request.headers["authorization"] == "Bearer lane-key-0001"
        body = json.loads(request.content)
        assert "user" not in body and body["input"] == TEXTS
        # What surrounds the texts fits the overhead the orchestrator's limits keep back from max_body_bytes.
        assert len(request.content) - len(json.dumps(TEXTS, separators=(",", ":"))) <= CALL_OVERHEAD_BYTES


async def test_without_a_key_the_orchestrator_sends_no_authorization() -> None:
    request = await sent(OrchestratorSettings(), chunk=False)
    assert "authorization" not in request.headers and "user" not in json.loads(request.content)
