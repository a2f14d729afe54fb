"""Request dependencies of the orchestrator."""

from typing import Annotated

from fastapi import Depends, Request

from orchestrator.pipeline import Pipeline


async def get_pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
