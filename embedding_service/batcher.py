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

Fair batches. Each lane keeps its texts in arrival order. A batch is filled by start-time fair queuing
over tokens: a lane's head text starts, in virtual time, where the lane's previous text finished (or now,
for a lane that was idle), and finishes `tokens / weight` later; the worker always takes the head text
that starts first. So backlogged lanes get the encoder's tokens in proportion to their weights, and a lane
that was idle goes first: a text sent beside a flood of 2,000 rides in the next batch formed, not after
the 2,000. Starvation bound: before the k-th queued text of lane L is taken, any other lane j has had at
most `w_j / w_L * (tokens of L's first k texts) + one text` of its own taken. Within a lane nothing
overtakes; a batch closes on its size or token budget when the next text by that order does not fit, so
the budget never reorders texts either. Length grouping (to pad less; not built yet) composes with this
only by choosing among the lanes' head texts, never past a lane's own order, within a bounded lead over
the start-tag order, so that the bound above grows by that lead and no more.

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
import logging
import math
import time
from collections.abc import Sequence
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
    QUEUE_TEXTS,
    STAGE_SECONDS,
)
from embedding_service.room import QueueRoom, Reservation
from embedding_service.tokenizer import Ids
from service_common import tracing
from service_common.errors import ServiceError, UnavailableError

logger = logging.getLogger(__name__)


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
    ) -> None:
        if buckets.seq_lengths[-1] > max_batch_tokens:
            raise ValueError(f"max_batch_tokens {max_batch_tokens} cannot hold one text of {buckets.seq_lengths[-1]}")
        self._run_batch = run_batch
        self._buckets = buckets
        self._max_batch_size = buckets.batch_sizes[-1]
        self._max_batch_tokens = max_batch_tokens
        self._max_wait_s = max_wait_s
        self._room = QueueRoom(max_queue_texts)
        self._drain_timeout_s = drain_timeout_s
        self.lanes = lanes or Lanes(LanePolicy())
        self.cache = cache
        self._active: dict[Lane, None] = {}  # lanes with texts in their queue, in the order they got them
        self._in_flight: dict[bytes, _Pending] = {}  # texts queued or running, by their ids
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

    async def embed(self, texts: Sequence[Ids], reservation: Reservation) -> list[BatchedEmbedding]:
        """Embeds the token id arrays, in order, within the room `reservation` holds. A text identical to
        one queued or running awaits that one, and gives its room back. Cancelling the caller drops its
        queued texts (unless another caller awaits them too)."""
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
            pending = self._in_flight.get(key)
            if pending is None:
                pending = _Pending(ids, key, lane, trace)
                if self.cache is not None:  # with the cache off, every text is computed: nothing is shared
                    self._in_flight[key] = pending
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
            if self._in_flight.get(pending.key) is pending:
                del self._in_flight[pending.key]

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
                outputs = await self._encoder.submit([p.ids for p in batch])
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
        longest = max(len(p.ids) for p in batch)
        attributes: dict[str, str | int] = {
            "embedding.batch_texts": len(batch),
            "embedding.padded_tokens": self._buckets.batch_size(len(batch)) * self._buckets.seq_length(longest),
            "embedding.tokens": sum(len(p.ids) for p in batch),
            "embedding.lanes": ",".join(dict.fromkeys(p.lane.name for p in batch)),
        }
        return tracing.span("infer", parent=traces[0] if traces else None, links=traces[1:], attributes=attributes)

    def _settle(self, pending: _Pending, outcome: BatchedEmbedding | ServiceError) -> None:
        if self._in_flight.get(pending.key) is pending:
            del self._in_flight[pending.key]
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

    def _next_lane(self) -> Lane | None:
        """The lane whose head text starts first in virtual time; drops lanes left with no live text."""
        best: Lane | None = None
        best_start = math.inf
        for lane in list(self._active):
            queue = lane.queue
            while queue and not queue[0].waiting:
                queue.popleft()
            if not queue:
                del self._active[lane]
                continue
            start = max(lane.finish, self._virtual)
            if start < best_start:
                best, best_start = lane, start
        return best

    def _take_batch(self) -> list[_Pending]:
        """Takes live texts lane by lane in start-tag order while the batch stays within its budgets."""
        batch: list[_Pending] = []
        longest = 0
        while len(batch) < self._max_batch_size and (lane := self._next_lane()) is not None:
            head = lane.queue[0]
            rows = self._buckets.batch_size(len(batch) + 1)
            length = self._buckets.seq_length(max(longest, len(head.ids)))
            if batch and rows * length > self._max_batch_tokens:
                break
            lane.queue.popleft()
            head.waiting = False
            self._count_queued(lane, -1)
            start = max(lane.finish, self._virtual)
            lane.finish = start + len(head.ids) / lane.weight
            self._virtual = start
            batch.append(head)
            longest = max(longest, len(head.ids))
        if batch:
            now = time.perf_counter()
            for p in batch:
                label = p.lane.label
                STAGE_SECONDS.labels("queue").observe(now - p.enqueued)
                LANE_QUEUE_SECONDS.labels(label).observe(now - p.enqueued)
                LANE_TEXTS_TOTAL.labels(label).inc()
                LANE_TOKENS_TOTAL.labels(label).inc(len(p.ids))
            BATCH_TEXTS.observe(len(batch))
            BATCH_PADDED_TOKENS.observe(self._buckets.batch_size(len(batch)) * self._buckets.seq_length(longest))
        return batch
