"""The dynamic batcher: coalesces concurrent texts into padded encoder calls on one worker thread, shared
fairly between callers' lanes. It drives the scheduler (embedding_service.scheduler: which texts form the
next batch, and the bounds on weights and waiting) and the queue room (embedding_service.room: what
`max_queue_texts` bounds, and who is refused), and owns the futures, the cache and the encoder thread.

Tuning:
- `max_batch_size` caps texts per call. Throughput on CPU flattens past ~32; on a GPU raise it to
  64-256 and check the p99 you can afford.
- `max_batch_tokens` caps padded tokens (rows x sequence bucket) per call, so one batch of long
  texts cannot stall everything behind it; it must hold one text of the model's max length. It is also
  how far ahead of its fair turn a text may be taken to group lengths (the scheduler's `lead`).
- `max_wait_s` is how long the first text of a batch may wait for company. 0 (the default) is
  right when the encoder is busy under load anyway, since texts queue while a batch runs; raise it
  (1-5 ms) only where per-call overhead dominates, e.g. a GPU at low concurrency.
- `max_queue_texts` bounds the texts admitted and not yet answered: a request reserves room for all of
  its texts (`reserve`) before it is tokenized, and past the bound it gets `OverloadedError` (429) at
  once instead of a growing wait. Size it to what the encoder clears within your latency target, and
  at least to the largest request you accept.
- `group_window` is how many queued texts a batch is chosen from, grouped by length; 0: in fair order.

With the cache on, a text is answered from the exact cache (embedding_service.cache) when it can be, and
identical texts (the same token ids, asking the same of the encoder) queued or running are computed once:
a later caller awaits the same text. Either way it gives its room back at once. Without the cache,
every text is computed.

Texts whose every caller has gone (timeout, disconnect) leave the queue at once, before they cost
compute or room.

Shutdown (`drain`): new texts are refused with 503 at once; queued and running ones get
`drain_timeout_s` to finish; whatever is left then, a hung encoder call included, is answered 503, so no
caller waits past the grace period. Encoder calls run on a daemon thread: a call that never returns
cannot keep the process from exiting.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType

from embedding_service.buckets import Buckets
from embedding_service.cache import EncoderCache
from embedding_service.encoder import Embedding
from embedding_service.encoder_thread import EncoderThread, RunBatch
from embedding_service.lanes import LanePolicy, Lanes
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
from embedding_service.queue_types import Lane, QueuedText
from embedding_service.room import QueueRoom, Reservation
from embedding_service.scheduler import Scheduler
from embedding_service.tokenizer import Ids
from service_common import tracing
from service_common.errors import OverloadedError, ServiceError, UnavailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchedEmbedding:
    embedding: Embedding
    queue_s: float
    infer_s: float
    batch_texts: int  # 0: answered from the cache


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
        self._run_batch = run_batch
        self._scheduler = Scheduler(buckets, max_batch_tokens=max_batch_tokens, group_window=group_window)
        self._max_batch_size = buckets.batch_sizes[-1]
        self._longest = buckets.seq_lengths[-1]
        self._max_wait_s = max_wait_s
        self._room = QueueRoom(max_queue_texts, self._pushed_out)
        self._drain_timeout_s = drain_timeout_s
        self.lanes = lanes if lanes is not None else Lanes(LanePolicy())
        self.cache = cache
        self._arrivals = itertools.count()
        self._in_flight: dict[tuple[bytes, bool], QueuedText] = {}  # queued or running, by ids and token vectors
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running: list[QueuedText] = []  # the batch in the encoder
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
        for text in self._running:  # a hung encoder call: answered here, its room given back
            self._settle(text, stopped)
        for text in list(self._scheduler.queued()):
            _fail(text.callers, stopped)

    @property
    def closing(self) -> bool:
        """Draining: every new text is refused with 503."""
        return self._room.closing

    @property
    def queued_texts(self) -> int:
        return self._scheduler.waiting

    @property
    def reserved_texts(self) -> int:
        """Queue room held: requests' texts not queued yet, and texts queued or running."""
        return self._room.reserved

    def has_room(self) -> bool:
        """Whether a request whose lane is not known yet could be admitted: checked before its body is read.
        With lanes on, the answer waits for the lane (a full queue still has room for a lane within its
        share); with one FIFO queue, a full queue refuses at the door."""
        if self._room.closing:
            return False
        return self.lanes.enabled or self._room.reserved < self._room.max_queue_texts

    def reserve(self, texts: int, key: str | None = None, user: str | None = None) -> Reservation:
        """Room for a request's texts, held until the reservation is closed (`with`), in the lane of the
        named key `key` (None: the anonymous lane, in the flow `user`); OverloadedError (429
        `quota_exceeded`) while that lane is past its quota."""
        return self._room.reserve(self.lanes.flow(key, user), texts)

    async def embed(
        self, texts: Sequence[Ids], reservation: Reservation, *, token_vectors: bool = False
    ) -> list[BatchedEmbedding]:
        """Embeds the token id arrays, in order, within the room `reservation` holds, with their token
        vectors when `token_vectors`. A text in the cache, or identical to one queued or running (and as
        asked), gives its room back; the others are queued, each holding its own room, and charged to the
        lane's quota. Cancelling the caller drops its queued texts (unless another caller awaits them)."""
        if self._room.closing:
            raise UnavailableError("the service is shutting down", code="shutting_down")
        if reservation.refused is not None:
            raise reservation.refused
        if len(texts) > reservation.texts:
            raise ValueError(f"{len(texts)} texts exceed the {reservation.texts} reserved")
        if texts and (longest := max(map(len, texts))) > self._longest:  # the embedder cuts texts to fit
            raise ValueError(f"a text of {longest} tokens is longer than the encoder's {self._longest}")
        loop = asyncio.get_running_loop()
        cached = self.cache if not token_vectors else None
        trace = tracing.current() if tracing.enabled() else None
        answers: list[BatchedEmbedding | None] = []
        calls: list[tuple[QueuedText, asyncio.Future[BatchedEmbedding]]] = []
        queued = tokens = 0
        for ids in texts:
            key = ids.tobytes()
            hit = cached.get(key) if cached is not None else None
            if hit is not None:
                reservation.release(1)
                answers.append(BatchedEmbedding(Embedding(hit[0], hit[1], None), 0.0, 0.0, 0))
                continue
            text = self._in_flight.get((key, token_vectors))
            if text is None:
                text = QueuedText(ids, key, reservation.flow, next(self._arrivals), token_vectors, trace)
                if self.cache is not None:  # with the cache off, every text is computed: nothing is shared
                    self._in_flight[key, token_vectors] = text
                self._room.queued(reservation)
                self._scheduler.add(text)
                queued += 1
                tokens += len(ids)
            else:
                reservation.release(1)
                INFLIGHT_SHARED_TOTAL.inc()
            caller: asyncio.Future[BatchedEmbedding] = loop.create_future()
            text.callers.append(caller)
            calls.append((text, caller))
            answers.append(None)
        reservation.spend(tokens)
        reservation.waiting += calls
        if queued:
            self._count_queued(reservation.lane, queued)
            self._idle.clear()
            self._arrived.set()
        try:
            computed = iter(await asyncio.gather(*(caller for _, caller in calls)))
            return [answer or next(computed) for answer in answers]
        finally:
            for text, caller in calls:
                caller.cancel()
                self._leave(text, caller)
            done = {id(caller) for _, caller in calls}
            reservation.waiting = [call for call in reservation.waiting if id(call[1]) not in done]

    def _leave(self, text: QueuedText, caller: "asyncio.Future[BatchedEmbedding]") -> None:
        """One caller stops awaiting `text`; with none left, a queued text leaves the queue and its room."""
        if caller in text.callers:
            text.callers.remove(caller)
        if not text.callers and text.queued:
            self._scheduler.remove(text)
            self._room.done(text)
            self._count_queued(text.lane, -1)
            self._forget(text)

    def _pushed_out(self, request: Reservation, error: OverloadedError) -> None:
        """The room took back `request`'s room (embedding_service.room): its callers get the 429, and its
        queued texts that no other request awaits leave the queue now, not when its handler next runs."""
        for text, caller in request.waiting:
            if not caller.done():
                caller.set_exception(error)
            self._leave(text, caller)
        request.waiting = []

    def _forget(self, text: QueuedText) -> None:
        """Later identical texts no longer join `text` (it is answered, or dropped)."""
        if self._in_flight.get((text.key, text.token_vectors)) is text:
            del self._in_flight[text.key, text.token_vectors]

    def _count_queued(self, lane: Lane, texts: int) -> None:
        LANE_QUEUED_TEXTS.labels(lane.label).inc(texts)
        QUEUE_TEXTS.set(self._scheduler.waiting)

    async def _work(self) -> None:
        """Runs batches for ever; a failure outside the encoder call fails that batch, never the worker."""
        while True:
            while not self._scheduler.waiting:
                self._idle.set()
                self._arrived.clear()
                await self._arrived.wait()
            batch: list[QueuedText] = []
            try:
                await self._wait_for_company()
                batch = self._scheduler.take()
                if batch:
                    self._count_taken(batch)
                    await self._run(batch)
            except Exception:
                logger.exception("batcher failed on a batch of %d", len(batch))
                failed = ServiceError("the encoder failed on this batch", code="encoder_error")
                for text in batch:
                    self._settle(text, failed)
                await asyncio.sleep(0)  # whatever failed, the loop goes on serving the other tasks

    async def _run(self, batch: list[QueuedText]) -> None:
        assert self._encoder is not None, "the batcher runs inside `async with`"
        started = time.perf_counter()
        self._running = batch
        try:
            with self._infer_span(batch):
                token_vectors = any(text.token_vectors for text in batch)
                outputs = await self._encoder.submit([text.ids for text in batch], token_vectors=token_vectors)
        finally:
            self._running = []
        infer_s = time.perf_counter() - started
        STAGE_SECONDS.labels("infer").observe(infer_s)
        self._room.observe(len(batch), infer_s)
        for text, embedding in zip(batch, outputs, strict=True):
            if self.cache is not None:
                self.cache.put(text.key, embedding.sentence, embedding.length)
            self._settle(text, BatchedEmbedding(embedding, started - text.enqueued, infer_s, len(batch)))

    def _infer_span(self, batch: list[QueuedText]) -> AbstractContextManager[object]:
        """One span per encoder call: a child of its oldest text's request, linked to the others'."""
        if not tracing.enabled():
            return tracing.span("infer")
        traces = list({(t.trace.trace_id, t.trace.span_id): t.trace for t in batch if t.trace is not None}.values())
        attributes: dict[str, str | int] = {
            "embedding.batch_texts": len(batch),
            "embedding.padded_tokens": self._scheduler.padded(len(batch), max(len(t.ids) for t in batch)),
            "embedding.tokens": sum(len(t.ids) for t in batch),
            "embedding.lanes": ",".join(dict.fromkeys(t.lane.name for t in batch)),
        }
        return tracing.span("infer", parent=traces[0] if traces else None, links=traces[1:], attributes=attributes)

    def _settle(self, text: QueuedText, outcome: BatchedEmbedding | ServiceError) -> None:
        self._forget(text)
        self._room.done(text)
        for caller in text.callers:
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
        deadline = self._scheduler.oldest() + self._max_wait_s
        while self._scheduler.waiting < self._max_batch_size and (remaining := deadline - time.perf_counter()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _count_taken(self, batch: list[QueuedText]) -> None:
        """Metrics of a batch taken: per text only the latency histograms, per lane the counters (on the
        loop between two encoder calls: the encoder waits for it)."""
        now = time.perf_counter()
        queue_seconds = STAGE_SECONDS.labels("queue")
        lanes: dict[str, list[int]] = {}
        for text in batch:
            label = text.lane.label
            queue_seconds.observe(now - text.enqueued)
            LANE_QUEUE_SECONDS.labels(label).observe(now - text.enqueued)
            counts = lanes.setdefault(label, [0, 0])
            counts[0] += 1
            counts[1] += len(text.ids)
        for label, (texts, tokens) in lanes.items():
            LANE_QUEUED_TEXTS.labels(label).dec(texts)
            LANE_TEXTS_TOTAL.labels(label).inc(texts)
            LANE_TOKENS_TOTAL.labels(label).inc(tokens)
        QUEUE_TEXTS.set(self._scheduler.waiting)
        padded = self._scheduler.padded(len(batch), max(len(text.ids) for text in batch))
        BATCH_TEXTS.observe(len(batch))
        BATCH_PADDED_TOKENS.observe(padded)
        TOKENS_TOTAL.inc(sum(len(text.ids) for text in batch))
        PADDED_TOKENS_TOTAL.inc(padded)


def _fail(callers: list["asyncio.Future[BatchedEmbedding]"], error: ServiceError) -> None:
    for caller in callers:
        if not caller.done():
            caller.set_exception(error)
