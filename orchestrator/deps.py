"""Request dependencies of the orchestrator."""

from typing import Annotated

from fastapi import Depends, Request

from orchestrator.coalescer import Coalescer
from orchestrator.encoders import EmbeddingEndpoints
from orchestrator.heads import HeadRegistry


async def get_coalescer(request: Request) -> Coalescer:
    coalescer: Coalescer = request.app.state.coalescer
    return coalescer


async def get_registry(request: Request) -> HeadRegistry:
    registry: HeadRegistry = request.app.state.heads
    return registry


async def get_endpoints(request: Request) -> EmbeddingEndpoints:
    endpoints: EmbeddingEndpoints = request.app.state.endpoints
    return endpoints


CoalescerDep = Annotated[Coalescer, Depends(get_coalescer)]
RegistryDep = Annotated[HeadRegistry, Depends(get_registry)]
EndpointsDep = Annotated[EmbeddingEndpoints, Depends(get_endpoints)]
