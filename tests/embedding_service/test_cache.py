"""The exact embedding cache and in-flight sharing, against the real service: a repeat is bit-identical and
comes from the cache, concurrent identical requests cost one encoder slot, the byte bound holds under a
flood of distinct texts, and another encoder (identity) or precision can never answer from this one's entries."""

import asyncio
import base64
from typing import get_args

import httpx
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from embedding_service.cache import EmbeddingCache
from embedding_service.encoder import Precision
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


# Two identities and every precision: pairs that share an identity, a precision, or neither.
ENCODERS = st.tuples(st.sampled_from(["c049cf5514832722", "0123456789abcdef"]), st.sampled_from(get_args(Precision)))
TOKEN_IDS = st.lists(st.integers(0, 30_521), min_size=1, max_size=8).map(
    lambda ids: np.asarray(ids, np.int32).tobytes()
)


@given(ENCODERS, ENCODERS, TOKEN_IDS)
def test_two_identities_or_precisions_never_share_entries(
    first: tuple[str, Precision], second: tuple[str, Precision], ids: bytes
) -> None:
    """In one store, the same token ids under another identity or another precision (whose vectors differ
    within a tolerance) miss, and each encoder gets its own vector back."""
    assume(first != second)
    store = EmbeddingCache(1 << 20)  # one store: a key without the identity or the precision would be found
    mine, theirs = store.for_encoder(*first), store.for_encoder(*second)
    mine.put(ids, np.ones(384, dtype=np.float32), 3)
    assert theirs.get(ids) is None
    theirs.put(ids, np.zeros(384, dtype=np.float32), 3)
    assert len(store) == 2
    for cache, value in ((mine, 1.0), (theirs, 0.0)):
        entry = cache.get(ids)
        assert entry is not None and (entry[0] == value).all()
    assert store.for_encoder(*first).get(ids) is not None  # the same identity and precision: the same entries
