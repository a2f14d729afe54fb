"""The service's vectors match sentence-transformers' own all-MiniLM-L6-v2 output (committed fixture): served,
and in-process at the reduced precisions within their contracts (bf16: the parity contract, 0.9999, as fp32;
int8: its own, 0.99). fp32 in-process: tests/embedding_service/test_backends.py."""

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedding_service.buckets import Buckets
from embedding_service.encoder import Precision
from embedding_service.int8_manifest import MIN_COSINE
from embedding_service.manifest import TOKENIZER_DIR
from embedding_service.ov_encoder import OpenVINOEncoder
from embedding_service.precision import PARITY_MIN_COSINE
from embedding_service.tokenizer import Tokenizer
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


@pytest.mark.parametrize(("precision", "floor"), [("bf16", PARITY_MIN_COSINE), ("int8", MIN_COSINE)])
def test_each_precision_holds_its_contract_against_sentence_transformers(
    int8_encoder_dir: Path, precision: Precision, floor: float
) -> None:
    """bf16 where auto may choose it (OpenVINO on a CPU with native bf16; elsewhere it runs fp32), batched
    and each text alone (bf16's vectors depend a little on their batch-mates' padding)."""
    encoder = OpenVINOEncoder(int8_encoder_dir, Buckets.exact(32, 256), precision=precision)
    ids = [t.ids for t in Tokenizer(int8_encoder_dir / TOKENIZER_DIR, 256)(REFERENCE["texts"])]
    batched = [e.sentence for e in encoder(ids)]
    alone = [encoder([i])[0].sentence for i in ids]
    assert cosines(batched, REFERENCE["embeddings"]).min() >= floor
    assert cosines(alone, REFERENCE["embeddings"]).min() >= floor
