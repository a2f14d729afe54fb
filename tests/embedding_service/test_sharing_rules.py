"""The sharing rules where they meet: the real batcher, scheduler, lanes and queue room on random workloads
(keyed lanes with weights and the anonymous lane's `user` flows; lengths 1-256; arrivals, cancellations,
identical texts joining, cache hits, push-outs, big requests in slices; grouping on and off; exact shapes
and TensorFlow's buckets), with an encoder the test runs one batch at a time. After every step:

- two lanes with texts queued get tokens within the scheduler's stated bound of their weights;
- the room held is exactly the requests' texts not yet queued plus the texts queued or running, within
  `max_queue_texts`; a request holds room only for texts it has not handed over yet;
- a lane within its share of a full queue is admitted while others hold room over theirs to take back;
- nothing is queued, or joinable, for callers that have all left;
- with one caller, the oldest queued text is in every batch;
and at the end every request is answered exactly once, with its own texts' vectors, or refused.

The one-line bugs each rule catches: the virtual time never moved (weights), `_forget` skipped for a
dropped text (joinable), room not given back on a join or a cache hit (room), `max(` -> `min(` for the
push-out victim and a departed lane left among the holders (share), the in-flight key without its
token vectors part (answers)."""

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from embedding_service import batcher as batcher_module
from embedding_service.batcher import BatchedEmbedding, DynamicBatcher
from embedding_service.buckets import Buckets
from embedding_service.cache import EmbeddingCache
from embedding_service.encoder import Embedding
from embedding_service.lanes import LanePolicy, Lanes
from embedding_service.queue_types import Lane, QueuedText
from embedding_service.room import Reservation
from embedding_service.tokenizer import Ids
from service_common.errors import OverloadedError, ServiceError

BATCH = 4
IDENTITY = "0123456789abcdef"  # an encoder identity, as a manifest holds one
LONGEST = 256
MAX_BATCH_TOKENS = 2 * LONGEST
QUEUE = 40
SLICE = 4  # a big request goes to the batcher this many texts at a time, as the embedder feeds it
WEIGHTS = {"a": 3.0, "b": 1.0}
KEYS = (*WEIGHTS, None)  # None: unauthenticated, in a `user` flow of the anonymous lane
USERS = ("u1", "u2", "u3", "u4", "u5", "orchestrator", "other")  # more than MAX_FLOWS: flows expire and overflow
MAX_FLOWS = 4


def text_ids(length: int, content: int) -> Ids:
    return np.full(length, content, dtype=np.int32)


class HeldEncoder:
    """Stands in for the encoder thread: each batch waits until the test runs it."""

    def __init__(self, run_batch: object) -> None:
        self.calls: list[tuple[list[Ids], bool, asyncio.Future[list[Embedding]]]] = []

    def submit(self, batch: list[Ids], *, token_vectors: bool) -> "asyncio.Future[list[Embedding]]":
        future: asyncio.Future[list[Embedding]] = asyncio.get_running_loop().create_future()
        self.calls.append((batch, token_vectors, future))
        return future

    def run_one(self) -> None:
        batch, token_vectors, future = self.calls.pop(0)
        future.set_result([embedding(ids, token_vectors) for ids in batch])

    def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def held_batcher(
    *, group_window: int = 0, exact: bool = True, cache: bool = False
) -> AsyncIterator[tuple[DynamicBatcher, HeldEncoder]]:
    """The real batcher, with lanes `a` and `b` by key and the anonymous lane's flows, and an encoder the
    test runs one batch at a time."""
    with mock.patch.object(batcher_module, "EncoderThread", HeldEncoder):
        async with DynamicBatcher(
            lambda batch, token_vectors=False: [],
            Buckets.exact(BATCH, LONGEST) if exact else Buckets.default(BATCH, LONGEST),
            max_batch_tokens=MAX_BATCH_TOKENS,
            max_wait_s=0.0,
            max_queue_texts=QUEUE,
            drain_timeout_s=0.1,  # a batch the test left in the encoder
            lanes=Lanes(LanePolicy(weights=WEIGHTS, named=frozenset(WEIGHTS), max_lanes=MAX_FLOWS)),
            cache=EmbeddingCache(1 << 20).for_encoder(IDENTITY, "fp32") if cache else None,
            group_window=group_window,
        ) as batcher:
            encoder = batcher._encoder
            assert isinstance(encoder, HeldEncoder)
            yield batcher, encoder


def embedding(ids: Ids, token_vectors: bool) -> Embedding:
    vectors = np.repeat(ids[:, None].astype(np.float32), 2, axis=1) if token_vectors else None
    return Embedding(np.array([ids.sum(), len(ids)], np.float32), len(ids), vectors)


