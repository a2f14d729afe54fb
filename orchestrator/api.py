"""HTTP route: POST /classify, texts in, one prediction per text out."""

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from orchestrator.deps import CoalescerDep
from orchestrator.pipeline import Classified
from orchestrator.schemas import ClassifyRequest, ClassifyResponse
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import DeadlineDep
from service_common.disconnect import unless_disconnected
from service_common.errors import InvalidRequestError

router = APIRouter()


def _texts(body: ClassifyRequest) -> tuple[list[str], str]:
    """The texts and the field they came in (limits are the coalescer's to check: errors name the field)."""
    if (body.text is None) == (body.texts is None):
        raise InvalidRequestError("send exactly one of `text` (a string) and `texts` (a list)", param="texts")
    return ([body.text], "text") if body.text is not None else (body.texts or [], "texts")


def response_body(classified: Classified, model_name: str) -> dict[str, Any]:
    """The /classify answer (perf/'s monolith answers with it too, so both send the same bytes)."""
    probabilities, names = classified.probabilities, classified.labels
    best = np.argmax(probabilities, axis=1).tolist()
    predictions = [  # float32 scalars: orjson writes their shortest form (0.9965311, not 0.996531069278717)
        {"label": names[b], "score": row[b], "scores": dict(zip(names, row, strict=True))}
        for b, row in zip(best, probabilities, strict=True)
    ]
    return {
        "predictions": predictions,
        "model": {"name": model_name, "version": str(classified.version)},
        "truncated": classified.truncated,
        "chunked": [{"index": index, "windows": windows} for index, windows in classified.chunked],
    }


@router.post("/classify", response_model=ClassifyResponse)
async def classify(body: ClassifyRequest, coalescer: CoalescerDep, deadline: DeadlineDep, request: Request) -> Response:
    settings: OrchestratorSettings = request.app.state.settings
    texts, field = _texts(body)
    classified = await unless_disconnected(request, coalescer.classify(texts, deadline, field, chunk=body.chunk))
    content = orjson.dumps(response_body(classified, settings.head_model_name), option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, media_type="application/json")
