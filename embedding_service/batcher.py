"""The dynamic batcher: coalesces concurrent texts into padded encoder calls on one worker thread, shared
fairly between callers' lanes (embedding_service.lanes).

Tuning:
- `max_batch_size` caps texts per call. Throughput on CPU flattens past ~32; on a GPU raise it to
  64-256 and check the p99 you can afford.
- `max_batch_tokens` caps padded tokens (rows x sequence bucket) per call, so one batch of long
  texts cannot stall everything behind it; it must hold one text of the model's max length.
- `max_wait_s` is how long the first text of a batch may wait for company. 0 (the default) is
  right when the encoder is busy under load anyway, since texts queue while a batch runs; raise it
  (1-5 ms) only where per-call overhead dominates, e.g. a GPU at low concurrency.
- `max_queue_texts` bounds the texts admitted and not yet answered: a request reserves room for all of
  its texts (`reserve`) before it is tokenized, and past the bound it gets `OverloadedError` (429) at
  once instead of a growing wait. Size it to what the encoder clears within your latency target, and
  at least to the largest request you accept.

Fair batches. Each lane keeps its texts in arrival order. The fair order of queued texts is start-time
fair queuing over tokens: a lane's next text starts, in virtual time, where the lane's previous text
finished (or now, for a lane that was idle), and finishes `tokens / weight` later; texts in start order.
So backlogged lanes get the encoder's tokens in proportion to their weights, and a lane that was idle goes
first: a text sent beside a flood of 2,000 rides in the next batch formed, not after the 2,000. Lanes'
bound: before the k-th queued text of lane L reaches the front of the fair order, any other lane j has had
at most `w_j / w_L * (tokens of L's first k texts) + one text` of its own taken.

Batches grouped by length (`group_window` > 0). A batch is chosen from the window, the first
`group_window` texts of the fair order: the front text always goes, with the texts of the window nearest
to it in length, as many as pay: of every number of them, the batch takes the one that computes the most
real tokens per padded token, each call also costing a fixed `CALL_OVERHEAD_TOKENS`. Starvation bound:
the front text never waits for more than the batch running when it reached the front (with one lane, the
oldest text is the front), and since every batch takes the front, a text with k live texts ahead of it
in the fair order runs within k + 1 batches; only the texts of the window behind it (fewer than
`group_window`) can overtake it, and only while it is in the window. It enters the window once fewer
than `group_window` texts are ahead of it, which the lanes' bound above limits (tested:
tests/embedding_service/test_grouping.py). With `group_window` 0 a batch is the fair order's prefix that
fits the budgets (arrival order with one lane).

Fair refusals: queue room is shared by lanes too, and a full queue refuses the lane over its share
(embedding_service.room). A lane's quota, if it has one, is charged the tokens it asks the encoder for.

With the cache on, identical texts (the same token ids) queued or running are computed once: a later
caller awaits the same text and gives its room back. Finished sentence vectors go into the exact cache
(embedding_service.cache), which the embedder reads once a request is tokenized: a hit gives its room
back and never enters a lane.

Texts whose caller has gone (timeout, disconnect) are dropped before they reach the encoder.

Shutdown (`drain`): new texts are refused with 503 at once; queued and running ones get
`drain_timeout_s` to finish; whatever is left then, a hung encoder call included, is answered 503, so no
caller waits past the grace period. Encoder calls run on a daemon thread: a call that never returns
cannot keep the process from exiting.
"""

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType

from opentelemetry.trace import SpanContext

from embedding_service.buckets import Buckets
from embedding_service.cache import EncoderCache
from embedding_service.encoder import Embedding
from embedding_service.encoder_thread import EncoderThread, RunBatch
from embedding_service.lanes import Lane, LanePolicy, Lanes
from embedding_service.metrics import (
    BATCH_PADDED_TOKENS,
    BATCH_TEXTS,
    INFLIGHT_SHARED_TOTAL,
    LANE_QUEUE_SECONDS,
    LANE_QUEUED_TEXTS,
    LANE_TEXTS_TOTAL,
    LANE_TOKENS_TOTAL,
    PADDED_TOKENS_TOTAL,
    QUEUE_TEXTS,
    STAGE_SECONDS,
    TOKENS_TOTAL,
)
from embedding_service.room import QueueRoom, Reservation
from embedding_service.tokenizer import Ids
from service_common import tracing
from service_common.errors import ServiceError, UnavailableError

logger = logging.getLogger(__name__)

# What one encoder call costs beyond its padded tokens, in tokens: the backends' fixed cost per call
# (MiniLM on 2 cores: ~1.3 ms with OpenVINO, ~10 tokens) and the batcher's own work per batch. Grouping
# weighs it against padding, so that it never splits texts into batches too small to pay for themselves.
CALL_OVERHEAD_TOKENS = 32