@dataclass
class Request:
    key: str | None
    user: str
    texts: list[Ids]
    token_vectors: bool
    reservation: Reservation | None = None
    handed: int = 0  # texts handed to the batcher so far
    task: "asyncio.Task[list[BatchedEmbedding]] | None" = None


@dataclass
class World:
    batcher: DynamicBatcher
    encoder: HeldEncoder
    requests: list[Request] = field(default_factory=list)
    taken: Counter[str] = field(default_factory=Counter)  # tokens run per lane
    baselines: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


Step = tuple[str, Any]

# Few lengths and contents, so that identical texts (joins, cache hits) are common.
LENGTHS = st.one_of(st.sampled_from([1, 16, 17, 64, LONGEST]), st.integers(1, LONGEST))
arrive = st.tuples(
    st.just("arrive"),
    st.tuples(
        st.sampled_from(KEYS),
        st.sampled_from(USERS),
        st.lists(st.tuples(LENGTHS, st.integers(1, 3)), min_size=1, max_size=12),
        st.booleans(),
    ),
)
steps = st.lists(
    st.one_of(arrive, st.tuples(st.just("cancel"), st.integers(0, 50)), st.tuples(st.just("run"), st.integers(1, 3))),
    max_size=40,
)


async def settle() -> None:
    for _ in range(8):
        await asyncio.sleep(0)


async def embed_all(world: World, request: Request) -> list[BatchedEmbedding]:
    assert request.reservation is not None
    with request.reservation:
        done: list[BatchedEmbedding] = []
        for start in range(0, len(request.texts), SLICE):
            piece = request.texts[start : start + SLICE]
            request.handed += len(piece)
            done += await world.batcher.embed(piece, request.reservation, token_vectors=request.token_vectors)
        return done


def queued(batcher: DynamicBatcher) -> list[QueuedText]:
    return list(batcher._scheduler.queued())


def within_share_and_room_to_take(world: World, lane: Lane, texts: int) -> bool:
    """The room's rule, from the outside: a lane within its share of a full queue must be admitted when the
    lanes over their shares hold at least what it needs in room that can be taken back."""
    room = world.batcher._room
    short = room.reserved + texts - QUEUE
    if short <= 0:
        return True
    holding = {id(held): held for held in all_lanes(world) if held.held > 0}
    holding[id(lane)] = lane
    weights = sum(held.weight for held in holding.values())
    if lane.held + texts > QUEUE * lane.weight / weights:
        return False
    takeable = 0
    for other in holding.values():
        if other is lane:
            continue
        excess = other.held - QUEUE * other.weight / weights
        if excess > 0:
            takeable += min(math.ceil(excess), sum(map(freeable, other.reservations)))
    return takeable >= short


def freeable(request: Reservation) -> int:
    """The room a request holds that failing it frees: its texts not handed over yet, and its queued texts
    that no other request awaits (its own identical texts may await one twice)."""
    mine = {id(caller) for _, caller in request.waiting}
    alone = {id(t) for t, _ in request.waiting if t.queued and all(id(caller) in mine for caller in t.callers)}
    return request.texts + len(alone)


def all_lanes(world: World) -> list[Lane]:
    lanes = world.batcher.lanes
    return [*(lanes.flow(key).lane for key in WEIGHTS), lanes.anonymous]


def check_invariants(world: World) -> None:
    batcher = world.batcher
    room = batcher._room
    waiting = queued(batcher)
    running = batcher._running
    live = [r for r in world.requests if r.task is not None and not r.task.done()]
    not_handed = sum(len(r.texts) - r.handed for r in live)
    assert room.reserved == not_handed + len(waiting) + len(running), "room held is not the room in use"
    assert room.reserved <= QUEUE
    for request in live:
        assert request.reservation is not None and request.reservation.refused is None
        assert request.reservation.texts == len(request.texts) - request.handed, "room kept for handed texts"
    for text in waiting:
        assert any(not caller.done() for caller in text.callers), "a text queued for callers that all left"
    for text in batcher._in_flight.values():
        assert text.queued or text in running, "an identical text would join one that will never run"


def check_weights(world: World, busy: set[str]) -> None:
    """Between two moments with both lanes queued, |T_i / w_i - T_j / w_j| <= 2 lead + L / w_i + L / w_j."""
    lead = world.batcher._scheduler.lead
    weights = {lane.name: lane.weight for lane in all_lanes(world)}
    for i in weights:
        for j in weights:
            if i >= j:
                continue
            if i not in busy or j not in busy:
                world.baselines.pop((i, j), None)
                continue
            base_i, base_j = world.baselines.setdefault((i, j), (world.taken[i], world.taken[j]))
            gap = abs((world.taken[i] - base_i) / weights[i] - (world.taken[j] - base_j) / weights[j])
            bound = 2 * lead + LONGEST / weights[i] + LONGEST / weights[j]
            assert gap <= bound, f"lanes {i} and {j}: {gap:.0f} past their weights, bound {bound:.0f}"


