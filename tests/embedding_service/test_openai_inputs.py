"""OpenAI's request to OpenAI's limits, against the real model: 2,048 inputs, token ids in both forms
(this model's own, with or without its special tokens), model names, /tokenize, and long texts embedded
whole from their windows."""

import httpx
import numpy as np
import pytest

from embedding_service.manifest import TOKENIZER_DIR
from embedding_service.tokenizer import Tokenizer
from embedding_service.windows import combine, windows
from tests.conftest import DEFAULT_ENCODER
from tests.servers import Server

pytestmark = pytest.mark.slow

TEXT = "The delivery was late, but support replied quickly and sorted it out."
LONG = " ".join(f"Sentence {i} of a long report about the harbour, its ships and their cargo." for i in range(120))


def vectors(server: Server, body: dict[str, object]) -> np.ndarray:
    response = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return np.asarray([item["embedding"] for item in response.json()["data"]], dtype=np.float32)


def token_ids(server: Server, text: str) -> list[int]:
    ids: list[int] = httpx.post(f"{server.url}/tokenize", json={"input": text}).json()["data"][0]["ids"]
    return ids


def test_2048_inputs_are_answered_in_order_and_2049_refused(embedding_server: Server) -> None:
    texts = [f"Review {i}: the {['soup', 'film', 'phone', 'hotel'][i % 4]} was fine." for i in range(2048)]
    together = vectors(embedding_server, {"input": texts})
    assert together.shape == (2048, 384)
    for i in (0, 777, 2047):
        np.testing.assert_allclose(together[i], vectors(embedding_server, {"input": texts[i]})[0], atol=1e-5)
    refused = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": [*texts, "one more"]})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input"


def test_token_ids_in_both_forms_give_the_texts_vector_with_or_without_special_tokens(
    embedding_server: Server,
) -> None:
    text = vectors(embedding_server, {"input": TEXT})[0]
    ids = token_ids(embedding_server, TEXT)
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    forms = [ids, ids[1:-1], [ids], [ids[1:-1], ids]]
    for form in forms:
        for vector in vectors(embedding_server, {"input": form}):
            assert float(vector @ text) >= 0.9999, form


def test_foreign_or_over_long_ids_are_refused_naming_the_input(embedding_server: Server) -> None:
    url = f"{embedding_server.url}/v1/embeddings"
    tiktoken_like = [[9906, 1917], [1820, 100257, 13]]  # ids a cl100k tokenizer gives
    foreign = httpx.post(url, json={"input": tiktoken_like})
    assert foreign.status_code == 400
    error = foreign.json()["error"]
    assert error["param"] == "input[1][1]" and "this model's own tokenizer" in error["message"]
    over_long = httpx.post(url, json={"input": [[1000] * 10, [1000] * 300], "truncate": False})
    assert over_long.status_code == 400
    error = over_long.json()["error"]
    assert error["param"] == "input[1]" and "this model's own tokenizer" in error["message"]
    cut = httpx.post(url, json={"input": [[1000] * 10, [1000] * 300]}).json()
    assert cut["truncated"] == [1] and cut["usage"]["prompt_tokens"] == 12 + 256


@pytest.mark.parametrize("name", ["sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", None])
def test_the_served_name_or_its_last_part_is_accepted(embedding_server: Server, name: str | None) -> None:
    body = {"input": TEXT} if name is None else {"input": TEXT, "model": name}
    assert vectors(embedding_server, body).shape == (1, 384)


def test_an_unknown_model_is_a_404_naming_the_served_one(embedding_server: Server) -> None:
    response = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": TEXT, "model": "ada-002"})
    assert response.status_code == 404
    assert "sentence-transformers/all-MiniLM-L6-v2" in response.json()["error"]["message"]


def test_tokenize_gives_ids_tokens_and_offsets_uncut(embedding_server: Server) -> None:
    answer = httpx.post(f"{embedding_server.url}/tokenize", json={"input": [TEXT, LONG]}).json()
    assert answer["max_seq_length"] == 256
    first, long = answer["data"]
    assert first["tokens"][:3] == ["[CLS]", "the", "delivery"]
    assert [TEXT[a:b].lower() for a, b in first["offsets"][1:3]] == ["the", "delivery"]
    assert len(long["ids"]) > 256  # nothing cut: clients count and chunk with it
    bare = httpx.post(f"{embedding_server.url}/tokenize", json={"input": TEXT, "add_special_tokens": False})
    assert bare.json()["data"][0]["ids"] == first["ids"][1:-1]


def test_a_chunked_long_text_is_the_token_weighted_mean_of_its_windows(embedding_server: Server) -> None:
    answer = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": [TEXT, LONG], "chunk": True}).json()
    chunked = np.asarray(answer["data"][1]["embedding"], dtype=np.float32)
    tokenizer = Tokenizer(DEFAULT_ENCODER / TOKENIZER_DIR, 256)
    parts = [tokenizer.wrap(w) for w in windows(tokenizer.content([LONG])[0], tokenizer.max_content, 32)]
    assert answer["chunked"] == [{"index": 1, "windows": len(parts)}] and len(parts) > 2
    assert answer["truncated"] == []
    embedded = vectors(embedding_server, {"input": [p.tolist() for p in parts]})
    expected = combine(list(embedded), [len(p) for p in parts], normalize=True)
    np.testing.assert_allclose(chunked, expected, atol=1e-6)
    cut = vectors(embedding_server, {"input": LONG})[0]
    assert float(cut @ chunked) < 0.9999  # the whole text, not its first window
    np.testing.assert_allclose(answer["data"][0]["embedding"], vectors(embedding_server, {"input": TEXT})[0], atol=1e-6)


def test_token_level_answers_are_bounded_in_size(constrained_server: Server) -> None:
    url = f"{constrained_server.url}/embed"
    small = httpx.post(url, json={"inputs": [TEXT], "pooling": "none"})
    assert small.status_code == 200
    big = httpx.post(url, json={"inputs": [TEXT] * 40, "pooling": "none"})  # ~700 tokens: ~3.5 MB of JSON
    assert big.status_code == 400, big.text
    error = big.json()["error"]
    assert (error["param"], error["code"]) == ("inputs", "response_too_large")
    pooled = httpx.post(url, json={"inputs": [TEXT] * 40})
    assert pooled.status_code == 200
