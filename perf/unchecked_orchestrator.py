"""`python -m perf.unchecked_orchestrator`: the orchestrator with its encoder identity check taken out, for
the identity scenario's side-by-side only (perf/scenarios/identity.py; never a way to run the product).

Taken out: a head's route to an encoder (every head goes to the first embedding service's), the choice of
the head version trained on the vectors' encoder (the newest version answers whatever made them) and the
check of the identity each embedding answer names. What is left is today's path without the check."""

from orchestrator import __main__ as orchestrator_main
from orchestrator.clients.embedding import EmbeddingClient
from orchestrator.pipeline import Pipeline
from orchestrator.versions import HeadVersion
from service_common.deadline import Deadline


async def _first_service(self: Pipeline, head: str, param: str, deadline: Deadline) -> str:
    return self.endpoints.endpoints[0].client.identity or ""


def _newest(self: Pipeline, head: str, encoder: str) -> HeadVersion:
    found = self.heads.get(head)
    assert found is not None and found.versions, f"head {head} has no version"
    return found.versions[-1]


def _unchecked(self: EmbeddingClient, identity: str) -> str:
    """The identity its model card named first, kept; no answer's is read or compared."""
    if self.identity is None:
        self.identity = identity
    return self.identity


def main() -> None:
    Pipeline.route = _first_service  # type: ignore[method-assign]
    Pipeline._version_for = _newest  # type: ignore[method-assign]
    EmbeddingClient._learn = _unchecked  # type: ignore[method-assign]
    orchestrator_main.main()


if __name__ == "__main__":
    main()
