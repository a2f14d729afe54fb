"""EmbeddingEndpoints: the embedding services the orchestrator may call, each known by its encoder's identity.

Several services may run side by side, each serving one encoder (an upgrade runs the old and the new one
together). A head is routed to the service serving the encoder its version was trained on; each one's
identity is read from its model card by the readiness checks and confirmed by every answer."""

import asyncio
from dataclasses import dataclass

from orchestrator.clients.embedding import EmbeddingClient
from orchestrator.single_flight import SingleFlight
from service_common.deadline import Deadline
from service_common.errors import DeadlineExceededError, ServiceError, UnavailableError


@dataclass
class Endpoint:
    client: EmbeddingClient
    problem: str | None = "not checked yet"  # why it cannot answer now; None: it can


class EmbeddingEndpoints:
    def __init__(self, clients: list[EmbeddingClient], check_timeout_s: float) -> None:
        self.endpoints = [Endpoint(client) for client in clients]
        self._checking: SingleFlight[None, None] = SingleFlight()
        self._check_timeout_s = check_timeout_s

    def encoders(self) -> set[str]:
        """The identities of the encoders served, as last seen (kept while a service is down: a blip
        does not unroute every head)."""
        return {e.client.identity for e in self.endpoints if e.client.identity is not None}

    def ready_encoders(self) -> set[str]:
        """Those of them a ready service serves."""
        return {e.client.identity for e in self.endpoints if e.client.identity is not None and e.problem is None}

    def unnamed(self) -> str | None:
        """The services that have not named their encoder yet, and why; None when every one has."""
        waiting = [e for e in self.endpoints if e.client.identity is None]
        return _reasons(waiting) or None

    def serving(self, encoder: str) -> EmbeddingClient:
        """A service serving `encoder`: a ready one when there is one. UnavailableError if none is known."""
        serving = [e for e in self.endpoints if e.client.identity == encoder]
        if not serving:
            served = ", ".join(sorted(self.encoders())) or "none"
            raise UnavailableError(
                f"no embedding service serves encoder {encoder} (served: {served})", code="embedding_unavailable"
            )
        return next((e.client for e in serving if e.problem is None), serving[0].client)

    def problem(self, encoder: str) -> str | None:
        """Why no service can embed for `encoder` now; None when one can."""
        serving = [e for e in self.endpoints if e.client.identity == encoder]
        if not serving:
            return f"no embedding service serves encoder {encoder}"
        if all(e.problem is not None for e in serving):
            return _reasons(serving)
        return None

    def problems(self) -> str | None:
        """Why no service can embed now; None when one can."""
        if any(e.problem is None for e in self.endpoints):
            return None
        return _reasons(self.endpoints)

    async def learn(self, deadline: Deadline) -> set[str]:
        """The encoders served, asking the services now if none is known yet (none has answered since
        start-up): concurrent callers share one check, on its own budget, each waiting at most until its
        own deadline."""
        if not self.encoders():
            await self._checking.run(
                None,
                lambda: self.check(self._check_timeout_s),
                deadline,
                lambda: DeadlineExceededError(
                    "the embedding services did not name their encoders within the request's deadline",
                    code="embedding_timeout",
                ),
            )
        return self.encoders()

    async def check(self, timeout_s: float) -> None:
        """Each service's readiness, identity, size and limits, all at once."""
        await asyncio.gather(*(self._check(endpoint, timeout_s) for endpoint in self.endpoints))

    @staticmethod
    async def _check(endpoint: Endpoint, timeout_s: float) -> None:
        try:
            await endpoint.client.check_ready(timeout_s)
            await endpoint.client.describe(timeout_s)
            endpoint.problem = None
        except ServiceError as exc:
            endpoint.problem = exc.message


def _reasons(endpoints: list[Endpoint]) -> str:
    return "; ".join(f"{e.client.url}: {e.problem}" for e in endpoints)
