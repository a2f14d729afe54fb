"""The exact embedding cache and in-flight sharing, against the real service: a repeat is bit-identical and
comes from the cache, concurrent identical requests cost one encoder slot, the byte bound holds under a
flood of distinct texts, and another export of the encoder can never answer from this one's entries."""

import asyncio
import base64
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedding_service.cache import EmbeddingCache, encoder_fingerprint
from embedding_service.manifest import SAVED_MODEL_DIR
from tests.conftest import CONSTRAINED_CACHE_BYTES, GatedServer
from tests.servers import Server

pytestmark = pytest.mark.slow


def vector(answer: httpx.Response) -> bytes:
    assert answer.status_code == 200, answer.text
    return base64.b64decode(answer.json()["data"][0]["embedding"])


def test_a_repeat_is_bit_identical_and_comes_from_the_cache(embedding_server: Server) -> None:
    url = f"{embedding_server.url}/v1/embeddings"
    body = {"input": "a sentence embedded twice, word for word", "encoding_format": "base64"}
    hits, misses = (embedding_server.metric(f"embedding_cache_{kind}_total") for kind in ("hits", "misses"))
    texts_before = embedding_server.metric("embedding_batch_texts_sum")
    first = vector(httpx.post(url, json=body))
    second = vector(httpx.post(url, json=body))
    as_ids = httpx.post(url, json={**body, "input": tokenized(embedding_server, body["input"])})
    assert first == second == vector(as_ids)  # the same token ids: the same entry, however they were sent
    assert embedding_server.metric("embedding_cache_hits_total") == hits + 2
    assert embedding_server.metric("embedding_cache_misses_total") == misses + 1
    assert embedding_server.metric("embedding_batch_texts_sum") == texts_before + 1  # computed once
    # Another pooling reads token vectors, which the cache does not keep: computed, not looked up.
    httpx.post(f"{embedding_server.url}/embed", json={"inputs": [body["input"]], "pooling": "cls"}).raise_for_status()
    assert embedding_server.metric("embedding_batch_texts_sum") == texts_before + 2


def tokenized(server: Server, text: str) -> list[int]:
    answer = httpx.post(f"{server.url}/tokenize", json={"input": [text]})
    ids: list[int] = answer.json()["data"][0]["ids"]
    return ids


async def test_concurrent_identical_requests_cost_one_encoder_slot(constrained_server: GatedServer) -> None:
    url = f"{constrained_server.url}/v1/embeddings"
    body = {"input": ["the same text from six callers at once"], "encoding_format": "base64"}
    texts_before = constrained_server.metric("embedding_batch_texts_sum")
    shared_before = constrained_server.metric("embedding_inflight_shared_total")
    async with httpx.AsyncClient(timeout=30) as client:
        with constrained_server.hold():
            blocker = asyncio.create_task(client.post(url, json={"input": "holds the encoder"}))
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_admitted_texts", 1)
            same = [asyncio.create_task(client.post(url, json={**body, "user": f"caller-{i}"})) for i in range(6)]
            await asyncio.to_thread(
                constrained_server.wait_for_metric, "embedding_inflight_shared_total", shared_before + 5
            )
            assert constrained_server.metric("embedding_queue_texts") == 1
        answers = [vector(answer) for answer in await asyncio.gather(*same)]
        await blocker
    assert len(set(answers)) == 1
    assert constrained_server.metric("embedding_batch_texts_sum") == texts_before + 2  # the blocker, and one


def test_the_byte_bound_holds_under_a_flood_of_distinct_texts(constrained_server: GatedServer) -> None:
    url = f"{constrained_server.url}/v1/embeddings"
    evictions_before = constrained_server.metric("embedding_cache_evictions_total")
    for round_ in range(6):
        texts = [f"flood text {round_}-{i}: every one of them new to the cache" for i in range(100)]
        httpx.post(url, json={"input": texts, "encoding_format": "base64"}, timeout=60).raise_for_status()
        assert 0 < constrained_server.metric("embedding_cache_bytes") <= CONSTRAINED_CACHE_BYTES
    assert constrained_server.metric("embedding_cache_evictions_total") > evictions_before


def test_another_export_never_answers_from_this_ones_entries(encoder_dir: Path, tmp_path: Path) -> None:
    """Other weights make another fingerprint, hence other keys: the same token ids miss."""
    other = tmp_path / "encoder"
    shutil.copytree(encoder_dir, other)
    weights = next((other / SAVED_MODEL_DIR / "variables").glob("variables.data-*"))
    with weights.open("r+b") as file:
        file.seek(4096)
        byte = file.read(1)
        file.seek(4096)
        file.write(bytes([byte[0] ^ 0x01]))
    old, new = encoder_fingerprint(encoder_dir), encoder_fingerprint(other)
    assert old != new and encoder_fingerprint(encoder_dir) == old
    ids = np.asarray([101, 7592, 102], dtype=np.int32).tobytes()
    store = EmbeddingCache(1 << 20)  # one store: a key without the encoder's identity would be found
    store.for_encoder(old).put(ids, np.ones(384, dtype=np.float32), 3)
    assert store.for_encoder(new).get(ids) is None
    assert store.for_encoder(old).get(ids) is not None
