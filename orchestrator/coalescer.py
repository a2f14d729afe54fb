"""Coalescer: concurrent /classify requests share one embedding call and one head call.

Each hop call has a fixed cost (an HTTP or gRPC round trip, JSON and protobuf work, a connection-pool
walk) that, per request, would cost the two CPU cores the encoder needs; merged, 64 concurrent
one-text requests make a handful of calls instead of 128. Nothing waits to fill a batch: a batch
leaves as soon as one of `max_in_flight` call slots is free, taking every request queued by then (up to
`max_batch_texts`), so a lone request goes at once and a burst rides along with the calls in flight.

Tuning: `max_batch_texts` near the embedding service's batch size; `max_in_flight` enough to keep the
encoder fed while another batch is at the head (2-4); `max_queue_texts` bounds the wait (overflow: 429).

Requests are checked against the embedding service's limits before they queue (orchestrator/limits.py),
and a merged call never outgrows them. A text the embedding service still refuses fails only its own
request; the others go again together, in one more call."""

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from orchestrator.clients.embedding import EmbeddingRefusedError
from orchestrator.limits import check_texts
from orchestrator.metrics import COALESCED_REQUESTS, COALESCER_QUEUE_TEXTS
from orchestrator.pipeline import Classified, Pipeline
from service_common.deadline import Deadline
from service_common.errors import DeadlineExceededError, OverloadedError, UnavailableError
from service_common.logs import request_id_var

logger = logging.getLogger(__name__)

_WAITING_ON = {
    "queue": ("the orchestrator's queue", "queue_timeout"),
    "embedding": ("the embedding service", "embedding_timeout"),
    "head": ("the head", "head_timeout"),
}


@dataclass(eq=False)
class _Job:
    texts: list[str]
    texts_field: str  # `text` or `texts`: how errors name them
    chunk: bool  # long texts embedded whole: only requests that agree on it share a call
    size_bytes: int  # the texts' share of an embedding call's body
    deadline: Deadline
    request_id: str
    future: asyncio.Future[Classified]
    stage: list[str] = field(default_factory=lambda: ["queue"])  # shared with the other jobs of its batch


class Coalescer:
    def __init__(self, pipeline: Pipeline, *, max_batch_texts: int, max_in_flight: int, max_queue_texts: int) -> None:
        self._pipeline = pipeline
        self._max_batch_texts = max_batch_texts
        self._max_in_flight = max_in_flight
        self._max_queue_texts = max_queue_texts
        self._queue: deque[_Job] = deque()
        self._queued_texts = 0
        self._in_flight: dict[asyncio.Task[None], list[_Job]] = {}
        self._closing = False

    async def classify(self, texts: list[str], deadline: Deadline, field: str, *, chunk: bool = False) -> Classified:
        """`field` is how the caller sent the texts (`text` or `texts`), for errors naming one of them;
        `chunk`: texts over the encoder's max length are classified on all of their text."""
        if self._closing:
            raise UnavailableError("the orchestrator is shutting down", code="shutting_down")
        size_bytes = check_texts(texts, field, self._pipeline.embedding.limits, self._max_queue_texts)
        if self._queued_texts + len(texts) > self._max_queue_texts:
            raise OverloadedError(f"the orchestrator has {self._queued_texts} texts queued; retry shortly")
        future = asyncio.get_running_loop().create_future()
        job = _Job(texts, field, chunk, size_bytes, deadline, request_id_var.get(), future)
        self._queue.append(job)
        self._queued_texts += len(texts)
        self._dispatch()
        COALESCER_QUEUE_TEXTS.set(self._queued_texts)
        try:
            async with asyncio.timeout(deadline.remaining_s()):
                return await asyncio.shield(job.future)
        except TimeoutError:
            where, code = _WAITING_ON[job.stage[0]]
            raise DeadlineExceededError(f"the request's deadline passed while waiting on {where}", code=code) from None
        finally:
            job.future.cancel()  # no-op when done; else its batch skips it (or no longer delivers to it)

    def _dispatch(self) -> None:
        limits = self._pipeline.embedding.limits
        max_texts = (
            self._max_batch_texts if limits is None else min(self._max_batch_texts, limits.max_texts_per_request)
        )
        max_bytes = None if limits is None else limits.max_call_bytes
        while self._queue and len(self._in_flight) < self._max_in_flight:
            jobs: list[_Job] = []
            texts = size = 0
            while self._queue and (
                not jobs
                or (
                    self._queue[0].chunk == jobs[0].chunk
                    and texts + len(self._queue[0].texts) <= max_texts
                    and (max_bytes is None or size + self._queue[0].size_bytes <= max_bytes)
                )
            ):
                job = self._queue.popleft()
                self._queued_texts -= len(job.texts)
                if not job.future.done():  # its caller went away while it was queued
                    jobs.append(job)
                    texts += len(job.texts)
                    size += job.size_bytes
            if jobs:
                task = asyncio.create_task(self._run(jobs))
                self._in_flight[task] = jobs
                task.add_done_callback(self._finished)

    async def aclose(self, grace_s: float) -> None:
        """At shutdown: new requests are refused; queued ones and calls under way get `grace_s` to finish,
        and what is unfinished then is answered 503. Safe to call more than once."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._in_flight and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._in_flight), timeout=remaining)  # finished calls dispatch the queue
        stopped = UnavailableError("the orchestrator is shutting down", code="shutting_down")
        queued = list(self._queue)
        self._queue.clear()
        self._queued_texts = 0
        _deliver_error(queued, stopped)
        for task, jobs in list(self._in_flight.items()):
            _deliver_error(jobs, stopped)
            task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._dispatch()
        COALESCER_QUEUE_TEXTS.set(self._queued_texts)

    async def _run(self, jobs: list[_Job]) -> None:
        COALESCED_REQUESTS.observe(len(jobs))  # per embedding call, a refused call's second one included
        request_id_var.set(jobs[0].request_id)  # the id the hops see; this line ties the others to it
        if len(jobs) > 1:
            others = " ".join(j.request_id for j in jobs[1:])
            logger.info("hop calls for %d requests under this id; the others: %s", len(jobs), others)
        stage = ["embedding"]
        for job in jobs:
            job.stage = stage
        deadline = max((j.deadline for j in jobs), key=lambda d: d.expires_at)
        texts = [text for job in jobs for text in job.texts]
        try:
            embedded = await self._pipeline.embed(texts, deadline, chunk=jobs[0].chunk)
            stage[0] = "head"
            classified = await self._pipeline.score(embedded, deadline)
        except EmbeddingRefusedError as refusal:
            await self._refused(jobs, refusal)
            return
        except Exception as exc:
            _deliver_error(jobs, exc)
            return
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(classified.rows(start, start + len(job.texts)))
            start += len(job.texts)

    async def _refused(self, jobs: list[_Job], refusal: EmbeddingRefusedError) -> None:
        """Only the request whose text was refused gets the error, in its own terms; the others go again
        together, in one call. A refusal of a merged call as a whole (the embedding service's limits
        changed under it) splits the call in two."""
        if len(jobs) == 1:
            _deliver_error(jobs, refusal.for_caller(jobs[0].texts_field, refusal.index))
            return
        start = 0
        for job in jobs:
            if refusal.index is not None and start <= refusal.index < start + len(job.texts):
                _deliver_error([job], refusal.for_caller(job.texts_field, refusal.index - start))
                rest = [j for j in jobs if not j.future.done()]
                if rest:
                    await self._run(rest)
                return
            start += len(job.texts)
        half = len(jobs) // 2
        await self._run(jobs[:half])
        await self._run(jobs[half:])


def _deliver_error(jobs: list[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
