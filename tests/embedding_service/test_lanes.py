"""Lanes in the batcher, in-process with a deterministic encoder: fair batches, the starvation bound, fair
refusals, quotas, bounded lane state, and identical texts computed once."""

import asyncio
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import ValidationError

from embedding_service.batcher import DynamicBatcher
from embedding_service.buckets import Buckets
from embedding_service.cache import _ENTRY_OVERHEAD_BYTES, EmbeddingCache, EncoderCache
from embedding_service.lanes import ANONYMOUS, OTHER, LanePolicy, Lanes
from embedding_service.queue_types import TokenBucket
from embedding_service.settings import EmbeddingSettings
from service_common.errors import OverloadedError
from tests.embedding_service.test_batcher import CountingEncoder, embed, ids

BATCH = 8
IDENTITY = "0123456789abcdef"  # an encoder identity, as a manifest holds one


def make(
    encoder: CountingEncoder,
    *,
    weights: dict[str, float] | None = None,
    max_queue_texts: int = 4096,
    cache: EncoderCache | None = None,
    group_window: int = 0,
) -> DynamicBatcher:
    return DynamicBatcher(
        encoder,
        Buckets.default(BATCH, 64),
        max_batch_tokens=BATCH * 64,
        max_wait_s=0.0,
        max_queue_texts=max_queue_texts,
        lanes=Lanes(LanePolicy(weights=weights or {})),
        cache=cache,
        group_window=group_window,
    )


async def lane_embed(batcher: DynamicBatcher, lane: str, texts: list[np.ndarray]) -> list[np.ndarray]:
    with batcher.reserve(len(texts), lane) as reservation:
        return [b.embedding.sentence for b in await batcher.embed(texts, reservation)]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


def lane_of(first_id: int) -> str:
    return {1: "a", 2: "b", 3: "c"}[first_id // 10_000]


@pytest.mark.parametrize("group_window", [0, 128], ids=["in order", "grouped by length"])
async def test_a_single_text_rides_in_the_next_batch_past_a_flood(group_window: int) -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder, group_window=group_window) as batcher:
        flood = asyncio.create_task(lane_embed(batcher, "bulk", [ids(10_000 + i) for i in range(200)]))
        await settle()  # the first batch of the flood is in the (held) encoder, 192 texts queued
        web = asyncio.create_task(lane_embed(batcher, "web", [ids(7)]))
        await settle()
        encoder.release.set()
        await asyncio.gather(flood, web)
    assert encoder.batches[0] == list(range(10_000, 10_000 + BATCH))
    assert 7 in encoder.batches[1]  # not behind 192 texts: in the very next batch


@pytest.mark.parametrize("group_window", [0, 128], ids=["in order", "grouped by length"])
async def test_weights_are_honoured_within_one_text_per_lane(group_window: int) -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder, weights={"a": 3, "b": 1}, group_window=group_window) as batcher:
        first = asyncio.create_task(lane_embed(batcher, "a", [ids(10_000)]))
        await settle()  # holds the encoder, so that both lanes are queued before the next batch is formed
        a = asyncio.create_task(lane_embed(batcher, "a", [ids(10_001 + i) for i in range(300)]))
        b = asyncio.create_task(lane_embed(batcher, "b", [ids(20_000 + i) for i in range(300)]))
        await settle()
        encoder.release.set()
        await asyncio.gather(first, a, b)
    taken = [lane_of(first_id) for batch in encoder.batches[1:] for first_id in batch]
    both_backlogged = Counter(taken[:200])  # a has 300 queued: it is backlogged for all of these
    assert abs(both_backlogged["a"] - 150) <= 1 and abs(both_backlogged["b"] - 50) <= 1, both_backlogged


@pytest.mark.parametrize("group_window", [0, 128], ids=["in order", "grouped by length"])
async def test_the_weights_bound_holds_for_every_batch(group_window: int) -> None:
    """The scheduler's stated bound, lanes of mixed lengths: while lanes i and j both have texts queued, the
    tokens they were given satisfy |T_i / w_i - T_j / w_j| <= 2 * lead + L / w_i + L / w_j."""
    encoder = CountingEncoder()
    encoder.release.clear()
    weights = {"a": 1.0, "b": 2.0, "c": 1.0}
    lengths = {"a": (60, 7), "b": (5, 40), "c": (17, 3)}
    async with make(encoder, weights=weights, group_window=group_window) as batcher:
        first = asyncio.create_task(lane_embed(batcher, "a", [ids(19_999)]))
        await settle()
        floods = [
            asyncio.create_task(
                lane_embed(batcher, lane, [ids(base + i, length=lengths[lane][i % 2]) for i in range(120)])
            )
            for lane, base in (("a", 10_000), ("b", 20_000), ("c", 30_000))
        ]
        await settle()
        encoder.release.set()
        await asyncio.gather(first, *floods)
    lead, longest = BATCH * 64, 60
    given, texts = Counter[str](), Counter[str]()
    for first_id in (first_id for batch in encoder.batches[1:] for first_id in batch):
        lane = lane_of(first_id)
        given[lane] += lengths[lane][(first_id % 10_000) % 2]
        texts[lane] += 1
        for i, j in (("a", "b"), ("a", "c"), ("b", "c")):
            if texts[i] < 120 and texts[j] < 120:  # both still have texts queued
                gap = abs(given[i] / weights[i] - given[j] / weights[j])
                assert gap <= 2 * lead + longest / weights[i] + longest / weights[j], (i, j, dict(given))