def busy_lanes(batcher: DynamicBatcher) -> set[str]:
    return {text.lane.name for text in queued(batcher)}


async def play(plan: list[Step], *, group_window: int, exact: bool, cache: bool) -> None:
    async with held_batcher(group_window=group_window, exact=exact, cache=cache) as (batcher, encoder):
        world = World(batcher, encoder)
        for step in plan:
            await perform(world, step)
            await settle()
            check_invariants(world)
            check_weights(world, busy_lanes(batcher))
        while encoder.calls:  # the rest runs: every request is answered
            await run_batch(world)
        await settle()
        for request in world.requests:
            if request.task is not None:
                assert request.task.done(), "a request never answered"
                check_answer(request)


async def run_batch(world: World) -> None:
    batcher, encoder = world.batcher, world.encoder
    batch = list(batcher._running)
    busy_before = busy_lanes(batcher)
    for text in batch:
        world.taken[text.lane.name] += len(text.ids)
    encoder.run_one()
    await settle()
    check_weights(world, busy_before & (busy_lanes(batcher) | {text.lane.name for text in batcher._running}))
    next_batch = batcher._running
    waiting = queued(batcher)
    flows = {id(text.flow) for text in [*next_batch, *waiting]}
    if len(flows) == 1 and waiting:
        oldest = min([*next_batch, *waiting], key=lambda text: text.arrival)
        assert any(text is oldest for text in next_batch), "with one caller, the oldest text waits past a batch"


async def perform(world: World, step: Step) -> None:
    kind, value = step
    if kind == "arrive":
        key, user, texts, token_vectors = value
        request = Request(key, user, [text_ids(length, content) for length, content in texts], token_vectors)
        flow = world.batcher.lanes.flow(key, user)
        must_admit = within_share_and_room_to_take(world, flow.lane, len(request.texts))
        refused_before = sum(r.reservation is not None and r.reservation.refused is not None for r in world.requests)
        try:
            request.reservation = world.batcher.reserve(len(request.texts), key, user)
        except OverloadedError:
            assert not must_admit, "a lane within its share was refused"
            refused = sum(r.reservation is not None and r.reservation.refused is not None for r in world.requests)
            assert refused == refused_before, "requests pushed out for a caller who was then refused anyway"
            return
        request.task = asyncio.create_task(embed_all(world, request))
        world.requests.append(request)
    elif kind == "cancel":
        live = [r for r in world.requests if r.task is not None and not r.task.done()]
        if live:
            task = live[value % len(live)].task
            assert task is not None
            task.cancel()
    elif world.encoder.calls:
        for _ in range(value):
            if world.encoder.calls:
                await run_batch(world)


def check_answer(request: Request) -> None:
    assert request.task is not None
    if request.task.cancelled():
        return
    error = request.task.exception()
    if error is not None:
        assert isinstance(error, OverloadedError) and error.code == "pushed_out", repr(error)
        return
    answers = request.task.result()
    assert len(answers) == len(request.texts)
    for ids, answer in zip(request.texts, answers, strict=True):
        assert answer.embedding.sentence.tolist() == [ids.sum(), len(ids)]
        if request.token_vectors:
            assert answer.embedding.tokens is not None, "a token-level caller got a sentence vector only"


# A lane that ran alone for long, then a newcomer: both must then share by weight (no credit for absence).
ALONE_THEN_NEWCOMER: list[Step] = [
    *[step for _ in range(4) for step in (("arrive", ("b", "u1", [(LONGEST, 1)] * 8, False)), ("run", 3))],
    *[("arrive", (None, "u2", [(LONGEST, 2)] * SLICE, False)) for _ in range(4)],
    ("run", 3),
    ("run", 3),
    ("run", 3),
]