@dataclass(frozen=True)
class BatchedEmbedding:
    embedding: Embedding
    queue_s: float
    infer_s: float
    batch_texts: int


@dataclass(eq=False)
class _Pending:
    """One text for the encoder, and every caller awaiting it (identical texts in flight are computed once)."""

    ids: Ids
    key: bytes
    lane: Lane
    trace: SpanContext | None  # the span of the request that queued it, when tracing is on
    token_vectors: bool  # a caller reads its token vectors
    callers: list[asyncio.Future[BatchedEmbedding]] = field(default_factory=list)
    enqueued: float = field(default_factory=time.perf_counter)
    waiting: bool = True  # in its lane's queue: not yet taken into a batch, nor abandoned by every caller


class DynamicBatcher:
    def __init__(
        self,
        run_batch: RunBatch,
        buckets: Buckets,
        *,
        max_batch_tokens: int,
        max_wait_s: float,
        max_queue_texts: int,
        drain_timeout_s: float = 30.0,
        lanes: Lanes | None = None,
        cache: EncoderCache | None = None,
        group_window: int = 0,
    ) -> None:
        if buckets.seq_lengths[-1] > max_batch_tokens:
            raise ValueError(f"max_batch_tokens {max_batch_tokens} cannot hold one text of {buckets.seq_lengths[-1]}")
        self._run_batch = run_batch
        self._buckets = buckets
        self._max_batch_size = buckets.batch_sizes[-1]
        self._max_batch_tokens = max_batch_tokens
        self._group_window = group_window
        self._max_wait_s = max_wait_s
        self._room = QueueRoom(max_queue_texts)
        self._drain_timeout_s = drain_timeout_s
        self.lanes = lanes or Lanes(LanePolicy())
        self.cache = cache
        self._active: dict[Lane, None] = {}  # lanes with texts in their queue, in the order they got them
        self._in_flight: dict[tuple[bytes, bool], _Pending] = {}  # texts queued or running: ids, token vectors
        self._virtual = 0.0  # start tag of the text taken last
        self._waiting = 0  # live texts in the lanes' queues
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running: list[_Pending] = []  # the batch in the encoder
        self._encoder: EncoderThread | None = None
        self._worker: asyncio.Task[None] | None = None
        self._drain_deadline: float | None = None  # set by the first drain(); later ones wait no longer

    async def __aenter__(self) -> "DynamicBatcher":
        self._encoder = EncoderThread(self._run_batch)
        self._worker = asyncio.create_task(self._work(), name="batcher")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.drain()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._encoder is not None:
            self._encoder.close()

    async def drain(self) -> None:
        """Refuses new texts, lets queued and running ones finish for up to `drain_timeout_s`, then answers
        what is left with 503. Later calls keep the first call's deadline."""
        if self._drain_deadline is None:
            self._room.closing = True
            self._drain_deadline = time.perf_counter() + self._drain_timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, self._drain_deadline - time.perf_counter()))
        stopped = UnavailableError("the service is shutting down", code="shutting_down")
        for p in [*self._running, *(p for lane in self._active for p in lane.queue)]:
            for caller in p.callers:
                if not caller.done():
                    caller.set_exception(stopped)

    @property
    def queued_texts(self) -> int:
        return self._waiting

    def has_room(self) -> bool:
        """Whether a request whose lane is not known yet could be admitted: checked before its body is read.
        With lanes on, the answer waits for the lane (a full queue still has room for a lane within its
        share); with one FIFO queue, a full queue refuses at the door."""
        if self._room.closing:
            return False
        return self.lanes.enabled or self._room.reserved < self._room.max_queue_texts

    def reserve(self, texts: int, lane: str | None = None) -> Reservation:
        """Room for a request's texts in the lane named `lane`, held until the reservation is closed (`with`)."""
        return self._room.reserve(self.lanes.lane(lane), texts)

    async def embed(
        self, texts: Sequence[Ids], reservation: Reservation, *, token_vectors: bool = False
    ) -> list[BatchedEmbedding]:
        """Embeds the token id arrays, in order, within the room `reservation` holds, with their token
        vectors when `token_vectors`. A text identical to one queued or running (and as asked) awaits that
        one, and gives its room back. Cancelling the caller drops its queued texts (unless another caller
        awaits them too)."""
        if len(texts) > reservation.texts:
            raise ValueError(f"{len(texts)} texts exceed the {reservation.texts} reserved")
        if self._room.closing:
            raise UnavailableError("the service is shutting down", code="shutting_down")
        if reservation.refused is not None:
            raise reservation.refused
        loop = asyncio.get_running_loop()
        lane = reservation.lane
        calls: list[tuple[_Pending, asyncio.Future[BatchedEmbedding]]] = []
        queued = 0
        trace = tracing.current() if tracing.enabled() else None
        for ids in texts:
            key = ids.tobytes()
            pending = self._in_flight.get((key, token_vectors))
            if pending is None:
                pending = _Pending(ids, key, lane, trace, token_vectors)
                if self.cache is not None:  # with the cache off, every text is computed: nothing is shared
                    self._in_flight[key, token_vectors] = pending
                lane.queue.append(pending)
                queued += 1
            caller: asyncio.Future[BatchedEmbedding] = loop.create_future()
            pending.callers.append(caller)
            calls.append((pending, caller))
        if shared := len(texts) - queued:
            INFLIGHT_SHARED_TOTAL.inc(shared)
            reservation.release(shared)
        reservation.callers += [caller for _, caller in calls]
        if queued:
            self._count_queued(lane, queued)
            self._active[lane] = None
            self._idle.clear()
            self._arrived.set()
        try:
            if len(calls) == 1:
                return [await calls[0][1]]
            return list(await asyncio.gather(*(caller for _, caller in calls)))
        finally:
            for pending, caller in calls:
                caller.cancel()
                self._leave(pending, caller)
            done = {id(caller) for _, caller in calls}
            reservation.callers = [caller for caller in reservation.callers if id(caller) not in done]

    def _leave(self, pending: _Pending, caller: "asyncio.Future[BatchedEmbedding]") -> None:
        """One caller stops awaiting `pending`; with none left, a queued text is dropped (the worker skips it)."""
        if caller in pending.callers:
            pending.callers.remove(caller)
        if not pending.callers and pending.waiting:
            pending.waiting = False
            self._count_queued(pending.lane, -1)
            self._forget(pending)

    def _forget(self, pending: _Pending) -> None:
        """Later identical texts no longer join `pending` (it is answered, or dropped)."""
        if self._in_flight.get((pending.key, pending.token_vectors)) is pending:
            del self._in_flight[pending.key, pending.token_vectors]

    def _count_queued(self, lane: Lane, texts: int) -> None:
        lane.waiting += texts
        self._waiting += texts
        LANE_QUEUED_TEXTS.labels(lane.label).inc(texts)
        QUEUE_TEXTS.set(self._waiting)

    async def _work(self) -> None:
        """Runs batches for ever; a failure outside the encoder call fails that batch, never the worker."""
        while True:
            while not self._active:
                self._idle.set()
                self._arrived.clear()
                await self._arrived.wait()
            batch: list[_Pending] = []
            try:
                await self._wait_for_company()
                batch = self._take_batch()
                if batch:
                    await self._run(batch)
            except Exception:
                logger.exception("batcher failed on a batch of %d", len(batch))
                failed = ServiceError("the encoder failed on this batch", code="encoder_error")
                for p in batch:
                    self._settle(p, failed)

    async def _run(self, batch: list[_Pending]) -> None:
        assert self._encoder is not None, "the batcher runs inside `async with`"
        started = time.perf_counter()
        self._running = batch
        try:
            with self._infer_span(batch):
                token_vectors = any(p.token_vectors for p in batch)
                outputs = await self._encoder.submit([p.ids for p in batch], token_vectors=token_vectors)
        finally:
            self._running = []
        infer_s = time.perf_counter() - started
        STAGE_SECONDS.labels("infer").observe(infer_s)
        self._room.observe(len(batch), infer_s)
        for p, embedding in zip(batch, outputs, strict=True):
            if self.cache is not None:
                self.cache.put(p.key, embedding.sentence, embedding.length)
            self._settle(p, BatchedEmbedding(embedding, started - p.enqueued, infer_s, len(batch)))

    def _infer_span(self, batch: list[_Pending]) -> AbstractContextManager[object]:
        """One span per encoder call: a child of its oldest text's request, linked to the others'."""
        if not tracing.enabled():
            return tracing.span("infer")
        traces = list({(p.trace.trace_id, p.trace.span_id): p.trace for p in batch if p.trace is not None}.values())
        attributes: dict[str, str | int] = {
            "embedding.batch_texts": len(batch),
            "embedding.padded_tokens": self._padded(len(batch), max(len(p.ids) for p in batch)),
            "embedding.tokens": sum(len(p.ids) for p in batch),
            "embedding.lanes": ",".join(dict.fromkeys(p.lane.name for p in batch)),
        }
        return tracing.span("infer", parent=traces[0] if traces else None, links=traces[1:], attributes=attributes)

    def _settle(self, pending: _Pending, outcome: BatchedEmbedding | ServiceError) -> None:
        self._forget(pending)
        for caller in pending.callers:
            if caller.done():
                continue
            if isinstance(outcome, ServiceError):
                caller.set_exception(outcome)
            else:
                caller.set_result(outcome)

    async def _wait_for_company(self) -> None:
        """Holds the batch open until it is full or its oldest text has waited `max_wait_s`."""
        if self._max_wait_s <= 0:
            return
        deadline = min(p.enqueued for lane in self._active if lane.queue for p in (lane.queue[0],)) + self._max_wait_s
        while self._waiting < self._max_batch_size and (remaining := deadline - time.perf_counter()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _padded(self, texts: int, longest: int) -> int:
        return self._buckets.batch_size(texts) * self._buckets.seq_length(longest)

    def _window(self, size: int) -> list[_Pending]:
        """The first `size` live texts of the fair order (start tags), without taking them; drops lanes
        left with no live text."""
        heads: list[tuple[float, int, Iterator[_Pending], _Pending]] = []
        for order, lane in enumerate(list(self._active)):
            queue = lane.queue
            while queue and not queue[0].waiting:
                queue.popleft()
            if not queue:
                del self._active[lane]
                continue
            texts = iter(queue)
            heads.append((max(lane.finish, self._virtual), order, texts, next(texts)))
        if len(heads) == 1:  # one lane: its own order
            _, _, texts, head = heads[0]
            return [head, *itertools.islice((p for p in texts if p.waiting), size - 1)]
        heapq.heapify(heads)
        window: list[_Pending] = []
        while heads and len(window) < size:
            start, order, texts, head = heapq.heappop(heads)
            window.append(head)
            following = next((p for p in texts if p.waiting), None)
            if following is not None:
                heapq.heappush(heads, (start + len(head.ids) / head.lane.weight, order, texts, following))
        return window

    def _fits(self, texts: int, longest: int) -> bool:
        return texts <= self._max_batch_size and self._padded(texts, longest) <= self._max_batch_tokens

    def _in_order(self, window: list[_Pending]) -> list[_Pending]:
        """The window's prefix that fits the budgets."""
        batch: list[_Pending] = []
        longest = 0
        for p in window:
            longest = max(longest, len(p.ids))
            if batch and not self._fits(len(batch) + 1, longest):
                break
            batch.append(p)
        return batch

    def _grouped(self, window: list[_Pending]) -> list[_Pending]:
        """The front text, then the texts nearest to it in length, as many as compute the most real tokens
        per padded one."""
        front, anchor = window[0], len(window[0].ids)
        nearest = sorted(window[1:], key=lambda p: abs(len(p.ids) - anchor))  # stable: ties stay in fair order
        real = longest = anchor
        best, best_score = 0, real / (self._padded(1, longest) + CALL_OVERHEAD_TOKENS)
        for count, p in enumerate(nearest, start=1):
            longest = max(longest, len(p.ids))
            if not self._fits(1 + count, longest):
                break
            real += len(p.ids)
            score = real / (self._padded(1 + count, longest) + CALL_OVERHEAD_TOKENS)
            if score >= best_score:
                best, best_score = count, score
        return [front, *nearest[:best]]

    def _take_batch(self) -> list[_Pending]:
        """Chooses the next batch from the window of the fair order and takes it: arrival order within the
        budgets, or grouped by length."""
        window = self._window(self._group_window or self._max_batch_size)
        if not window:
            return []
        batch = self._grouped(window) if self._group_window else self._in_order(window)
        position = {id(p): i for i, p in enumerate(window)}
        for p in sorted(batch, key=lambda p: position[id(p)]):  # charged to their lanes in fair order
            lane = p.lane
            p.waiting = False
            self._count_queued(lane, -1)
            start = max(lane.finish, self._virtual)
            lane.finish = start + len(p.ids) / lane.weight
            self._virtual = start
        self._count_taken(batch)
        return batch

    def _count_taken(self, batch: list[_Pending]) -> None:
        """Metrics of a batch taken: per text only the latency histograms, per lane the counters (on the
        loop between two encoder calls: the encoder waits for it)."""
        now = time.perf_counter()
        queue_seconds = STAGE_SECONDS.labels("queue")
        lanes: dict[str, list[int]] = {}
        for p in batch:
            label = p.lane.label
            queue_seconds.observe(now - p.enqueued)
            LANE_QUEUE_SECONDS.labels(label).observe(now - p.enqueued)
            counts = lanes.setdefault(label, [0, 0])
            counts[0] += 1
            counts[1] += len(p.ids)
        for label, (texts, tokens) in lanes.items():
            LANE_TEXTS_TOTAL.labels(label).inc(texts)
            LANE_TOKENS_TOTAL.labels(label).inc(tokens)
        padded = self._padded(len(batch), max(len(p.ids) for p in batch))
        BATCH_TEXTS.observe(len(batch))
        BATCH_PADDED_TOKENS.observe(padded)
        TOKENS_TOTAL.inc(sum(len(p.ids) for p in batch))
        PADDED_TOKENS_TOTAL.inc(padded)
