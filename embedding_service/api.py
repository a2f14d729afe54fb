"""HTTP routes: OpenAI-compatible /v1/embeddings, native /embed, /v1/models."""

import base64
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from embedding_service.deps import EmbedderDep
from embedding_service.embedder import Embedded
from embedding_service.pooling import l2_normalize, pool
from embedding_service.schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    ModelCard,
    ModelList,
    RequestLimits,
)
from embedding_service.settings import EmbeddingSettings
from service_common.deadline import DeadlineDep
from service_common.disconnect import unless_disconnected
from service_common.errors import InvalidRequestError

router = APIRouter()


def _json(body: dict[str, Any], embedded: Embedded) -> Response:
    """Serialises numpy arrays directly (float32, shortest round-trip form): building Python float
    lists and validating them with pydantic would cost more than the encoder call for short texts."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
        headers={"Server-Timing": embedded.server_timing()},
    )


def _usage(embedded: Embedded) -> dict[str, int]:
    return {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens}


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
async def create_embeddings(
    body: EmbeddingsRequest, embedder: EmbedderDep, deadline: DeadlineDep, request: Request
) -> Response:
    embedder.check_model(body.model)
    if body.dimensions is not None and body.dimensions != embedder.manifest.embedding_dim:
        raise InvalidRequestError(
            f"dimensions: this model's embeddings have {embedder.manifest.embedding_dim} dimensions",
            param="dimensions",
            code="unsupported_dimensions",
        )
    embedded = await unless_disconnected(
        request, embedder.embed(body.input, truncate=body.truncate, field="input", timeout_s=deadline.remaining_s())
    )
    vectors = [e.sentence for e in embedded.embeddings]
    if body.encoding_format == "base64":
        encoded: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        encoded = vectors
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
    return _json(
        {
            "object": "list",
            "data": data,
            "model": embedder.manifest.model_name,
            "usage": _usage(embedded),
            "truncated": embedded.truncated,
        },
        embedded,
    )


@router.post("/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, embedder: EmbedderDep, deadline: DeadlineDep, request: Request) -> Response:
    manifest = embedder.manifest
    pooling = body.pooling or manifest.pooling
    normalize = body.normalize if body.normalize is not None else (manifest.normalize and pooling != "none")
    embedded = await unless_disconnected(
        request, embedder.embed(body.inputs, truncate=body.truncate, field="inputs", timeout_s=deadline.remaining_s())
    )
    vectors: list[Any]
    if pooling == "none":
        tokens = [e.tokens for e in embedded.embeddings]
        vectors = [l2_normalize(t) if normalize else t for t in tokens]
    elif pooling == manifest.pooling and normalize == manifest.normalize:
        vectors = [e.sentence for e in embedded.embeddings]
    else:
        pooled = np.stack([pool(e.tokens, pooling) for e in embedded.embeddings])
        vectors = list(l2_normalize(pooled) if normalize else pooled)
    return _json(
        {
            "model": manifest.model_name,
            "pooling": pooling,
            "normalize": normalize,
            "dimensions": manifest.embedding_dim,
            "embeddings": vectors,
            "truncated": embedded.truncated,
            "usage": _usage(embedded),
        },
        embedded,
    )


@router.get("/v1/models")
async def list_models(embedder: EmbedderDep, request: Request) -> ModelList:
    manifest = embedder.manifest
    settings: EmbeddingSettings = request.app.state.settings
    limits = RequestLimits(
        max_texts_per_request=settings.max_texts_per_request,
        max_chars_per_text=settings.max_chars_per_text,
        max_body_bytes=settings.max_body_bytes,
    )
    return ModelList(
        data=[
            ModelCard(
                id=manifest.model_name,
                dimensions=manifest.embedding_dim,
                max_seq_length=manifest.max_seq_length,
                limits=limits,
            )
        ]
    )
