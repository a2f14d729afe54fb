"""The official `openai` client against /v1/embeddings, in both encodings."""

import base64

import numpy as np
import pytest
from openai import NotFoundError, OpenAI

from tests.servers import Server

pytestmark = pytest.mark.slow

TEXTS = ["The hotel room was spotless.", "I want my money back.", "ok"]


@pytest.fixture
def client(embedding_server: Server) -> OpenAI:
    return OpenAI(base_url=f"{embedding_server.url}/v1", api_key="unused", max_retries=0)


def test_float_and_base64_give_the_same_vectors(client: OpenAI) -> None:
    as_float = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float")
    as_base64 = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="base64")
    default = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=TEXTS)
    floats = np.array([d.embedding for d in as_float.data], np.float32)
    assert [d.index for d in as_float.data] == [0, 1, 2]
    # Asked for explicitly, base64 comes back as the raw strings; by default the client asks for
    # base64 itself and decodes it.
    decoded = np.stack([np.frombuffer(base64.b64decode(str(d.embedding)), "<f4") for d in as_base64.data])
    np.testing.assert_array_equal(decoded, floats)
    np.testing.assert_array_equal(np.array([d.embedding for d in default.data], np.float32), floats)
    assert len(as_float.data[0].embedding) == 384
    assert as_float.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens > len(TEXTS) * 2


def test_unknown_model_is_a_not_found_error(client: OpenAI) -> None:
    with pytest.raises(NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="hi")


def test_models_are_listed(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["sentence-transformers/all-MiniLM-L6-v2"]