# The queue full of the anonymous lane and of b exactly at its share: a, within its own, gets room from
# the lane most over its share, not from b.
MOST_OVER_GIVES: list[Step] = [
    ("arrive", ("b", "u1", [(16, 1)] * 8, False)),
    *[("arrive", (None, "u1", [(16, 2)] * size, False)) for size in (12, 12, 8)],
    ("arrive", ("a", "u1", [(16, 3)] * 4, False)),
]
# Lane a has come and gone: b's share of a full queue is then half of it, not a fifth.
DEPARTED_LANE: list[Step] = [
    ("arrive", ("a", "u1", [(16, 1)] * 4, False)),
    ("run", 3),
    *[("arrive", (None, "u1", [(16, 2)] * 12, False)) for _ in range(3)],
    ("arrive", ("b", "u1", [(16, 3)] * 12, False)),
]
# A text computed before is answered from the cache, and gives its room back at once.
CACHE_HIT: list[Step] = [
    ("arrive", (None, "u1", [(16, 1)], False)),
    ("run", 3),
    ("arrive", (None, "u2", [(16, 1), (17, 2)], False)),
]
# A caller wanting token vectors must not join an identical text that computes the sentence vector only.
TOKEN_VECTORS_APART: list[Step] = [
    ("arrive", (None, "u1", [(16, 1)], False)),
    ("arrive", (None, "u2", [(16, 1)], True)),
    ("run", 3),
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, group_window=st.sampled_from([0, 16]), exact=st.booleans(), cache=st.booleans())
@example(plan=ALONE_THEN_NEWCOMER, group_window=16, exact=True, cache=False)
@example(plan=MOST_OVER_GIVES, group_window=16, exact=True, cache=False)
@example(plan=DEPARTED_LANE, group_window=0, exact=False, cache=False)
@example(plan=TOKEN_VECTORS_APART, group_window=16, exact=True, cache=True)
@example(plan=CACHE_HIT, group_window=0, exact=False, cache=True)
def test_sharing_rules_hold_on_random_workloads(plan: list[Step], group_window: int, exact: bool, cache: bool) -> None:
    asyncio.run(play(plan, group_window=group_window, exact=exact, cache=cache))


def test_a_push_out_is_a_429_pushed_out_never_a_500() -> None:
    async def scenario() -> None:
        async with held_batcher(group_window=16) as (batcher, _):
            slow = batcher.reserve(QUEUE, None, "bulk")  # holds the whole queue, not yet tokenized
            fast = batcher.reserve(2, "a")  # within its share: the bulk request gives its room back
            try:
                await batcher.embed([text_ids(3, 1)], slow)
            except ServiceError as error:
                assert isinstance(error, OverloadedError) and error.code == "pushed_out"
            else:
                raise AssertionError("a pushed-out request was answered")
            slow.__exit__()
            fast.__exit__()
            assert batcher._room.reserved == 0

    asyncio.run(scenario())


def test_one_push_out_frees_all_of_the_requests_room_at_once() -> None:
    """The queue full of ten bulk requests' queued texts, two callers within their shares arrive in the same
    instant: the first push-out frees the newest bulk request's whole room there and then, so the second
    needs no other."""

    async def scenario() -> None:
        async with held_batcher(group_window=16) as (batcher, encoder):
            bulk = [Request(None, "bulk", [text_ids(16, 10 * n + i) for i in range(4)], False) for n in range(10)]
            world = World(batcher, encoder)
            for request in bulk:
                request.reservation = batcher.reserve(4, None, "bulk")
                request.task = asyncio.create_task(embed_all(world, request))
                await settle()
            assert batcher.reserved_texts == QUEUE
            first, second = batcher.reserve(1, "a"), batcher.reserve(1, "b")  # no await between them
            await settle()
            failed = [request for request in bulk if request.task is not None and request.task.done()]
            assert len(failed) == 1 and failed[0] is bulk[-1]
            assert failed[0].task is not None and isinstance(failed[0].task.exception(), OverloadedError)
            for request in (first, second):
                request.__exit__()
            for request in bulk[:-1]:
                assert request.task is not None
                request.task.cancel()
            await settle()

    asyncio.run(scenario())


def test_new_user_names_never_starve_a_waiting_user() -> None:
    """A `user` with texts queued, and a new `user` name with a batch's worth of texts before every batch:
    the waiting user's texts still run, one a round, instead of waiting while new names keep coming."""

    async def scenario() -> None:
        async with held_batcher(group_window=16) as (batcher, encoder):
            world = World(batcher, encoder)
            waiting = [
                Request(None, "waiting", [text_ids(16, 1000 + 4 * n + i) for i in range(4)], False) for n in range(3)
            ]
            for request in waiting:
                request.reservation = batcher.reserve(4, None, "waiting")
                request.task = asyncio.create_task(embed_all(world, request))
            await settle()
            ran = 0
            for name in range(40):
                newcomer = Request(None, f"new-{name}", [text_ids(16, 4 * name + i + 1) for i in range(BATCH)], False)
                newcomer.reservation = batcher.reserve(BATCH, None, newcomer.user)
                newcomer.task = asyncio.create_task(embed_all(world, newcomer))
                await settle()
                ran += sum(int(ids[0]) >= 1000 for ids in encoder.calls[0][0])
                encoder.run_one()
                await settle()
            assert ran == 12, f"the waiting user ran {ran} of its 12 texts in 40 batches"
            while encoder.calls:
                encoder.run_one()
                await settle()

    asyncio.run(scenario())
