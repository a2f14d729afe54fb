"""Request dependencies of the orchestrator: for its FastAPI routes, and for its direct route (POST
/classify), which reads them from the app the request came to."""

from typing import Annotated

from fastapi import Depends, Request
from starlette.applications import Starlette

from orchestrator.coalescer import Coalescer
from orchestrator.encoders import EmbeddingEndpoints
from orchestrator.heads import HeadRegistry


def coalescer(app: Starlette) -> Coalescer:
    found: Coalescer = app.state.coalescer
    return found


async def get_registry(request: Request) -> HeadRegistry:
    registry: HeadRegistry = request.app.state.heads
    return registry


async def get_endpoints(request: Request) -> EmbeddingEndpoints:
    endpoints: EmbeddingEndpoints = request.app.state.endpoints
    return endpoints


RegistryDep = Annotated[HeadRegistry, Depends(get_registry)]
EndpointsDep = Annotated[EmbeddingEndpoints, Depends(get_endpoints)]
