"""Request dependencies of the embedding service."""

from typing import Annotated

from fastapi import Depends, Request

from embedding_service.embedder import Embedder
from embedding_service.schemas import Runtime
from service_common.errors import UnavailableError


async def get_embedder(request: Request) -> Embedder:
    """Async on purpose: FastAPI runs a plain `def` dependency in a thread pool, a hop per request."""
    embedder: Embedder | None = request.app.state.model.embedder
    if embedder is None:
        raise UnavailableError("the model is still loading", code="not_ready")
    return embedder


async def get_runtime(request: Request) -> Runtime:
    """How the loaded encoder runs (set with the embedder, once the model is ready)."""
    runtime: Runtime | None = request.app.state.model.runtime
    if runtime is None:
        raise UnavailableError("the model is still loading", code="not_ready")
    return runtime


EmbedderDep = Annotated[Embedder, Depends(get_embedder)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
