"""Real OpenAI-API clients against the real service: the official `openai` client, LangChain's
`OpenAIEmbeddings` and LlamaIndex's `OpenAILikeEmbedding` get the vectors a direct request gets.

What each client puts on the wire (model, encoding_format, dimensions, texts per request) is recorded by a
hook on its own HTTP client and pinned, so a client upgrade that changes it fails here, not in production.
One server serves the whole file: the default settings plus the alias LangChain's default model name needs."""

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from llama_index.embeddings.openai_like import OpenAILikeEmbedding
from openai import NotFoundError, OpenAI
from tokenizers import Tokenizer

from embedding_service.manifest import EncoderManifest
from embedding_service.schemas import IDENTITY_HEADER, PRECISION_HEADER
from tests.servers import Server

pytestmark = pytest.mark.slow

SERVED = "sentence-transformers/all-MiniLM-L6-v2"
SHORT = "all-MiniLM-L6-v2"
ALIAS = "text-embedding-3-small"  # LangChain's default model; the server is started with it as an alias
MAX_TEXTS = 2048  # EMBEDDING_MAX_TEXTS_PER_REQUEST's default: OpenAI's own limit
TEXTS = ["The hotel room was spotless.", "I want my money back.", "ok"]
TOPICS = ["room", "breakfast", "staff", "view", "pool", "parking", "wifi"]
VERDICTS = ["spotless", "cold", "friendly", "noisy", "superb", "overpriced", "slow", "fine", "awful", "great", "tiny"]

Vectors = npt.NDArray[np.float32]


def reviews(count: int, kind: str = "Review") -> list[str]:
    """`count` distinct short texts (about 12 tokens each)."""
    return [f"{kind} {i}: the {TOPICS[i % 7]} was {VERDICTS[i % 11]}." for i in range(count)]


def sample(count: int, *also: int) -> list[int]:
    """Every 97th index, the first, the last and `also`."""
    return sorted({0, *range(0, count, 97), count - 1, *also})


@pytest.fixture(scope="module")
def server(embedding_server: Server) -> Server:
    """The session's server, which conftest starts with ALIAS as an alias."""
    return embedding_server


def direct(server: Server, texts: list[str]) -> Vectors:
    """The reference: plain requests with only `input`, in float JSON, at most 256 texts each."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), 256):
        response = httpx.post(f"{server.url}/v1/embeddings", json={"input": texts[start : start + 256]}, timeout=60)
        assert response.status_code == 200, response.text
        vectors += [d["embedding"] for d in response.json()["data"]]
    return np.array(vectors, np.float32)


def assert_same(got: Any, expected: Vectors) -> None:
    # Float JSON carries float32's shortest round-trip form and base64 its bytes: the same float32 values.
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, rtol=0, atol=1e-6)


class Wire:
    """The JSON bodies a client posts to /v1/embeddings, recorded by a request hook on the `openai` SDK's own
    HTTP client class (httpx2 for openai>=3), which every client here accepts as `http_client`."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def http_client(self) -> openai.DefaultHttpxClient:
        return openai.DefaultHttpxClient(event_hooks={"request": [self._record]})

    def _record(self, request: Any) -> None:
        if request.url.path.endswith("/embeddings"):
            self.bodies.append(json.loads(request.content))


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def client(server: Server, wire: Wire) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, http_client=wire.http_client())


def test_openai_client_embeds_2048_texts_in_one_request(server: Server, client: OpenAI, wire: Wire) -> None:
    texts = reviews(MAX_TEXTS)
    response = client.embeddings.create(model=SHORT, input=texts)
    # The SDK asks for base64 unless told otherwise, and decodes it to floats itself.
    assert wire.bodies == [{"model": SHORT, "input": texts, "encoding_format": "base64"}]
    assert [d.index for d in response.data] == list(range(MAX_TEXTS))
    got = np.array([d.embedding for d in response.data], np.float32)
    assert got.shape == (MAX_TEXTS, 384)
    picked = sample(MAX_TEXTS)
    assert_same(got[picked], direct(server, [texts[i] for i in picked]))
    assert response.usage.prompt_tokens == response.usage.total_tokens > MAX_TEXTS * 5
    limits = httpx.get(f"{server.url}/v1/models").json()["data"][0]["limits"]
    assert limits["max_texts_per_request"] == MAX_TEXTS


def test_float_and_base64_give_the_same_vectors(server: Server, client: OpenAI, wire: Wire) -> None:
    as_float = client.embeddings.create(model=SHORT, input=TEXTS, encoding_format="float")
    as_base64 = client.embeddings.create(model=SHORT, input=TEXTS, encoding_format="base64")
    default = client.embeddings.create(model=SERVED, input=TEXTS)
    assert [b["encoding_format"] for b in wire.bodies] == ["float", "base64", "base64"]
    floats = np.array([d.embedding for d in as_float.data], np.float32)
    assert [d.index for d in as_float.data] == [0, 1, 2]
    # Asked for explicitly, base64 comes back as the raw strings; by default the client asks for
    # base64 itself and decodes it.
    decoded = np.stack([np.frombuffer(base64.b64decode(str(d.embedding)), "<f4") for d in as_base64.data])
    np.testing.assert_array_equal(decoded, floats)
    np.testing.assert_array_equal(np.array([d.embedding for d in default.data], np.float32), floats)
    assert_same(floats, direct(server, TEXTS))
    assert len(as_float.data[0].embedding) == 384
    assert as_float.model == default.model == SERVED
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens > len(TEXTS) * 2


