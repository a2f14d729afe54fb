"""The service core, free of HTTP: limits, queue room reserved before any work, tokenizing on a bounded
pool, long texts cut, refused or split into windows, big requests fed to the batcher a slice at a time."""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

from embedding_service.batcher import BatchedEmbedding, DynamicBatcher
from embedding_service.encoder import Embedding, FloatArray
from embedding_service.inputs import FOREIGN_IDS, Inputs, invalid, parse_input, texts_input
from embedding_service.manifest import EncoderManifest
from embedding_service.metrics import REJECTED_TOTAL, STAGE_SECONDS, TEXTS_TOTAL, TRUNCATED_TOTAL
from embedding_service.room import Reservation
from embedding_service.settings import EmbeddingSettings
from embedding_service.tokenizer import Ids, Tokenizer, Tokens
from embedding_service.windows import combine, windows
from service_common import tracing
from service_common.errors import DeadlineExceededError, InvalidRequestError, NotFoundError

T = TypeVar("T")
LongTexts = Literal["truncate", "refuse", "chunk"]  # what becomes of a text over the max sequence length

# Below this many characters (or ids) a request is prepared inline: a thread hop would cost more than it saves.
_INLINE_PREPARE_SIZE = 4096
# Slices of a big request in the batcher's queue at once: enough to keep the encoder fed, few enough that
# other callers' texts are never more than two batches behind it.
_SLICES_IN_FLIGHT = 2
# orjson writes a float32 in at most ~13 bytes with its comma: what a token-level answer is sized by.
_JSON_BYTES_PER_FLOAT = 13


@dataclass(frozen=True)
class _Plan:
    """What the encoder runs for a request: every window of every input, in order."""

    windows: list[Ids]
    groups: list[range]  # each input's windows
    truncated: list[int]
    chunked: list[tuple[int, int]]  # (input index, windows) for inputs split into more than one


@dataclass(frozen=True)
class Embedded:
    windows: list[list[Embedding]]  # each input's windows: one, unless it was chunked
    truncated: list[int]
    chunked: list[tuple[int, int]]
    prompt_tokens: int
    tokenize_s: float
    queue_s: float
    infer_s: float

    def sentences(self, *, normalize: bool) -> list[FloatArray]:
        """The model's own sentence vector of each input; a chunked one's is its windows' weighted mean."""
        return [
            combine([w.sentence for w in group], [w.length for w in group], normalize=normalize)
            for group in self.windows
        ]

    def server_timing(self) -> str:
        return ", ".join(
            f"{name};dur={seconds * 1e3:.2f}"
            for name, seconds in (("tokenize", self.tokenize_s), ("queue", self.queue_s), ("infer", self.infer_s))
        )


