"""The batcher's rules, in-process, with a tiny deterministic encoder standing in for TensorFlow."""

import asyncio
import threading
import time

import numpy as np
import numpy.typing as npt
import pytest

from embedding_service.batcher import BatchedEmbedding, DynamicBatcher
from embedding_service.buckets import Buckets
from embedding_service.encoder import Embedding
from embedding_service.lanes import LanePolicy, Lanes
from service_common.errors import OverloadedError, ServiceError, UnavailableError


class CountingEncoder:
    """Embeds ids as [sum, length]; records every batch it is given; can be held to simulate slow inference."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch: list[npt.NDArray[np.int32]], *, token_vectors: bool = False) -> list[Embedding]:
        self.release.wait(10)
        time.sleep(self.delay_s)
        self.batches.append([int(ids[0]) for ids in batch])
        if any(ids[0] < 0 for ids in batch):
            raise RuntimeError("poisoned batch")
        return [
            Embedding(
                np.array([ids.sum(), len(ids)], np.float32),
                len(ids),
                ids[:, None].astype(np.float32) if token_vectors else None,
            )
            for ids in batch
        ]


def ids(first: int, length: int = 4) -> npt.NDArray[np.int32]:
    return np.full(length, first, dtype=np.int32)


async def embed(batcher: DynamicBatcher, texts: list[npt.NDArray[np.int32]]) -> list[BatchedEmbedding]:
    """As a request does: room for its texts reserved first, held until it is answered."""
    with batcher.reserve(len(texts)) as reservation:
        return await batcher.embed(texts, reservation)


def make(
    encoder: CountingEncoder,
    *,
    max_batch_size: int = 8,
    max_batch_tokens: int = 1024,
    max_wait_s: float = 0.0,
    max_queue_texts: int = 100,
    lanes: Lanes | None = None,
) -> DynamicBatcher:
    return DynamicBatcher(
        encoder,
        Buckets.default(max_batch_size, 64),
        max_batch_tokens=max_batch_tokens,
        max_wait_s=max_wait_s,
        max_queue_texts=max_queue_texts,
        lanes=lanes,
    )


async def test_concurrent_requests_are_coalesced_and_each_gets_its_own_result() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder) as batcher:
        tasks = [asyncio.create_task(embed(batcher, [ids(1, length=1)]))]
        await asyncio.sleep(0.02)
        tasks += [asyncio.create_task(embed(batcher, [ids(i, length=i)])) for i in range(2, 18)]
        await asyncio.sleep(0.02)
        encoder.release.set()
        results = await asyncio.gather(*tasks)
    for i, [result] in enumerate(results, start=1):
        assert result.embedding.sentence.tolist() == [i * i, i]
    assert encoder.batches[0] == [1]  # the first text did not wait for company
    assert [len(b) for b in encoder.batches[1:]] == [
        8,
        8,
    ]  # the rest queued meanwhile, capped at max_batch_size
    assert max(r.batch_texts for [r] in results) == 8


async def test_the_token_budget_splits_batches_of_long_texts() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder, max_batch_tokens=128) as batcher:
        first = asyncio.create_task(embed(batcher, [ids(0)]))
        await asyncio.sleep(0.02)
        long_texts = asyncio.create_task(embed(batcher, [ids(i, length=60) for i in range(1, 5)]))
        await asyncio.sleep(0.02)
        encoder.release.set()
        await asyncio.gather(first, long_texts)
    # 4 texts padded to 64 tokens: 2 x 64 fits in 128 tokens, 4 x 64 does not.
    assert encoder.batches[1:] == [[1, 2], [3, 4]]


async def test_max_wait_holds_a_batch_open_for_company() -> None:
    encoder = CountingEncoder()
    async with make(encoder, max_wait_s=0.2) as batcher:
        first = asyncio.create_task(embed(batcher, [ids(1)]))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(embed(batcher, [ids(2)]))
        await asyncio.gather(first, second)
    assert encoder.batches == [[1, 2]]


async def test_a_full_queue_refuses_at_once() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder, max_queue_texts=10) as batcher:
        running = asyncio.create_task(embed(batcher, [ids(1)]))
        await asyncio.sleep(0.02)
        queued = asyncio.create_task(embed(batcher, [ids(i) for i in range(2, 10)]))
        await asyncio.sleep(0.02)
        # The encoder is still held: a refusal that waited for room would hang here.
        with pytest.raises(OverloadedError) as refused:
            await embed(batcher, [ids(50), ids(51), ids(52)])
        assert refused.value.headers["Retry-After"] == "1"
        encoder.release.set()
        await asyncio.gather(running, queued)


async def test_cancelled_texts_never_reach_the_encoder() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder) as batcher:
        running = asyncio.create_task(embed(batcher, [ids(1)]))
        await asyncio.sleep(0.02)
        abandoned = asyncio.create_task(embed(batcher, [ids(66), ids(67)]))
        kept = asyncio.create_task(embed(batcher, [ids(2)]))
        await asyncio.sleep(0.02)
        abandoned.cancel()
        encoder.release.set()
        await asyncio.gather(running, kept)
        assert batcher.queued_texts == 0
    assert encoder.batches == [[1], [2]]


async def test_timed_out_texts_are_dropped() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder) as batcher:
        running = asyncio.create_task(embed(batcher, [ids(1)]))
        await asyncio.sleep(0.02)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await embed(batcher, [ids(77)])
        encoder.release.set()
        await running
    assert encoder.batches == [[1]]


async def test_an_encoder_failure_fails_only_its_batch() -> None:
    encoder = CountingEncoder()
    async with make(encoder) as batcher:
        with pytest.raises(ServiceError, match="encoder failed"):
            await embed(batcher, [ids(-1)])
        [ok] = await embed(batcher, [ids(3)])
    assert ok.embedding.sentence.tolist() == [12, 4]


async def test_shutdown_finishes_queued_work_and_refuses_new_work() -> None:
    encoder = CountingEncoder(delay_s=0.05)
    batcher = make(encoder, max_batch_size=2)
    await batcher.__aenter__()
    pending = asyncio.create_task(embed(batcher, [ids(i) for i in range(1, 7)]))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(batcher.__aexit__(None, None, None))
    await asyncio.sleep(0.01)
    with pytest.raises(UnavailableError):
        await embed(batcher, [ids(9)])
    await closing
    assert len(await pending) == 6


async def test_shutdown_with_a_hung_encoder_call_answers_503_and_ends_within_the_drain_timeout() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()  # the encoder call never returns (until the test ends)
    batcher = DynamicBatcher(
        encoder, Buckets.default(2, 64), max_batch_tokens=1024, max_wait_s=0, max_queue_texts=10, drain_timeout_s=0.1
    )
    await batcher.__aenter__()
    running = asyncio.create_task(embed(batcher, [ids(1), ids(2)]))
    queued = asyncio.create_task(embed(batcher, [ids(3)]))
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    await batcher.__aexit__(None, None, None)
    assert time.perf_counter() - started < 1.0
    for request in (running, queued):
        with pytest.raises(UnavailableError) as cut_off:
            await request
        assert cut_off.value.code == "shutting_down"
    encoder.release.set()


async def test_abandoned_texts_do_not_count_against_the_queue() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder, max_queue_texts=10) as batcher:
        running = asyncio.create_task(embed(batcher, [ids(1)]))
        await asyncio.sleep(0.02)
        abandoned = asyncio.create_task(embed(batcher, [ids(i) for i in range(2, 10)]))
        await asyncio.sleep(0.02)
        abandoned.cancel()
        await asyncio.sleep(0.02)
        assert batcher.queued_texts == 0
        accepted = asyncio.create_task(embed(batcher, [ids(i) for i in range(20, 28)]))  # 8 more fit again
        await asyncio.sleep(0.02)
        encoder.release.set()
        await asyncio.gather(running, accepted)
    assert [first for batch in encoder.batches for first in batch] == [1, *range(20, 28)]


async def test_room_is_reserved_per_request_before_any_work_and_freed_when_it_is_answered() -> None:
    encoder = CountingEncoder()
    async with make(encoder, max_queue_texts=10, lanes=Lanes(LanePolicy(enabled=False))) as batcher:
        with batcher.reserve(8) as big:
            assert batcher.has_room()
            with pytest.raises(OverloadedError):
                batcher.reserve(3)  # 8 + 3 > 10: refused before it costs anything
            big.grow(2)  # a long text's extra windows
            assert not batcher.has_room()
            with pytest.raises(ValueError, match="exceed"):
                await batcher.embed([ids(i) for i in range(11)], big)
            assert len(await batcher.embed([ids(i) for i in range(10)], big)) == 10
        assert batcher.has_room()
        with batcher.reserve(10):
            pass


async def test_with_lanes_a_full_queue_waits_for_the_lane_before_refusing() -> None:
    async with make(CountingEncoder(), max_queue_texts=10) as batcher:
        with batcher.reserve(10, "bulk"):
            assert batcher.has_room()  # the door cannot know the lane: another lane would push "bulk" out
            with pytest.raises(OverloadedError):
                batcher.reserve(1, "bulk")
