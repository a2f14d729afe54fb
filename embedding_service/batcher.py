"""The dynamic batcher: coalesces concurrent texts into padded encoder calls on one worker thread.

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
Texts whose caller has gone (timeout, disconnect) are dropped before they reach the encoder.

Shutdown (`drain`): new texts are refused with 503 at once; queued and running ones get
`drain_timeout_s` to finish; whatever is left then, a hung encoder call included, is answered 503, so no
caller waits past the grace period. Encoder calls run on a daemon thread: a call that never returns
cannot keep the process from exiting.
"""

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from embedding_service.buckets import Buckets
from embedding_service.encoder import Embedding
from embedding_service.metrics import (
    ADMITTED_TEXTS,
    BATCH_PADDED_TOKENS,
    BATCH_TEXTS,
    QUEUE_TEXTS,
    REJECTED_TOTAL,
    STAGE_SECONDS,
)
from service_common.errors import OverloadedError, ServiceError, UnavailableError

logger = logging.getLogger(__name__)

RunBatch = Callable[[list[npt.NDArray[np.int32]]], list[Embedding]]
_Call = tuple[Future[list[Embedding]], list[npt.NDArray[np.int32]]]


def gated(run_batch: RunBatch, gate: Path) -> RunBatch:
    """For tests only: each batch waits while the file `gate` exists, so a test can hold the encoder
    (fill the queue, pass a deadline, hang a shutdown) deterministically, however fast the hardware."""

    def run(batch: list[npt.NDArray[np.int32]]) -> list[Embedding]:
        while gate.exists():
            time.sleep(0.002)
        return run_batch(batch)

    return run