def queue_full_texts() -> float:
    """embedding_rejected_texts_total{reason="queue_full"}: the refusal rate the autoscaler and alerts read."""
    return REGISTRY.get_sample_value("embedding_rejected_texts_total", {"reason": "queue_full"}) or 0.0


async def test_the_lane_over_its_share_is_refused_and_a_lane_within_it_never_is() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    refused_before = queue_full_texts()
    async with make(encoder, max_queue_texts=20) as batcher:
        held = asyncio.create_task(lane_embed(batcher, "bulk", [ids(10_000 + i) for i in range(10)]))
        newest = asyncio.create_task(lane_embed(batcher, "bulk", [ids(10_100 + i) for i in range(10)]))
        await settle()  # bulk holds the whole queue
        with pytest.raises(OverloadedError):
            batcher.reserve(1, "bulk")  # over its share of a full queue
        web = asyncio.create_task(lane_embed(batcher, "web", [ids(7)]))  # within its share: room is made
        await settle()
        with pytest.raises(OverloadedError) as pushed_out:
            await newest  # bulk's newest request gave its room back
        assert int(pushed_out.value.headers["Retry-After"]) >= 1
        assert queue_full_texts() - refused_before == 1 + 10  # the refused text and the pushed-out request's
        encoder.release.set()
        assert len(await held) == 10 and len(await web) == 1
    ran = [first_id for batch in encoder.batches for first_id in batch]
    assert 7 in ran and not any(10_100 <= first_id < 10_200 for first_id in ran)


def test_a_quota_answers_with_the_retry_after_its_bucket_implies() -> None:
    now = [0.0]
    bucket = TokenBucket(100.0, lambda: now[0])
    assert bucket.retry_after_s() == 0
    bucket.take(250)  # one large request passes, and puts the bucket 150 tokens in debt
    assert bucket.retry_after_s() == 2  # ceil(150 / 100)
    now[0] = 1.0
    assert bucket.retry_after_s() == 1
    now[0] = 1.5
    assert bucket.retry_after_s() == 0
    now[0] = 100.0
    bucket.take(100)
    assert bucket.retry_after_s() == 0  # the burst is one second of the rate, not 98 of them


async def test_a_lane_past_its_quota_is_refused_by_the_batcher() -> None:
    policy = LanePolicy(quotas={"bulk": 1000.0})
    async with DynamicBatcher(
        CountingEncoder(),
        Buckets.default(BATCH, 64),
        max_batch_tokens=512,
        max_wait_s=0,
        max_queue_texts=100,
        lanes=Lanes(policy),
    ) as batcher:
        with batcher.reserve(1, "bulk") as reservation:
            reservation.spend(3000)
        with pytest.raises(OverloadedError) as refused:
            batcher.reserve(1, "bulk")  # before any room is reserved: it can push nobody out
        assert int(refused.value.headers["Retry-After"]) == 2  # ceil((3000 - 1000) / 1000)
        assert refused.value.code == "quota_exceeded" and batcher.reserved_texts == 0
        with batcher.reserve(1, "web") as reservation:
            reservation.spend(10_000)  # another lane has no quota
        with batcher.reserve(1, "web"), batcher.reserve(1, None, "bulk"):  # `user` never reaches bulk's quota
            pass


def test_a_hundred_thousand_users_create_bounded_state() -> None:
    now = [0.0]
    lanes = Lanes(LanePolicy(max_lanes=64, idle_s=60), clock=lambda: now[0])
    busy = []
    for i in range(70):
        busy.append(lanes.flow(None, f"busy-{i}"))
        busy[-1].held = 1  # holds room: may not be dropped
    assert len(lanes) <= 65 and busy[-1].name == OTHER  # past the bound, new callers share the flow `other`
    for flow in busy:
        flow.held = 0
    for i in range(100_000):
        now[0] += 0.001
        flow = lanes.flow(None, f"user-{i}")
        assert flow.name in (f"user-{i}", OTHER)
        assert len(lanes) <= 65
    assert lanes.flow(None, "user-99999").name == "user-99999"
    assert {lanes.flow(None, name).lane.label for name in ("user-5", "web")} == {ANONYMOUS}  # bounded labels


