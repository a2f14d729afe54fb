"""DownstreamMonitor: checks both hops once a second, so /readyz answers at once and says what is wrong.

Each check also reads the label names of a newly available head version before the first request
needs them, and (over REST) moves the pinned version forward."""

import asyncio
import logging

from orchestrator.clients.embedding import EmbeddingClient
from orchestrator.pipeline import Pipeline
from service_common.deadline import Deadline
from service_common.errors import ServiceError, UnavailableError

logger = logging.getLogger(__name__)


class DownstreamMonitor:
    def __init__(self, interval_s: float, timeout_s: float) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.version: int | None = None
        self._dimensions: int | None = None  # read again whenever the embedding service was not ready
        self._reason: str | None = "the downstream services have not been checked yet"

    def not_ready_reason(self) -> str | None:
        return self._reason

    async def check(self, pipeline: Pipeline) -> None:
        try:
            dimensions = await self._embedding_dimensions(pipeline.embedding)
            version = await pipeline.head.available_version(self.timeout_s)
            if version is None:
                raise UnavailableError("the head has no available model version")
            await pipeline.labels.names(version, dimensions, Deadline(self.timeout_s))
            reason = None
        except ServiceError as exc:
            reason, version = exc.message, None
        if reason != self._reason:
            if reason is None:
                logger.info("ready")
            else:
                logger.warning("not ready: %s", reason)
        if version is not None and version != self.version:
            logger.info("head version %d is available", version)
            self.version = version
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
