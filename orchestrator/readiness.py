"""DownstreamMonitor: checks both hops once a second, so /readyz answers at once and says what is wrong.

Each check reads every embedding service's state and encoder identity, then refreshes the head registry:
the heads in TF Serving's config, their available versions and each new version's facts (input size,
label names, encoder stamp), read before the first request needs them. Ready means: the default head has
a version whose encoder an embedding service serves, and that service is ready; another head's problem is
reported in /v1/heads and fails only the requests that name it."""

import asyncio
import logging

from orchestrator.metrics import ENCODER_HEAD_VERSIONS
from orchestrator.pipeline import Pipeline

logger = logging.getLogger(__name__)


class DownstreamMonitor:
    def __init__(self, interval_s: float, timeout_s: float) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._reason: str | None = "the downstream services have not been checked yet"
        self._counted: set[str] = set()  # the encoders ENCODER_HEAD_VERSIONS has a series for

    def not_ready_reason(self) -> str | None:
        return self._reason

    async def check(self, pipeline: Pipeline) -> None:
        """The heads are refreshed whatever the embedding services' state, so a request names its real
        problem (the embedding service down, say) rather than heads not yet known."""
        endpoints, registry = pipeline.endpoints, pipeline.heads
        await endpoints.check(self.timeout_s)
        await registry.refresh(pipeline.head, pipeline.catalog, self.timeout_s)
        encoders = endpoints.encoders()
        reason: str | None
        if not encoders:
            reason = endpoints.problems() or "no embedding service has named its encoder yet"
        else:
            reason = registry.not_ready_reason(encoders)
            if reason is None:  # the default head takes an encoder served: is a service serving it ready?
                routed = registry.route(registry.default, "head", encoders, endpoints.ready_encoders())
                reason = endpoints.problem(routed)
        self._count_versions(pipeline, encoders)
        if reason != self._reason:
            if reason is None:
                logger.info("ready")
            else:
                logger.warning("not ready: %s", reason)
        self._reason = reason

    def _count_versions(self, pipeline: Pipeline, encoders: set[str]) -> None:
        counts = dict.fromkeys(encoders, 0)
        for head in pipeline.heads.heads:
            for version in head.versions:
                if version.encoder in counts:
                    counts[version.encoder] += 1
        for encoder in self._counted - encoders:
            ENCODER_HEAD_VERSIONS.remove(encoder)
        for encoder, count in counts.items():
            ENCODER_HEAD_VERSIONS.labels(encoder).set(count)
        self._counted = encoders

    async def watch(self, pipeline: Pipeline) -> None:
        while True:
            try:
                await self.check(pipeline)
            except Exception as exc:  # a bug in a check must not stop the checking
                logger.exception("readiness check failed")
                self._reason = f"readiness check failed: {exc}"
            await asyncio.sleep(self.interval_s)
