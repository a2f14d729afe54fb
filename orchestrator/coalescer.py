"""Coalescer: concurrent /classify requests share one embedding call per encoder, then one head call per
head named.

Each hop call has a fixed cost (an HTTP or gRPC round trip, JSON and protobuf work, a connection-pool
walk) that, per request, would cost the two CPU cores the encoder needs; merged, 64 concurrent
one-text requests make a handful of calls instead of 128. Nothing waits to fill a batch: a batch
leaves as soon as one of `max_in_flight` call slots is free, taking every request queued by then (up to
`max_batch_texts`), so a lone request goes at once and a burst rides along with the calls in flight.

Tuning: `max_batch_texts` near the embedding service's batch size; `max_in_flight` enough to keep the
encoder fed while another batch is at the head: 2 for a CPU encoder, whose batches take far longer than
that (fewer, fuller calls: at 64 concurrent requests on 2 cores, 20 requests a call instead of 10 with 4,
a fifth less CPU per request in the orchestrator and the head together, the same throughput), 3-4 for a
GPU's quicker batches; `max_queue_texts` bounds the wait (overflow: 429).

A request is split by encoder first: the heads it names are routed to the encoder each one's answering
version was trained on (orchestrator.heads), and its texts queue once per encoder; a fan-out over heads on
two encoders makes two embedding calls, and its answer joins both parts.

Requests are checked against the embedding service's limits before they queue (orchestrator/limits.py),
and a merged call never outgrows them. A text the embedding service still refuses fails only its own
request; the others go again together, in one more call."""

import asyncio
import logging
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.trace import SpanContext, SpanKind

