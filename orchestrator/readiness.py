"""DownstreamMonitor: checks both hops once a second, so /readyz answers at once and says what is wrong.

Each check also refreshes the head registry: the heads in TF Serving's config, their available versions,
each new version's input dimension and label names (read before the first request needs them), and
(over REST) the pinned versions. Ready means: the embedding service is, and the default head can answer;
another head's problem is reported in /v1/heads and fails only the requests that name it."""

import asyncio
import logging

from orchestrator.clients.embedding import EmbeddingClient
from orchestrator.heads import HeadRegistry
from orchestrator.pipeline import Pipeline
from service_common.errors import ServiceError

logger = logging.getLogger(__name__)


class DownstreamMonitor:
    def __init__(self, heads: HeadRegistry, interval_s: float, timeout_s: float) -> None:
        self.heads = heads
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._last_dimensions: int | None = None  # the encoder's, as last seen: kept while it is down
        self._dimensions: int | None = None  # read again whenever the embedding service was not ready
        self._reason: str | None = "the downstream services have not been checked yet"

    def not_ready_reason(self) -> str | None:
        return self._reason

    async def check(self, pipeline: Pipeline) -> None:
        """The heads are refreshed whatever the embedding service's state, so a request names its real
        problem (the embedding service down, say) rather than heads not yet known."""
        reason: str | None
        try:
            dimensions: int | None = await self._embedding_dimensions(pipeline.embedding)
            reason = None
        except ServiceError as exc:
            dimensions, reason = None, exc.message
        await self.heads.refresh(pipeline.head, pipeline.labels, dimensions or self._last_dimensions, self.timeout_s)
        self._last_dimensions = dimensions or self._last_dimensions
        reason = reason or self.heads.not_ready_reason()
        if reason != self._reason:
            if reason is None:
                logger.info("ready")
            else:
                logger.warning("not ready: %s", reason)
        self._reason = reason

    async def _embedding_dimensions(self, embedding: EmbeddingClient) -> int:
        try:
            await embedding.check_ready(self.timeout_s)
            if self._dimensions is None:
                self._dimensions = await embedding.describe(self.timeout_s)
            return self._dimensions
        except ServiceError:
            self._dimensions = None
            raise

    async def watch(self, pipeline: Pipeline) -> None:
        while True:
            try:
                await self.check(pipeline)
            except Exception as exc:  # a bug in a check must not stop the checking
                logger.exception("readiness check failed")
                self._reason = f"readiness check failed: {exc}"
            await asyncio.sleep(self.interval_s)