def test_user_never_selects_a_configured_lane_or_a_keys_lane() -> None:
    lanes = Lanes(LanePolicy(weights={"orchestrator": 4}, quotas={"bulk": 10.0}, named=frozenset({"search"})))
    for name in ("orchestrator", "bulk", "search", ANONYMOUS, OTHER, "", None):
        flow = lanes.flow(None, name)
        assert flow.lane is lanes.anonymous and flow.lane.weight == 1 and flow.lane.quota is None, name
    assert [lanes.flow(key).lane.label for key in ("search", "orchestrator")] == ["search", "orchestrator"]
    assert lanes.flow("orchestrator", "web").lane.weight == 4  # a key's caller: `user` changes nothing
    assert lanes.flow("orchestrator", "web") is lanes.flow("orchestrator")
    off = Lanes(LanePolicy(enabled=False, weights={"orchestrator": 4}))
    assert off.flow("orchestrator", "web") is off.flow(None, "bulk")  # lanes off: one FIFO queue


@pytest.mark.parametrize("weights", ["bulk:0", "bulk", ":3", "bulk:-1", "bulk:inf", "bulk:x"])
def test_a_lane_weight_that_is_not_a_positive_number_stops_the_service(weights: str) -> None:
    with pytest.raises(ValidationError, match="lane_weights"):
        EmbeddingSettings(lane_weights=weights)
    assert EmbeddingSettings(lane_weights="bulk:0.5, web:2").lane_policy.weights == {"bulk": 0.5, "web": 2.0}


async def test_concurrent_identical_texts_cost_one_encoder_slot() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder, cache=EmbeddingCache(1 << 20).for_encoder(IDENTITY, "fp32")) as batcher:
        first = asyncio.create_task(lane_embed(batcher, "a", [ids(1)]))
        await settle()
        same = [asyncio.create_task(lane_embed(batcher, lane, [ids(5), ids(5)])) for lane in ("a", "b", "c")]
        await settle()
        assert batcher.queued_texts == 1
        encoder.release.set()
        answers = await asyncio.gather(*same)
        await first
    assert [first_id for batch in encoder.batches for first_id in batch] == [1, 5]
    assert all(np.array_equal(vector, answers[0][0]) for answer in answers for vector in answer)


async def test_a_caller_leaving_does_not_cancel_the_text_for_another() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder, cache=EmbeddingCache(1 << 20).for_encoder(IDENTITY, "fp32")) as batcher:
        first = asyncio.create_task(lane_embed(batcher, "a", [ids(1)]))
        await settle()
        leaving = asyncio.create_task(lane_embed(batcher, "a", [ids(5)]))
        staying = asyncio.create_task(lane_embed(batcher, "b", [ids(5)]))
        await settle()
        leaving.cancel()
        await settle()
        encoder.release.set()
        [vector] = await staying
        await first
    assert vector.tolist() == [20, 4]


async def test_the_batcher_fills_the_cache_and_a_hit_is_bit_identical() -> None:
    cache = EmbeddingCache(1 << 20).for_encoder(IDENTITY, "fp32")
    async with make(CountingEncoder(), cache=cache) as batcher:
        [computed] = await embed(batcher, [ids(3)])
    entry = cache.get(ids(3).tobytes())
    assert entry is not None and entry[1] == 4
    assert entry[0].tobytes() == computed.embedding.sentence.tobytes() and not entry[0].flags.writeable


def test_the_byte_bound_holds_and_the_oldest_entries_go_first() -> None:
    vector = np.ones(384, dtype=np.float32)
    store = EmbeddingCache(200_000)
    bounded = store.for_encoder(IDENTITY, "fp32")
    for i in range(10_000):
        bounded.put(ids(i, length=20).tobytes(), vector + i, 20)
        assert store.bytes <= 200_000
    assert 0 < len(store) < 10_000
    assert bounded.get(ids(9_999, length=20).tobytes()) is not None  # the newest kept, the oldest evicted
    assert bounded.get(ids(0, length=20).tobytes()) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.sampled_from([1, 96, 384, 1024])), max_size=60))
def test_the_cache_counts_exactly_the_bytes_it_holds(puts: list[tuple[int, int]]) -> None:
    """Whatever is put, again or with a vector of another size under the same key, its byte count is that of
    the entries it holds, within its bound."""
    store = EmbeddingCache(6_000)
    cache = store.for_encoder(IDENTITY, "fp32")
    for key, size in puts:
        cache.put(ids(key).tobytes(), np.ones(size, np.float32), 4)
        held = sum(len(k) + vector.nbytes + _ENTRY_OVERHEAD_BYTES for k, (vector, _) in store._entries.items())
        assert store.bytes == held <= store.max_bytes


async def test_with_the_cache_off_identical_texts_are_each_computed() -> None:
    encoder = CountingEncoder()
    encoder.release.clear()
    async with make(encoder) as batcher:
        first = asyncio.create_task(lane_embed(batcher, "a", [ids(1)]))
        await settle()
        same = asyncio.create_task(lane_embed(batcher, "b", [ids(5), ids(5)]))
        await settle()
        encoder.release.set()
        await asyncio.gather(first, same)
    assert [first_id for batch in encoder.batches for first_id in batch] == [1, 5, 5]
