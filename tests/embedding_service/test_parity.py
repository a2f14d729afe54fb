"""The service's vectors match sentence-transformers' own all-MiniLM-L6-v2 output (committed fixture)."""

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.servers import Server

pytestmark = pytest.mark.slow

REFERENCE = json.loads((Path(__file__).parent.parent / "fixtures" / "reference_embeddings.json").read_text("utf-8"))


def cosines(got: list[list[float]], want: list[list[float]]) -> np.ndarray:
    a, b = np.asarray(got), np.asarray(want)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))  # type: ignore[no-any-return]


def test_batched_vectors_match_sentence_transformers(embedding_server: Server) -> None:
    response = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": REFERENCE["texts"]}, timeout=60)
    assert response.status_code == 200, response.text
    got = [row["embedding"] for row in response.json()["data"]]
    similarity = cosines(got, REFERENCE["embeddings"])
    worst = int(similarity.argmin())
    assert similarity.min() >= 0.9999, f"text {worst} {REFERENCE['texts'][worst][:40]!r}: cosine {similarity[worst]}"
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_each_text_alone_matches_sentence_transformers(embedding_server: Server) -> None:
    with httpx.Client(base_url=embedding_server.url, timeout=60) as client:
        got = [
            client.post("/v1/embeddings", json={"input": t}).json()["data"][0]["embedding"] for t in REFERENCE["texts"]
        ]
    assert cosines(got, REFERENCE["embeddings"]).min() >= 0.9999


def test_the_long_text_is_reported_truncated(embedding_server: Server) -> None:
    response = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": REFERENCE["texts"]}, timeout=60)
    long_ones = [i for i, t in enumerate(REFERENCE["texts"]) if len(t) > 1000]
    assert long_ones
    assert response.json()["truncated"] == long_ones
