"""Request dependencies of the embedding service."""

from typing import Annotated

from fastapi import Depends, Request

from embedding_service.embedder import Embedder
from service_common.errors import UnavailableError


async def get_embedder(request: Request) -> Embedder:
    """Async on purpose: FastAPI runs a plain `def` dependency in a thread pool, a hop per request."""
    embedder: Embedder | None = request.app.state.model.embedder
    if embedder is None:
        raise UnavailableError("the model is still loading", code="not_ready")
    return embedder


EmbedderDep = Annotated[Embedder, Depends(get_embedder)]