def test_the_openai_client_reads_the_encoder_headers(server: Server, client: OpenAI, encoder_dir: Path) -> None:
    """What a caller of the SDK sees of the vectors' identity: the raw response's headers, beside its vectors."""
    identity = EncoderManifest.read(encoder_dir).identity
    for encoding in ("float", "base64"):
        raw = client.embeddings.with_raw_response.create(model=SHORT, input=TEXTS, encoding_format=encoding)
        assert (raw.headers[IDENTITY_HEADER], raw.headers[PRECISION_HEADER]) == (identity, "fp32"), encoding
        assert len(raw.parse().data) == len(TEXTS)


def test_every_served_name_and_the_alias_give_the_same_vectors(server: Server, client: OpenAI) -> None:
    expected = direct(server, TEXTS)
    for name in (SERVED, SHORT, ALIAS):
        response = client.embeddings.create(model=name, input=TEXTS, encoding_format="float")
        assert response.model == SERVED, name
        assert_same([d.embedding for d in response.data], expected)


def test_unknown_model_is_a_not_found_error_naming_the_served_model(client: OpenAI) -> None:
    with pytest.raises(NotFoundError, match="not served here") as raised:
        client.embeddings.create(model="text-embedding-3-large", input="hi")
    assert raised.value.status_code == 404
    assert SERVED in str(raised.value)


def test_models_are_listed(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [SERVED]


def test_openai_client_sends_this_models_token_ids(server: Server, client: OpenAI, encoder_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(encoder_dir / "tokenizer" / "tokenizer.json"))
    tokenizer.no_padding()  # the exported file pads to 128 with [PAD], a real token id once sent
    ids = [tokenizer.encode(text, add_special_tokens=False).ids for text in TEXTS]
    expected = direct(server, TEXTS)
    many = client.embeddings.create(model=SHORT, input=ids)
    one = client.embeddings.create(model=SHORT, input=ids[0], encoding_format="float")
    assert_same([d.embedding for d in many.data], expected)
    assert_same([d.embedding for d in one.data], expected[:1])


def test_langchain_openai_embeddings(server: Server, wire: Wire) -> None:
    embeddings = OpenAIEmbeddings(
        model=ALIAS,
        base_url=f"{server.url}/v1",
        api_key="unused",
        # Otherwise it sends tiktoken (cl100k) token ids, foreign to this model, and needs tiktoken's files.
        check_embedding_ctx_length=False,
        max_retries=0,
        http_client=wire.http_client(),
    )
    documents = reviews(1200, "Document")
    query = "Which hotel had a spotless room?"
    vectors = np.array(embeddings.embed_documents(documents), np.float32)
    query_vector = embeddings.embed_query(query)
    # chunk_size 1000: one request of 1,000 and one of 200; no dimensions; the SDK's default base64.
    assert wire.bodies == [
        {"model": ALIAS, "input": documents[:1000], "encoding_format": "base64"},
        {"model": ALIAS, "input": documents[1000:], "encoding_format": "base64"},
        {"model": ALIAS, "input": [query], "encoding_format": "base64"},
    ]
    assert vectors.shape == (1200, 384)
    picked = sample(1200, 999, 1000)  # both sides of the chunk boundary
    expected = direct(server, [*(documents[i] for i in picked), query])
    assert_same(vectors[picked], expected[:-1])
    assert_same(query_vector, expected[-1])


def test_llama_index_openai_like_embedding(server: Server, wire: Wire) -> None:
    embedding = OpenAILikeEmbedding(
        model_name=SHORT,
        api_base=f"{server.url}/v1",
        api_key="unused",
        max_retries=0,
        http_client=wire.http_client(),
    )
    texts = reviews(24, "Note")
    texts[13] = "A note\nover two lines."
    query = "Which note was about the pool?"
    vectors = embedding.get_text_embedding_batch(texts)
    query_vector = embedding.get_query_embedding(query)
    # embed_batch_size 10; newlines become spaces before sending (the same tokens to this model).
    sent = [t.replace("\n", " ") for t in texts]
    assert wire.bodies == [
        {"model": SHORT, "input": sent[:10], "encoding_format": "base64"},
        {"model": SHORT, "input": sent[10:20], "encoding_format": "base64"},
        {"model": SHORT, "input": sent[20:], "encoding_format": "base64"},
        {"model": SHORT, "input": [query], "encoding_format": "base64"},
    ]
    expected = direct(server, [*texts, query])
    assert_same(vectors, expected[:-1])
    assert_same(query_vector, expected[-1])
