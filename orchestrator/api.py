"""HTTP routes: POST /classify (texts in, each head's prediction per text out), a direct route (served
straight from ASGI: service_common/direct.py), and GET /v1/heads."""

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.types import Receive, Scope

from orchestrator.deps import EndpointsDep, RegistryDep, coalescer
from orchestrator.heads import HEAD_NAME, HeadRegistry, version_problem
from orchestrator.pipeline import Answer, Classified
from orchestrator.schemas import ClassifyRequest, ClassifyResponse, HeadList, MultiHeadResponse
from service_common import tracing
from service_common.deadline import TIMEOUT_HEADER, deadline_from
from service_common.direct import DirectRoute, header, json_value, validated
from service_common.disconnect import unless_disconnected
from service_common.errors import InvalidRequestError, ServiceError

router = APIRouter()
_TIMEOUT_HEADER = TIMEOUT_HEADER.lower().encode()


def _texts(body: ClassifyRequest) -> tuple[list[str], str]:
    """The texts and the field they came in (limits are the coalescer's to check: errors name the field)."""
    if (body.text is None) == (body.texts is None):
        raise InvalidRequestError("send exactly one of `text` (a string) and `texts` (a list)", param="texts")
    return ([body.text], "text") if body.text is not None else (body.texts or [], "texts")


def _heads(body: ClassifyRequest, registry: HeadRegistry) -> tuple[str, ...]:
    """The heads asked for, checked: a 400 for a malformed selection, a 404 for a head not served (whether
    a served head can answer is the coalescer's to find, as it routes it to its encoder)."""
    if body.head is not None and body.heads is not None:
        raise InvalidRequestError("send `head` (one name) or `heads` (a list), not both", param="heads")
    if body.heads is None:
        name = body.head if body.head is not None else registry.default
        _check_name(name, "head")
        registry.known(name, "head")
        return (name,)
    served = len(registry.heads)
    if not body.heads or len(body.heads) > served:
        raise InvalidRequestError(f"heads must name 1 to {served} of the served heads", param="heads")
    for index, name in enumerate(body.heads):
        param = f"heads[{index}]"
        _check_name(name, param)
        if name in body.heads[:index]:
            raise InvalidRequestError(f"{param}: {name!r} is named twice", param=param, code="duplicate_head")
        registry.known(name, param)
    return tuple(body.heads)


def _check_name(name: str, param: str) -> None:
    if not HEAD_NAME.fullmatch(name):
        raise InvalidRequestError(
            f"{param}: {name[:64]!r} is not a head name (1-64 letters, digits, - and _)",
            param=param,
            code="invalid_head",
        )


def predictions(classified: Classified) -> list[dict[str, Any]]:
    probabilities, names = classified.probabilities, classified.labels
    best = np.argmax(probabilities, axis=1).tolist()
    return [  # float32 scalars: orjson writes their shortest form (0.9965311, not 0.996531069278717)
        {"label": names[b], "score": row[b], "scores": dict(zip(names, row, strict=True))}
        for b, row in zip(best, probabilities, strict=True)
    ]


def _model(classified: Classified) -> dict[str, str]:
    return {"name": classified.head, "version": str(classified.version), "encoder": classified.encoder}


def _long_texts(classified: Classified) -> dict[str, Any]:
    return {
        "truncated": classified.truncated,
        "chunked": [{"index": index, "windows": windows} for index, windows in classified.chunked],
    }


def response_body(classified: Classified) -> dict[str, Any]:
    """The one-head /classify answer (perf/'s monolith answers with it too, so both send the same bytes)."""
    return {"predictions": predictions(classified), "model": _model(classified), **_long_texts(classified)}


def fan_out_body(answer: Answer) -> dict[str, Any]:
    """The `heads` answer: each head's entry (its long texts as its own encoder saw them), and at the top
    the texts cut or chunked for any head."""
    entries: dict[str, Any] = {}
    truncated: set[int] = set()
    chunked: dict[int, int] = {}
    for name, result in answer.items():
        if isinstance(result, ServiceError):
            entries[name] = result.body()
            continue
        entries[name] = {"model": _model(result), "predictions": predictions(result), **_long_texts(result)}
        truncated.update(result.truncated)
        chunked.update(result.chunked)
    return {
        "heads": entries,
        "truncated": sorted(truncated),
        "chunked": [{"index": index, "windows": windows} for index, windows in sorted(chunked.items())],
    }


class Classify:
    """POST /classify: the body read and checked as FastAPI would (its JSON first, then the budget header,
    then the fields), the texts classified by the coalescer, the answer as orjson bytes."""

    def __init__(self, registry: HeadRegistry, default_timeout_s: float) -> None:
        self._registry = registry
        self._default_timeout_s = default_timeout_s

    async def __call__(self, scope: Scope, receive: Receive) -> bytes:
        value = json_value(scope, (await receive()).get("body", b""))  # the whole body: see direct.Handler
        deadline = deadline_from(header(scope, _TIMEOUT_HEADER), self._default_timeout_s)
        body = validated(ClassifyRequest, value)
        texts, field = _texts(body)
        heads = _heads(body, self._registry)
        with tracing.span("classify", attributes={"classify.texts": len(texts), "classify.heads": ",".join(heads)}):
            work = coalescer(scope["app"]).classify(
                texts, deadline, field, heads, fan_out=body.heads is not None, chunk=body.chunk
            )
            answer = await unless_disconnected(Request(scope, receive), work)
        if body.heads is None:
            result = answer[heads[0]]
            if isinstance(result, ServiceError):
                raise result
            content = response_body(result)
        else:
            content = fan_out_body(answer)
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def classify_route(registry: HeadRegistry, default_timeout_s: float) -> DirectRoute:
    return DirectRoute(
        "POST",
        "/classify",
        Classify(registry, default_timeout_s),
        ClassifyRequest,
        ClassifyResponse | MultiHeadResponse,
        "Classify",
    )


@router.get("/v1/heads")
async def list_heads(registry: RegistryDep, endpoints: EndpointsDep) -> HeadList:
    """Every head TF Serving serves now, from its own status and metadata (refreshed every second), and
    every encoder the embedding services serve, with the head versions trained on it."""
    encoders = endpoints.encoders()
    trained_on: dict[str, list[str]] = {}
    for head in registry.heads:
        for v in head.versions:
            if v.encoder is not None:
                trained_on.setdefault(v.encoder, []).append(f"{head.name}/{v.version}")
    heads = []
    for head in registry.heads:
        problem = head.problem
        if problem is None:
            try:
                registry.route(head.name, "head", encoders)
            except ServiceError as exc:
                problem = exc.message
        versions = [
            {
                "version": v.version,
                "labels": v.labels,
                "input_dimension": v.input_dimension,
                "encoder": v.encoder,
                "problem": version_problem(v, encoders),
            }
            for v in head.versions
        ]
        heads.append(
            {
                "name": head.name,
                "default": head.name == registry.default,
                "ready": problem is None,
                "problem": problem,
                "versions": versions,
            }
        )
    served = [
        {
            "identity": e.client.identity,
            "url": e.client.url,
            "dimensions": e.client.dimensions,
            "ready": e.problem is None,
            "problem": e.problem,
            "head_versions": trained_on.get(e.client.identity, []) if e.client.identity else [],
        }
        for e in endpoints.endpoints
    ]
    return HeadList.model_validate({"heads": heads, "encoders": served})
