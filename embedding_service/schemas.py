"""Wire schemas of the embedding service: OpenAI's /v1/embeddings and the native /embed."""

import logging
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, WithJsonSchema, model_validator

from embedding_service.encoder import Precision
from embedding_service.int8_manifest import Int8Manifest
from embedding_service.manifest import IDENTITY_PATTERN
from embedding_service.precision import PrecisionChoice

logger = logging.getLogger(__name__)

# On every embedding answer (/v1/embeddings, /embed): which encoder computed the vectors (the manifest's
# identity) and at what precision, so that a caller (the orchestrator) can tell whose vectors it holds.
IDENTITY_HEADER = "X-Encoder-Identity"
PRECISION_HEADER = "X-Encoder-Precision"


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Texts = Annotated[list[Annotated[StrictStr, Field(min_length=1)]], BeforeValidator(_one_or_many), Field(min_length=1)]


_TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
# OpenAI's four forms; inputs.parse_input checks them by hand, so that refusals name the exact item.
OpenAIInput = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                _TOKEN_IDS,
                {"type": "array", "items": _TOKEN_IDS, "minItems": 1},
            ]
        }
    ),
]


# Unknown fields of /v1/embeddings already logged, by name; past this many, new names are ignored unlogged, so
# that no caller can fill the log or this set. A name is logged only if it looks like a field name: a caller's
# text (a sentence, a key) used as a field name never reaches the log.
_LOGGED_UNKNOWN: set[str] = set()
_MAX_LOGGED_UNKNOWN = 100
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)
_NOT_A_NAME = "(a name that is not an identifier, not logged)"


def _log_unknown(names: set[str]) -> None:
    for name in sorted({name if _FIELD_NAME.fullmatch(name) else _NOT_A_NAME for name in names} - _LOGGED_UNKNOWN):
        if len(_LOGGED_UNKNOWN) >= _MAX_LOGGED_UNKNOWN:
            return
        _LOGGED_UNKNOWN.add(name)
        logger.warning("/v1/embeddings: ignoring unknown field %s (logged once per name)", name)


class EmbeddingsRequest(BaseModel):
    """OpenAI's request. Ours: `truncate` (default true: over-long texts are cut and reported; false:
    refused) and `chunk` (true: over-long texts are embedded whole, as the mean of their windows). Unknown
    fields are ignored, as OpenAI-compatible servers do (clients such as LiteLLM send their own, `metadata`),
    and each name is logged once; the native routes refuse them."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _ignore_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _log_unknown(set(data) - set(cls.model_fields))
        return data

    input: OpenAIInput
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(
        None, max_length=256, description="the end user: without a key, its flow in the anonymous lane"
    )
    truncate: bool = True
    chunk: bool = False


class EmbedRequest(BaseModel):
    """Native request: `pooling` none returns one vector per token; defaults are the model's own."""

    model_config = ConfigDict(extra="forbid")

    inputs: Texts
    pooling: Literal["mean", "cls", "max", "none"] | None = None
    normalize: bool | None = None
    truncate: bool = True
    chunk: bool = Field(False, description="embed over-long texts whole (pooled outputs only)")
    user: str | None = Field(None, max_length=256, description="the end user, as on /v1/embeddings")


class TokenizeRequest(BaseModel):
    """Texts -> this model's token ids, with no cut: for clients that count or chunk themselves."""

    model_config = ConfigDict(extra="forbid")

    input: Texts
    add_special_tokens: bool = True


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Chunked(BaseModel):
    index: int
    windows: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage
    truncated: list[int] = Field(description="indices of inputs cut to the model's max sequence length")
    chunked: list[Chunked] = Field(description="inputs embedded whole from several windows (`chunk`)")


class EmbedResponse(BaseModel):
    model: str
    pooling: Literal["mean", "cls", "max", "none"]
    normalize: bool
    dimensions: int
    embeddings: list[list[float]] | list[list[list[float]]]
    truncated: list[int]
    chunked: list[Chunked]
    usage: Usage


class TokenizedInput(BaseModel):
    index: int
    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]] = Field(description="each token's character span; [0, 0] for special tokens")


class TokenizeResponse(BaseModel):
    model: str
    max_seq_length: int
    data: list[TokenizedInput]


class RequestLimits(BaseModel):
    """What one request may hold; published so that callers (the orchestrator) check before sending."""

    max_texts_per_request: int
    max_chars_per_text: int
    max_body_bytes: int


class Runtime(BaseModel):
    """How the encoder runs: the backend chosen, and the threads given to each part of the service."""

    backend: Literal["tensorflow", "openvino"]
    device: str
    encoder_threads: int  # one encoder call's threads
    tokenizer_threads: int  # the pool tokenizing big requests off the event loop
    precision: Precision  # what the encoder really runs at
    choice: PrecisionChoice  # EMBEDDING_PRECISION, what it chose and why (auto's measurement)
    int8: Int8Manifest | None = None  # at int8: the build's fidelity and the head versions it checked
    group_window: int  # queued texts a batch is chosen from by length; 0: in order
    ready_s: float  # from the start of loading to ready


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "local"
    identity: str = Field(pattern=IDENTITY_PATTERN, description="the encoder's (its manifest's): what the vectors are")
    dimensions: int
    max_seq_length: int
    limits: RequestLimits
    runtime: Runtime


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
