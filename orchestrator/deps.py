"""Request dependencies of the orchestrator."""

from typing import Annotated

from fastapi import Depends, Request

from orchestrator.coalescer import Coalescer


async def get_coalescer(request: Request) -> Coalescer:
    coalescer: Coalescer = request.app.state.coalescer
    return coalescer


CoalescerDep = Annotated[Coalescer, Depends(get_coalescer)]