class _EncoderThread:
    """One daemon thread that runs the encoder calls, one at a time, in order."""

    def __init__(self, run_batch: RunBatch) -> None:
        self._run_batch = run_batch
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="encoder", daemon=True)
        self._thread.start()

    def submit(self, batch: list[npt.NDArray[np.int32]]) -> "asyncio.Future[list[Embedding]]":
        future: Future[list[Embedding]] = Future()
        self._calls.put((future, batch))
        return asyncio.wrap_future(future)

    def close(self) -> None:
        """Ends the thread after the call it is running, if any; does not wait for it."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, batch = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._run_batch(batch))
                except BaseException as exc:
                    future.set_exception(exc)


@dataclass(frozen=True)
class BatchedEmbedding:
    embedding: Embedding
    queue_s: float
    infer_s: float
    batch_texts: int


@dataclass
class _Pending:
    ids: npt.NDArray[np.int32]
    future: asyncio.Future[BatchedEmbedding]
    enqueued: float = field(default_factory=time.perf_counter)
    waiting: bool = True  # counted in the queue: not yet taken into a batch, nor abandoned by its caller


class Reservation:
    """Queue room held for one request's texts, from before they are tokenized until it is answered."""

    def __init__(self, batcher: "DynamicBatcher", texts: int) -> None:
        self._batcher = batcher
        self.texts = 0
        self.grow(texts)

    def grow(self, texts: int) -> None:
        """Holds room for `texts` more (a long text's extra windows); OverloadedError when there is none."""
        self._batcher._hold(texts)
        self.texts += texts

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc: object) -> None:
        self._batcher._reserved -= self.texts
        self.texts = 0
        ADMITTED_TEXTS.set(self._batcher._reserved)


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
    ) -> None:
        if buckets.seq_lengths[-1] > max_batch_tokens:
            raise ValueError(f"max_batch_tokens {max_batch_tokens} cannot hold one text of {buckets.seq_lengths[-1]}")
        self._run_batch = run_batch
        self._buckets = buckets
        self._max_batch_size = buckets.batch_sizes[-1]
        self._max_batch_tokens = max_batch_tokens
        self._max_wait_s = max_wait_s
        self._max_queue_texts = max_queue_texts
        self._drain_timeout_s = drain_timeout_s
        self._queue: deque[_Pending] = deque()
        self._waiting = 0  # live texts in the queue; abandoned ones stay in the deque until the worker skips them
        self._reserved = 0  # texts of admitted requests not yet answered: what max_queue_texts bounds
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running: list[_Pending] = []  # the batch in the encoder
        self._encoder: _EncoderThread | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._drain_deadline: float | None = None  # set by the first drain(); later ones wait no longer

    async def __aenter__(self) -> "DynamicBatcher":
        self._encoder = _EncoderThread(self._run_batch)
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
            self._closing = True
            self._drain_deadline = time.perf_counter() + self._drain_timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, self._drain_deadline - time.perf_counter()))
        stopped = UnavailableError("the service is shutting down", code="shutting_down")
        for p in [*self._running, *self._queue]:
            if not p.future.done():
                p.future.set_exception(stopped)

    @property
    def queued_texts(self) -> int:
        return self._waiting

    def has_room(self) -> bool:
        """Whether a request of one text would be admitted now: checked before its body is even read."""
        return not self._closing and self._reserved < self._max_queue_texts

    def reserve(self, texts: int) -> Reservation:
        """Room for a request's texts, held until the returned reservation is closed (`with`)."""
        return Reservation(self, texts)

    def _hold(self, texts: int) -> None:
        if self._closing:
            raise UnavailableError("the service is shutting down", code="shutting_down")
        if self._reserved + texts > self._max_queue_texts:
            REJECTED_TOTAL.labels("queue_full").inc(texts)
            raise OverloadedError(
                f"the encoder queue is full ({self._reserved} of {self._max_queue_texts} texts); retry shortly"
            )
        self._reserved += texts
        ADMITTED_TEXTS.set(self._reserved)

    async def embed(self, texts: Sequence[npt.NDArray[np.int32]], reservation: Reservation) -> list[BatchedEmbedding]:
        """Embeds the token id arrays, in order, within the room `reservation` holds. Cancelling the caller
        drops its queued texts."""
        if len(texts) > reservation.texts:
            raise ValueError(f"{len(texts)} texts exceed the {reservation.texts} reserved")
        if self._closing:
            raise UnavailableError("the service is shutting down", code="shutting_down")
        loop = asyncio.get_running_loop()
        pending = [_Pending(ids, loop.create_future()) for ids in texts]
        self._queue.extend(pending)
        self._waiting += len(pending)
        QUEUE_TEXTS.set(self._waiting)
        self._idle.clear()
        self._arrived.set()
        try:
            if len(pending) == 1:
                return [await pending[0].future]
            return list(await asyncio.gather(*(p.future for p in pending)))
        finally:
            for p in pending:
                p.future.cancel()
                if p.waiting:  # abandoned: the worker will skip it
                    p.waiting = False
                    self._waiting -= 1
            QUEUE_TEXTS.set(self._waiting)

    async def _work(self) -> None:
        """Runs batches for ever; a failure outside the encoder call fails that batch, never the worker."""
        while True:
            while not self._queue:
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
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(ServiceError("the encoder failed on this batch", code="encoder_error"))

    async def _run(self, batch: list[_Pending]) -> None:
        assert self._encoder is not None, "the batcher runs inside `async with`"
        started = time.perf_counter()
        self._running = batch
        try:
            outputs = await self._encoder.submit([p.ids for p in batch])
        finally:
            self._running = []
        infer_s = time.perf_counter() - started
        STAGE_SECONDS.labels("infer").observe(infer_s)
        for p, embedding in zip(batch, outputs, strict=True):
            if not p.future.done():
                p.future.set_result(BatchedEmbedding(embedding, started - p.enqueued, infer_s, len(batch)))

    async def _wait_for_company(self) -> None:
        """Holds the batch open until it is full or its oldest text has waited `max_wait_s`."""
        deadline = self._queue[0].enqueued + self._max_wait_s
        while len(self._queue) < self._max_batch_size and (remaining := deadline - time.perf_counter()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _take_batch(self) -> list[_Pending]:
        """Takes live texts in arrival order while the batch stays within the size and token budgets."""
        batch: list[_Pending] = []
        longest = 0
        while self._queue:
            head = self._queue[0]
            if not head.waiting:
                self._queue.popleft()
                continue
            rows = self._buckets.batch_size(min(len(batch) + 1, self._max_batch_size))
            length = self._buckets.seq_length(max(longest, len(head.ids)))
            if batch and (len(batch) == self._max_batch_size or rows * length > self._max_batch_tokens):
                break
            batch.append(self._queue.popleft())
            head.waiting = False
            self._waiting -= 1
            longest = max(longest, len(head.ids))
        QUEUE_TEXTS.set(self._waiting)
        if batch:
            now = time.perf_counter()
            for p in batch:
                STAGE_SECONDS.labels("queue").observe(now - p.enqueued)
            BATCH_TEXTS.observe(len(batch))
            BATCH_PADDED_TOKENS.observe(self._buckets.batch_size(len(batch)) * self._buckets.seq_length(longest))
        return batch
