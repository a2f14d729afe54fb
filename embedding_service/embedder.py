"""The service core, free of HTTP: checks limits, tokenizes off the event loop, batches, reports timings."""

import asyncio
import time
from dataclasses import dataclass

from embedding_service.batcher import DynamicBatcher
from embedding_service.encoder import Embedding
from embedding_service.manifest import EncoderManifest
from embedding_service.metrics import REJECTED_TOTAL, STAGE_SECONDS, TEXTS_TOTAL, TRUNCATED_TOTAL
from embedding_service.settings import EmbeddingSettings
from embedding_service.tokenizer import Tokenizer
from service_common.errors import DeadlineExceededError, InvalidRequestError, NotFoundError

# Below this many characters a request is tokenized inline: a thread hop would cost more than it saves.
_INLINE_TOKENIZE_CHARS = 4096


@dataclass(frozen=True)
class Embedded:
    embeddings: list[Embedding]
    truncated: list[int]
    prompt_tokens: int
    tokenize_s: float
    queue_s: float
    infer_s: float

    def server_timing(self) -> str:
        return ", ".join(
            f"{name};dur={seconds * 1e3:.2f}"
            for name, seconds in (
                ("tokenize", self.tokenize_s),
                ("queue", self.queue_s),
                ("infer", self.infer_s),
            )
        )


class Embedder:
    def __init__(
        self,
        manifest: EncoderManifest,
        tokenizer: Tokenizer,
        batcher: DynamicBatcher,
        settings: EmbeddingSettings,
    ) -> None:
        self.manifest = manifest
        self._tokenizer = tokenizer
        self._batcher = batcher
        self._settings = settings

    def check_model(self, requested: str | None) -> None:
        """Accepts the served name or its last path part (`all-MiniLM-L6-v2`), or none at all."""
        served = self.manifest.model_name
        if requested is not None and requested not in (served, served.rsplit("/", 1)[-1]):
            raise NotFoundError(
                f"model {requested!r} is not served here; this service serves {served!r}",
                param="model",
                code="model_not_found",
            )

    async def embed(self, texts: list[str], *, truncate: bool, field: str, timeout_s: float) -> Embedded:
        """`field` names the request field in errors, e.g. `input[3]`; past `timeout_s` the texts are dropped."""
        self._check_limits(texts, field)
        started = time.perf_counter()
        if sum(map(len, texts)) <= _INLINE_TOKENIZE_CHARS:
            tokenized = self._tokenizer(texts)
        else:
            tokenized = await asyncio.to_thread(self._tokenizer, texts)
        tokenize_s = time.perf_counter() - started
        STAGE_SECONDS.labels("tokenize").observe(tokenize_s)
        truncated = [i for i, t in enumerate(tokenized) if t.truncated]
        if truncated and not truncate:
            REJECTED_TOTAL.labels("too_long").inc(len(texts))
            raise InvalidRequestError(
                f"{field}[{truncated[0]}] is longer than the model's {self.manifest.max_seq_length} tokens "
                "and truncate is false",
                param=f"{field}[{truncated[0]}]",
                code="context_length_exceeded",
            )
        try:
            async with asyncio.timeout(timeout_s):
                batched = await self._batcher.embed([t.ids for t in tokenized])
        except TimeoutError:
            raise DeadlineExceededError(f"embedding did not finish within {timeout_s:.3g}s", code="timeout") from None
        TEXTS_TOTAL.inc(len(texts))
        TRUNCATED_TOTAL.inc(len(truncated))
        return Embedded(
            embeddings=[b.embedding for b in batched],
            truncated=truncated,
            prompt_tokens=sum(len(t.ids) for t in tokenized),
            tokenize_s=tokenize_s,
            queue_s=max(b.queue_s for b in batched),
            infer_s=max(b.infer_s for b in batched),
        )

    def _check_limits(self, texts: list[str], field: str) -> None:
        limit = self._settings.max_texts_per_request
        if len(texts) > limit:
            REJECTED_TOTAL.labels("too_many_texts").inc(len(texts))
            raise InvalidRequestError(
                f"{field} has {len(texts)} texts; at most {limit} are allowed per request",
                param=field,
                code="too_many_texts",
            )
        max_chars = self._settings.max_chars_per_text
        for index, text in enumerate(texts):
            if len(text) > max_chars:
                REJECTED_TOTAL.labels("too_many_chars").inc(len(texts))
                raise InvalidRequestError(
                    f"{field}[{index}] has {len(text)} characters; at most {max_chars} are allowed",
                    param=f"{field}[{index}]",
                    code="text_too_long",
                )
