"""What the orchestrator sends the embedding service: its key (its identity there, hence its lane), never a
`user` anyone could send, and a body within the overhead its limits allow for; and what it takes back: the
identity of the encoder that made the vectors, without which an answer is not used."""

import base64
import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from orchestrator.clients.embedding import ENCODER_HEADER, PRECISION_HEADER, Embedded, EmbeddingClient
from orchestrator.limits import CALL_OVERHEAD_BYTES
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import Deadline
from service_common.errors import BadGatewayError
from tests.http_stub import Received, Reply, serving

TEXTS = ["first", "second"]


IDENTITY = "0123456789abcdef"


async def exchange(
    settings: OrchestratorSettings, *, chunk: bool = False, identity: str | None = IDENTITY
) -> tuple[Received, Embedded]:
    """The /v1/embeddings request the client makes for TEXTS, as a server receives it, and what it makes
    of an answer naming `identity` as its encoder (None: naming none)."""

    def answer(request: Received) -> Reply:
        vector = base64.b64encode(np.zeros(4, dtype="<f4").tobytes()).decode()
        body = {"data": [{"index": i, "embedding": vector} for i in range(len(TEXTS))]}
        return Reply(200, orjson.dumps(body), {ENCODER_HEADER: identity} if identity else {})

    async with serving(answer) as server, EmbeddingClient(settings, server.url) as client:
        embedded = await client.embed(TEXTS, Deadline(5.0), chunk=chunk)
    (request,) = server.received
    return request, embedded


async def sent(settings: OrchestratorSettings, *, chunk: bool) -> Received:
    return (await exchange(settings, chunk=chunk))[0]


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


async def test_an_answer_names_its_encoder_and_one_naming_none_is_not_used() -> None:
    _, embedded = await exchange(OrchestratorSettings())
    assert embedded.encoder == IDENTITY
    for identity in (None, "not-an-identity"):
        with pytest.raises(BadGatewayError) as refused:
            await exchange(OrchestratorSettings(), identity=identity)
        assert refused.value.code == "embedding_error" and ENCODER_HEADER in refused.value.message


def test_embedding_urls_are_a_comma_separated_list_of_distinct_http_urls() -> None:
    settings = OrchestratorSettings(embedding_urls="http://a:8081, http://b:8081/")
    assert settings.embedding_url_list == ["http://a:8081", "http://b:8081"]
    for bad in ("a:8081", "http://a:8081,", "http://a:8081,http://a:8081/"):
        with pytest.raises(ValueError, match="embedding_urls"):
            OrchestratorSettings(embedding_urls=bad)


async def test_int8_vectors_carry_the_head_versions_the_int8_build_checked_and_others_none() -> None:
    card = {
        "data": [
            {
                "identity": IDENTITY,
                "dimensions": 4,
                "limits": {"max_texts_per_request": 8, "max_chars_per_text": 100, "max_body_bytes": 65536},
                "runtime": {"precision": "int8", "int8": {"heads": [{"name": "sentiment", "version": 1}]}},
            }
        ]
    }
    vector = base64.b64encode(np.zeros(4, dtype="<f4").tobytes()).decode()
    body = orjson.dumps({"data": [{"index": 0, "embedding": vector}]})

    def answer(request: Received) -> Reply:
        if request.method == "GET":
            return Reply(200, orjson.dumps(card), {})
        precision = json.loads(request.content)["input"][0]  # the test names the precision the answer says
        return Reply(200, body, {ENCODER_HEADER: IDENTITY, PRECISION_HEADER: precision})

    async with serving(answer) as server, EmbeddingClient(OrchestratorSettings(), server.url) as client:
        await client.describe(5.0)
        int8 = await client.embed(["int8"], Deadline(5.0))
        bf16 = await client.embed(["bf16"], Deadline(5.0))
    assert int8.int8_heads == {("sentiment", 1)}
    assert bf16.int8_heads is None