from orchestrator.clients.embedding import Embedded, EmbeddingRefusedError
from orchestrator.limits import EmbeddingLimits, check_texts
from orchestrator.metrics import COALESCED_REQUESTS, COALESCER_QUEUE_TEXTS, ENCODER_REFUSALS_TOTAL
from orchestrator.pipeline import Answer, Classified, EncoderMovedError, Pipeline
from service_common import tracing
from service_common.deadline import Deadline
from service_common.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    ServiceError,
    UnavailableError,
)
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
    heads: tuple[str, ...]  # the heads it asks, in its order
    encoder: str  # the encoder those heads take: only requests for one encoder share a call
    chunk: bool  # long texts embedded whole: only requests that agree on it share a call
    size_bytes: int  # the texts' share of an embedding call's body
    deadline: Deadline
    request_id: str
    trace: SpanContext  # the request's span: a shared hop call's parent (the first job's) or link
    future: asyncio.Future[Answer]
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

    async def classify(
        self,
        texts: list[str],
        deadline: Deadline,
        field: str,
        heads: tuple[str, ...],
        *,
        fan_out: bool = False,
        chunk: bool = False,
    ) -> Answer:
        """`field` is how the caller sent the texts (`text` or `texts`), for errors naming one of them;
        each of `heads` answers for every text; `fan_out`: the caller named them as `heads`, and a head that
        cannot answer fails only its own entry; `chunk`: texts over the encoder's max length are classified
        on all of their text."""
        if self._closing:
            raise UnavailableError("the orchestrator is shutting down", code="shutting_down")
        routes: dict[str, list[str]] = {}  # encoder -> the heads that take its vectors
        failed: dict[str, ServiceError] = {}
        for index, head in enumerate(heads):
            try:
                encoder = await self._pipeline.route(head, f"heads[{index}]" if fan_out else "head", deadline)
            except ServiceError as exc:
                _count_refusal(head, exc)
                if not fan_out:
                    raise
                failed[head] = exc
                continue
            routes.setdefault(encoder, []).append(head)
        parts = [self._part(texts, deadline, field, tuple(group), encoder, chunk) for encoder, group in routes.items()]
        if len(parts) == 1 and not failed:  # the common case, awaited as it is: a refusal costs no task
            only = await parts[0]
            return {head: only[head] for head in heads}
        answers = await asyncio.gather(*parts, return_exceptions=True)
        errors = [a for a in answers if isinstance(a, BaseException)]
        for error in errors:
            if (
                not isinstance(error, ServiceError)
                or isinstance(error, InvalidRequestError)
                or len(errors) == len(parts)
            ):
                raise error  # the caller's texts refused, or nothing to answer with: the request's error
        results: Answer = dict(failed)
        for group, answer in zip(routes.values(), answers, strict=True):
            if isinstance(answer, ServiceError):
                results.update(dict.fromkeys(group, answer))
            elif isinstance(answer, dict):
                results.update(answer)
        return {head: results[head] for head in heads}

    async def _part(
        self, texts: list[str], deadline: Deadline, field: str, heads: tuple[str, ...], encoder: str, chunk: bool
    ) -> Answer:
        """The heads of one encoder, on one embedding of the texts shared with other requests."""
        if self._closing:  # it began closing while this request was being routed
            raise UnavailableError("the orchestrator is shutting down", code="shutting_down")
        size_bytes = check_texts(texts, field, self._limits(encoder), self._max_queue_texts)
        if self._queued_texts + len(texts) > self._max_queue_texts:
            raise OverloadedError(f"the orchestrator has {self._queued_texts} texts queued; retry shortly")
        future = asyncio.get_running_loop().create_future()
        job = _Job(
            texts, field, heads, encoder, chunk, size_bytes, deadline, request_id_var.get(), tracing.current(), future
        )
        self._queue.append(job)
        self._queued_texts += len(texts)
        self._dispatch()
        COALESCER_QUEUE_TEXTS.set(self._queued_texts)
        try:
            async with asyncio.timeout(deadline.remaining_s()):
                return await job.future  # cancelled with this task: its batch then skips it
        except TimeoutError:
            where, code = _WAITING_ON[job.stage[0]]
            raise DeadlineExceededError(f"the request's deadline passed while waiting on {where}", code=code) from None

    def _limits(self, encoder: str) -> EmbeddingLimits | None:
        try:
            return self._pipeline.endpoints.serving(encoder).limits
        except ServiceError:  # no longer served: the call says so
            return None

    def _dispatch(self) -> None:
        while self._queue and len(self._in_flight) < self._max_in_flight:
            limits = self._limits(self._queue[0].encoder)
            max_texts = (
                self._max_batch_texts if limits is None else min(self._max_batch_texts, limits.max_texts_per_request)
            )
            max_bytes = None if limits is None else limits.max_call_bytes
            jobs: list[_Job] = []
            texts = size = 0
            while self._queue and (
                not jobs
                or (
                    self._queue[0].chunk == jobs[0].chunk
                    and self._queue[0].encoder == jobs[0].encoder
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
            with _hop_span("embed_call", jobs, texts=len(texts)):
                embedded = await self._pipeline.embed(texts, deadline, chunk=jobs[0].chunk, encoder=jobs[0].encoder)
        except EmbeddingRefusedError as refusal:
            await self._refused(jobs, refusal)
            return
        except Exception as exc:
            _deliver_error(jobs, exc)
            return
        stage[0] = "head"
        await self._score(jobs, embedded, deadline)

    async def _score(self, jobs: list[_Job], embedded: Embedded, deadline: Deadline) -> None:
        """One Predict per head that any of the jobs names, all at once, each on the rows of the jobs that
        name it; a head that fails fails only its own part of each answer. A head that moved to another
        encoder while the texts were embedded (its new version loaded) gets each job's texts embedded
        again for it, job by job."""
        spans, start = [], 0
        for job in jobs:
            spans.append(range(start, start + len(job.texts)))
            start += len(job.texts)
        wanted = list(dict.fromkeys(head for job in jobs for head in job.heads))
        calls = []
        for head in wanted:
            asking = [job for job in jobs if head in job.heads]
            rows = [row for job, span in zip(jobs, spans, strict=True) if head in job.heads for row in span]
            vectors = embedded.vectors if len(rows) == len(embedded.vectors) else embedded.vectors[rows]
            calls.append(self._head_call(head, vectors, embedded, deadline, asking))
        results = dict(zip(wanted, await asyncio.gather(*calls, return_exceptions=True), strict=True))
        offsets = dict.fromkeys(wanted, 0)
        answers: list[Answer] = []
        moved = []
        for job, span in zip(jobs, spans, strict=True):
            truncated = [i - span.start for i in embedded.truncated if i in span]
            chunked = [(i - span.start, n) for i, n in embedded.chunked if i in span]
            answer: Answer = {}
            for head in job.heads:
                result = results[head]
                if isinstance(result, Classified):
                    answer[head] = result.rows(offsets[head], offsets[head] + len(span), truncated, chunked)
                elif isinstance(result, EncoderMovedError):
                    moved.append((answer, job, head, result.encoder))
                else:
                    answer[head] = _as_service_error(result)
                offsets[head] += len(span)
            answers.append(answer)
        again = await asyncio.gather(*(self._moved(job, head, encoder) for _, job, head, encoder in moved))
        for (answer, _, head, _), result in zip(moved, again, strict=True):
            answer[head] = result
        for job, answer in zip(jobs, answers, strict=True):
            for head, result in answer.items():
                if isinstance(result, ServiceError):
                    _count_refusal(head, result)
            if not job.future.done():
                job.future.set_result({head: answer[head] for head in job.heads})

    async def _head_call(
        self, head: str, vectors: np.ndarray, made: Embedded, deadline: Deadline, jobs: list[_Job]
    ) -> Classified:
        with _hop_span("head_call", jobs, texts=len(vectors), head=head):
            return await self._pipeline.score(head, vectors, made, deadline)

    async def _moved(self, job: _Job, head: str, encoder: str) -> Classified | ServiceError:
        """One job's texts embedded for the encoder `head` takes now, on their own (a move is an upgrade's
        moment, not a steady state), under that encoder's limits and the job's own names for a text its
        service refuses."""
        logger.info("head %s moved to encoder %s while its texts were embedded: embedding them again", head, encoder)
        try:
            check_texts(job.texts, job.texts_field, self._limits(encoder), self._max_queue_texts)
            with _hop_span("embed_call", [job], texts=len(job.texts), encoder=encoder):
                again = await self._pipeline.embed(job.texts, job.deadline, chunk=job.chunk, encoder=encoder)
            with _hop_span("head_call", [job], texts=len(job.texts), head=head):
                scored = await self._pipeline.score(head, again.vectors, again, job.deadline)
        except EmbeddingRefusedError as refusal:
            return refusal.for_caller(job.texts_field, refusal.index)
        except EncoderMovedError as moved_again:  # it moved again: never fed another encoder's vectors
            return moved_again.mismatch()
        except ServiceError as exc:
            return exc
        return scored.rows(0, len(job.texts), again.truncated, again.chunked)

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


def _hop_span(name: str, jobs: list[_Job], **attributes: str | int) -> AbstractContextManager[object]:
    """One span for a hop call shared by `jobs`: a child of the first one's request, linked to every other,
    so each merged request's trace shows the call that served it."""
    if not tracing.enabled():
        return tracing.span(name)
    return tracing.span(
        name,
        kind=SpanKind.CLIENT,
        parent=jobs[0].trace,
        links=[job.trace for job in jobs[1:]],
        attributes={"coalesced.requests": len(jobs), **{f"hop.{key}": value for key, value in attributes.items()}},
    )


def _count_refusal(head: str, error: ServiceError) -> None:
    if error.code in ("encoder_mismatch", "unstamped_head", "unchecked_precision"):
        ENCODER_REFUSALS_TOTAL.labels(head, error.code).inc()


def _as_service_error(error: BaseException) -> ServiceError:
    if isinstance(error, ServiceError):
        return error
    logger.error("a head call failed unexpectedly", exc_info=error)
    return ServiceError("the head call failed unexpectedly", code="internal")


def _deliver_error(jobs: list[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
