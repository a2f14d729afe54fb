"""Batches grouped by length (the batcher's `group_window`): little padding on mixed lengths, and the
starvation bound of the batcher's docstring, with a deterministic stand-in encoder."""

import asyncio

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from embedding_service.batcher import DynamicBatcher
from embedding_service.buckets import Buckets
from tests.conftest import GatedServer
from tests.embedding_service.test_batcher import CountingEncoder, embed, ids

SHORT, LONG = 10, 120


def make(encoder: CountingEncoder, *, batch: int, group_window: int, buckets: Buckets | None = None) -> DynamicBatcher:
    return DynamicBatcher(
        encoder,
        buckets or Buckets.exact(batch, 128),
        max_batch_tokens=batch * 128,
        max_wait_s=0.0,
        max_queue_texts=4096,
        group_window=group_window,
    )


async def held_then_released(
    batcher: DynamicBatcher, encoder: CountingEncoder, texts: list[npt.NDArray[np.int32]]
) -> None:
    """A first text holds the encoder; `texts` queue behind it, one request each, sent concurrently; then
    the encoder runs them all."""
    encoder.release.clear()
    first = asyncio.create_task(embed(batcher, [ids(0, SHORT)]))
    for _ in range(5):
        await asyncio.sleep(0.01)
    requests = [asyncio.create_task(embed(batcher, [t])) for t in texts]
    for _ in range(5):
        await asyncio.sleep(0.01)
    encoder.release.set()
    await asyncio.gather(first, *requests)


def efficiency(encoder: CountingEncoder, lengths: dict[int, int], buckets: Buckets) -> float:
    """Real tokens over padded tokens of the batches after the first, as /metrics counts them."""
    real = padded = 0
    for batch in encoder.batches[1:]:
        real += sum(lengths[first] for first in batch)
        padded += buckets.batch_size(len(batch)) * buckets.seq_length(max(lengths[first] for first in batch))
    return real / padded


def mixed() -> tuple[list[npt.NDArray[np.int32]], dict[int, int]]:
    """Three short texts to one long, interleaved as they arrive: 24 short and 8 long."""
    texts = [ids(1 + i, LONG if i % 4 == 3 else SHORT) for i in range(32)]
    return texts, {int(t[0]): len(t) for t in texts}


async def test_mixed_lengths_are_batched_by_length_with_little_padding() -> None:
    texts, lengths = mixed()
    buckets = Buckets.exact(8, 128)
    results = {}
    for window in (0, 128):
        encoder = CountingEncoder()
        async with make(encoder, batch=8, group_window=window) as batcher:
            await held_then_released(batcher, encoder, texts)
        results[window] = efficiency(encoder, lengths, buckets)
        assert sorted(f for batch in encoder.batches[1:] for f in batch) == sorted(lengths)  # each text once
    assert results[128] >= 0.75, results
    assert results[0] < 0.5, results  # arrival order pads every short text to a long one


async def test_grouping_pays_with_the_tensorflow_buckets_too() -> None:
    texts, lengths = mixed()
    buckets = Buckets.default(8, 128)
    encoder = CountingEncoder()
    async with make(encoder, batch=8, group_window=128, buckets=buckets) as batcher:
        await held_then_released(batcher, encoder, texts)
    assert efficiency(encoder, lengths, buckets) >= 0.75


async def test_a_short_text_behind_a_stream_of_long_ones_runs_within_the_bound() -> None:
    """10 long texts, one short, then 100 more long: the long texts behind the short one are nearer in
    length to every batch's front than it is. The docstring's bound: a text with k texts ahead of it runs
    within k + 1 batches (here: once the 10 ahead of it have gone, it is the front)."""
    short = ids(5_000, SHORT)
    stream = [ids(1 + i, LONG) for i in range(10)] + [short] + [ids(100 + i, LONG) for i in range(100)]
    encoder = CountingEncoder()
    async with make(encoder, batch=4, group_window=16) as batcher:
        await held_then_released(batcher, encoder, stream)
    ran_in = next(n for n, b in enumerate(encoder.batches[1:], start=1) if 5_000 in b)
    assert ran_in <= 10 + 1, encoder.batches
    assert ran_in < len(encoder.batches) - 1  # not after the stream: 100 long texts came after it


async def test_every_batch_takes_the_oldest_text_and_none_is_taken_twice_or_lost() -> None:
    rng = np.random.default_rng(7)
    texts = [ids(1 + i, int(rng.integers(3, 128))) for i in range(300)]
    encoder = CountingEncoder()
    async with make(encoder, batch=8, group_window=64) as batcher:
        await held_then_released(batcher, encoder, texts)
    waiting = [int(t[0]) for t in texts]  # one lane: the fair order is the arrival order
    for batch in encoder.batches[1:]:
        assert len(batch) <= 8 and waiting[0] in batch, (waiting[:3], batch)
        waiting = [first for first in waiting if first not in batch]
    assert not waiting and sorted(f for b in encoder.batches[1:] for f in b) == sorted(int(t[0]) for t in texts)


@pytest.mark.slow
async def test_mixed_lengths_sent_concurrently_are_served_with_little_padding(
    constrained_server: GatedServer,
) -> None:
    """The served path (the CPU default backend, batches of 8): 24 short texts and 8 long, one per
    request, three short to one long as they arrive; padding efficiency read from /metrics."""
    url = f"{constrained_server.url}/v1/embeddings"
    texts = [
        f"text {i}: " + ("alpha beta " * 40 if i % 4 == 3 else "a short one") for i in range(32)
    ]  # ~8 and ~86 tokens; distinct, so that the cache answers none
    real_before = constrained_server.metric("embedding_tokens_total")
    padded_before = constrained_server.metric("embedding_padded_tokens_total")
    async with httpx.AsyncClient(timeout=30) as client:
        with constrained_server.hold():
            blocker = asyncio.create_task(client.post(url, json={"input": "the encoder holds this one"}))
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_admitted_texts", 1)
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_queue_texts", 0)
            requests = [asyncio.create_task(client.post(url, json={"input": t})) for t in texts]
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_queue_texts", len(texts))
        answers = await asyncio.gather(blocker, *requests)
    assert all(a.status_code == 200 for a in answers)
    real = constrained_server.metric("embedding_tokens_total") - real_before
    padded = constrained_server.metric("embedding_padded_tokens_total") - padded_before
    assert real / padded >= 0.75, (real, padded)
