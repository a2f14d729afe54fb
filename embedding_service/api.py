"""HTTP routes: OpenAI-compatible /v1/embeddings, native /embed, /tokenize, /v1/models."""

import asyncio
import base64
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from embedding_service.deps import EmbedderDep, RuntimeDep
from embedding_service.embedder import Embedded, LongTexts
from embedding_service.encoder import Embedding, FloatArray
from embedding_service.pooling import Pooling, l2_normalize, pool
from embedding_service.schemas import (
    IDENTITY_HEADER,
    PRECISION_HEADER,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    ModelCard,
    ModelList,
    RequestLimits,
    Runtime,
    TokenizeRequest,
    TokenizeResponse,
)
from embedding_service.settings import EmbeddingSettings
from embedding_service.windows import combine
from service_common.deadline import DeadlineDep
from service_common.disconnect import unless_disconnected
from service_common.errors import InvalidRequestError

router = APIRouter()

# An answer with more floats than this is serialised off the event loop (a 2,048-text answer is ~800k).
_INLINE_FLOATS = 64 * 1024


async def _json(body: dict[str, Any], embedded: Embedded, floats: int, identity: str, runtime: Runtime) -> Response:
    """Serialises numpy arrays directly (float32, shortest round-trip form): building Python float
    lists and validating them with pydantic would cost more than the encoder call for short texts. The
    headers say whose vectors these are: the encoder's identity and the precision it ran at."""
    if floats <= _INLINE_FLOATS:
        content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        content = await asyncio.to_thread(orjson.dumps, body, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {
        "Server-Timing": embedded.server_timing(),
        IDENTITY_HEADER: identity,
        PRECISION_HEADER: runtime.precision,
    }
    return Response(content, media_type="application/json", headers=headers)


def _usage(embedded: Embedded) -> dict[str, int]:
    return {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens}


def _chunked(embedded: Embedded) -> list[dict[str, int]]:
    return [{"index": index, "windows": windows} for index, windows in embedded.chunked]


def _long_texts(truncate: bool, chunk: bool) -> LongTexts:
    return "chunk" if chunk else ("truncate" if truncate else "refuse")


def _key(request: Request) -> str | None:
    """The name of the key the caller authenticated with: its lane (None: the anonymous lane, where OpenAI's
    `user` only names the caller's flow)."""
    name: str | None = getattr(request.state, "api_key_name", None)
    return name


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
async def create_embeddings(
    body: EmbeddingsRequest, embedder: EmbedderDep, runtime: RuntimeDep, deadline: DeadlineDep, request: Request
) -> Response:
    embedder.check_model(body.model)
    dimensions = embedder.manifest.embedding_dim
    if body.dimensions is not None and body.dimensions != dimensions:
        raise InvalidRequestError(
            f"dimensions: this model's embeddings have {dimensions} dimensions",
            param="dimensions",
            code="unsupported_dimensions",
        )
    embedding = embedder.embed(
        body.input,
        field="input",
        long_texts=_long_texts(body.truncate, body.chunk),
        timeout_s=deadline.remaining_s(),
        key=_key(request),
        user=body.user,
    )
    embedded = await unless_disconnected(request, embedding)
    vectors = embedded.sentences(normalize=embedder.manifest.normalize)
    if body.encoding_format == "base64":
        encoded: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        encoded = vectors
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
    answer = {
        "object": "list",
        "data": data,
        "model": embedder.manifest.model_name,
        "usage": _usage(embedded),
        "truncated": embedded.truncated,
        "chunked": _chunked(embedded),
    }
    floats = 0 if body.encoding_format == "base64" else len(vectors) * dimensions
    return await _json(answer, embedded, floats, embedder.manifest.identity, runtime)


@router.post("/embed", response_model=EmbedResponse)
async def embed(
    body: EmbedRequest, embedder: EmbedderDep, runtime: RuntimeDep, deadline: DeadlineDep, request: Request
) -> Response:
    manifest = embedder.manifest
    pooling = body.pooling or manifest.pooling
    normalize = body.normalize if body.normalize is not None else (manifest.normalize and pooling != "none")
    if pooling == "none" and body.chunk:
        raise InvalidRequestError(
            "chunk embeds a long text whole as one vector: it needs a pooling, not `none`", param="chunk"
        )
    models_own = pooling == manifest.pooling and normalize == manifest.normalize
    embedding = embedder.embed(
        body.inputs,
        field="inputs",
        long_texts=_long_texts(body.truncate, body.chunk),
        timeout_s=deadline.remaining_s(),
        key=_key(request),
        user=body.user,
        token_level=not models_own,
        token_output=pooling == "none",
    )
    embedded = await unless_disconnected(request, embedding)
    vectors: list[Any]
    if pooling == "none":
        tokens = [group[0].token_vectors() for group in embedded.windows]
        vectors = [l2_normalize(t) if normalize else t for t in tokens]
        floats = sum(len(t) for t in tokens) * manifest.embedding_dim
    elif models_own:
        vectors = embedded.sentences(normalize=normalize)
        floats = len(vectors) * manifest.embedding_dim
    else:
        vectors = [_pooled(group, pooling, normalize) for group in embedded.windows]
        floats = len(vectors) * manifest.embedding_dim
    answer = {
        "model": manifest.model_name,
        "pooling": pooling,
        "normalize": normalize,
        "dimensions": manifest.embedding_dim,
        "embeddings": vectors,
        "truncated": embedded.truncated,
        "chunked": _chunked(embedded),
        "usage": _usage(embedded),
    }
    return await _json(answer, embedded, floats, manifest.identity, runtime)


def _pooled(group: list[Embedding], pooling: Pooling, normalize: bool) -> FloatArray:
    """One input's vector under another pooling than the model's: each window pooled, then their mean."""
    pooled = [pool(w.token_vectors(), pooling) for w in group]
    vectors = [l2_normalize(v) if normalize else v for v in pooled]
    return combine(vectors, [w.length for w in group], normalize=normalize)


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, embedder: EmbedderDep, request: Request) -> Response:
    settings: EmbeddingSettings = request.app.state.settings
    if len(body.input) > settings.max_texts_per_request:
        raise InvalidRequestError(
            f"input has {len(body.input)} texts; at most {settings.max_texts_per_request} are allowed per request",
            param="input",
            code="too_many_texts",
        )
    for index, text in enumerate(body.input):
        if len(text) > settings.max_chars_per_text:
            raise InvalidRequestError(
                f"input[{index}] has {len(text)} characters; at most {settings.max_chars_per_text} are allowed",
                param=f"input[{index}]",
                code="text_too_long",
            )
    tokens = await embedder.tokens(body.input, add_special_tokens=body.add_special_tokens)
    answer = {
        "model": embedder.manifest.model_name,
        "max_seq_length": embedder.manifest.max_seq_length,
        "data": [{"index": i, "ids": t.ids, "tokens": t.tokens, "offsets": t.offsets} for i, t in enumerate(tokens)],
    }
    return Response(orjson.dumps(answer), media_type="application/json")


@router.get("/v1/models")
async def list_models(embedder: EmbedderDep, runtime: RuntimeDep, request: Request) -> ModelList:
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
                identity=manifest.identity,
                dimensions=manifest.embedding_dim,
                max_seq_length=manifest.max_seq_length,
                limits=limits,
                runtime=runtime,
            )
        ]
    )