class Embedder:
    def __init__(
        self,
        manifest: EncoderManifest,
        tokenizer: Tokenizer,
        batcher: DynamicBatcher,
        settings: EmbeddingSettings,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.manifest = manifest
        self.tokenizer = tokenizer
        self._batcher = batcher
        self._settings = settings
        self._pool = pool
        served = manifest.model_name
        self._names = {served, served.rsplit("/", 1)[-1], *settings.model_alias_list}

    def has_room(self) -> bool:
        return self._batcher.has_room()

    def check_model(self, requested: str | None) -> None:
        """Accepts the served name, its last path part (`all-MiniLM-L6-v2`), a configured alias, or none."""
        if requested is not None and requested not in self._names:
            raise NotFoundError(
                f"model {requested[:200]!r} is not served here; this service serves {self.manifest.model_name!r}",
                param="model",
                code="model_not_found",
            )

    async def embed(
        self,
        raw: Any,
        *,
        field: str,
        long_texts: LongTexts,
        timeout_s: float,
        key: str | None = None,
        user: str | None = None,
        token_level: bool = False,
        token_output: bool = False,
    ) -> Embedded:
        """`raw` is OpenAI's `input` (texts or token ids) when `field` is `input`, else a list of texts, for
        the caller authenticated by the named key `key` (None: anonymous, in the flow `user`). Queue room is
        reserved and the lane's quota checked before any tokenizing; past `timeout_s` the texts are dropped.
        A `token_level` request (it reads token vectors: another pooling than the model's) bypasses the
        cache; for a `token_output` answer (the token vectors themselves), inputs whose vectors would pass
        `max_response_bytes` are refused."""
        count = len(raw) if isinstance(raw, list) and raw and not isinstance(raw[0], int) else 1
        self._check_count(count, field)
        with self._batcher.reserve(count, key, user) as reservation:
            started = time.perf_counter()
            with tracing.span("tokenize", attributes={"embedding.inputs": count}):
                inputs, plan = await self._off_the_loop(_size(raw), self._prepare, raw, field, long_texts)
            tokenize_s = time.perf_counter() - started
            STAGE_SECONDS.labels("tokenize").observe(tokenize_s)
            if token_output:
                self._check_answer_size(sum(len(ids) for ids in plan.windows), field)
            if len(plan.windows) > count:
                self._check_count(len(plan.windows), field, "windows")
                reservation.grow(len(plan.windows) - count)
            queued_ns = time.time_ns()
            try:
                async with asyncio.timeout(timeout_s):
                    batched = await self._encode(plan.windows, reservation, token_level)
            except TimeoutError:
                raise DeadlineExceededError(
                    f"embedding did not finish within {timeout_s:.3g}s", code="timeout"
                ) from None
        computed = [b for b in batched if b.batch_texts]
        if computed and tracing.enabled():
            waited_ns = int(max(b.queue_s for b in computed) * 1e9)
            attributes: dict[str, str | int] = {
                "embedding.texts": len(computed),
                "embedding.lane": reservation.lane.name,
            }
            tracing.record("queue", queued_ns, queued_ns + waited_ns, attributes)
        TEXTS_TOTAL.inc(len(inputs))
        TRUNCATED_TOTAL.inc(len(plan.truncated))
        return Embedded(
            windows=[[batched[i].embedding for i in group] for group in plan.groups],
            truncated=plan.truncated,
            chunked=plan.chunked,
            prompt_tokens=sum(len(ids) for ids in plan.windows),
            tokenize_s=tokenize_s,
            queue_s=max(b.queue_s for b in batched),
            infer_s=max(b.infer_s for b in batched),
        )

    async def tokens(self, texts: list[str], *, add_special_tokens: bool) -> list[Tokens]:
        return await self._off_the_loop(
            sum(map(len, texts)), partial(self.tokenizer.tokens, add_special_tokens=add_special_tokens), texts
        )

    def _check_answer_size(self, tokens: int, field: str) -> None:
        size = tokens * self.manifest.embedding_dim * _JSON_BYTES_PER_FLOAT
        limit = self._settings.max_response_bytes
        if size > limit:
            raise InvalidRequestError(
                f"{field} hold {tokens} tokens: their token vectors would be about {size / 1e6:.0f} MB of JSON, "
                f"over this service's {limit / 1e6:.0f} MB (EMBEDDING_MAX_RESPONSE_BYTES); send fewer texts, or "
                "ask for a pooling",
                param=field,
                code="response_too_large",
            )

    def _check_count(self, count: int, field: str, what: str = "texts") -> None:
        limit = self._settings.max_texts_per_request
        if count > limit:
            REJECTED_TOTAL.labels("too_many_texts").inc(count)
            raise InvalidRequestError(
                f"{field} has {count} {what}; at most {limit} are allowed per request",
                param=field,
                code="too_many_texts",
            )

    async def _off_the_loop(self, size: int, function: Callable[..., T], *args: Any) -> T:
        if size <= _INLINE_PREPARE_SIZE:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def _prepare(self, raw: Any, field: str, long_texts: LongTexts) -> tuple[Inputs, _Plan]:
        """Parses, checks and tokenizes the inputs, and plans their windows."""
        vocab_size = self.tokenizer.vocab_size
        inputs = parse_input(raw, vocab_size=vocab_size) if field == "input" else texts_input(raw, field)
        max_chars = self._settings.max_chars_per_text
        if inputs.texts is not None:
            for name, text in zip(inputs.names, inputs.texts, strict=True):
                if len(text) > max_chars:
                    REJECTED_TOTAL.labels("too_many_chars").inc(len(inputs))
                    raise invalid(name, f"has {len(text)} characters; at most {max_chars} are allowed", "text_too_long")
            contents = self.tokenizer.content(inputs.texts)
        else:
            assert inputs.ids is not None
            for name, ids in zip(inputs.names, inputs.ids, strict=True):
                if len(ids) > max_chars:
                    raise invalid(name, f"has {len(ids)} token ids; at most {max_chars} are allowed", "text_too_long")
            contents = [self.tokenizer.strip(ids) for ids in inputs.ids]
        return inputs, self._plan(inputs, contents, long_texts)

    def _plan(self, inputs: Inputs, contents: list[Ids], long_texts: LongTexts) -> _Plan:
        size = self.tokenizer.max_content
        planned: list[Ids] = []
        groups: list[range] = []
        truncated: list[int] = []
        chunked: list[tuple[int, int]] = []
        for index, content in enumerate(contents):
            parts = [content]
            if len(content) > size:
                if long_texts == "refuse":
                    REJECTED_TOTAL.labels("too_long").inc(len(contents))
                    hint = f": {FOREIGN_IDS}" if inputs.ids is not None else ""
                    raise invalid(
                        inputs.names[index],
                        f"is longer than the model's {self.manifest.max_seq_length} tokens and truncate is false{hint}",
                        "context_length_exceeded",
                    )
                if long_texts == "truncate":
                    parts = [content[:size]]
                    truncated.append(index)
                else:
                    parts = windows(content, size, self._settings.chunk_overlap_tokens)
                    chunked.append((index, len(parts)))
            groups.append(range(len(planned), len(planned) + len(parts)))
            planned += [self.tokenizer.wrap(part) for part in parts]
        return _Plan(planned, groups, truncated, chunked)

    async def _encode(self, ids: list[Ids], reservation: Reservation, token_level: bool) -> list[BatchedEmbedding]:
        """A big request goes to the batcher a slice at a time, so the texts of other callers that arrive
        meanwhile join the next batches instead of waiting behind all of it."""
        size = self._settings.max_batch_size
        if not ids:
            return []
        if len(ids) <= size * _SLICES_IN_FLIGHT:
            return await self._batcher.embed(ids, reservation, token_vectors=token_level)
        done: list[BatchedEmbedding] = []
        in_flight: deque[asyncio.Task[list[BatchedEmbedding]]] = deque()
        try:
            for start in range(0, len(ids), size):
                in_flight.append(
                    asyncio.create_task(
                        self._batcher.embed(ids[start : start + size], reservation, token_vectors=token_level)
                    )
                )
                if len(in_flight) == _SLICES_IN_FLIGHT:
                    done += await in_flight.popleft()
            while in_flight:
                done += await in_flight.popleft()
        finally:
            for task in in_flight:
                task.cancel()
        return done


def _size(raw: Any) -> int:
    """Characters or ids to prepare: what decides whether it is worth a thread hop."""
    if isinstance(raw, str):
        return len(raw)
    if isinstance(raw, list):
        return sum(len(item) if isinstance(item, str | list) else 1 for item in raw)
    return 0
