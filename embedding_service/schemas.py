"""Wire schemas of the embedding service: OpenAI's /v1/embeddings and the native /embed."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Texts = Annotated[list[Annotated[StrictStr, Field(min_length=1)]], BeforeValidator(_one_or_many), Field(min_length=1)]


class EmbeddingsRequest(BaseModel):
    """OpenAI's request; `truncate` is ours (default true: over-long texts are cut and reported)."""

    model_config = ConfigDict(extra="forbid")

    input: Texts
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)
    truncate: bool = True


class EmbedRequest(BaseModel):
    """Native request: `pooling` none returns one vector per token; defaults are the model's own."""

    model_config = ConfigDict(extra="forbid")

    inputs: Texts
    pooling: Literal["mean", "cls", "max", "none"] | None = None
    normalize: bool | None = None
    truncate: bool = True


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage
    truncated: list[int] = Field(description="indices of inputs cut to the model's max sequence length")


class EmbedResponse(BaseModel):
    model: str
    pooling: Literal["mean", "cls", "max", "none"]
    normalize: bool
    dimensions: int
    embeddings: list[list[float]] | list[list[list[float]]]
    truncated: list[int]
    usage: Usage


class RequestLimits(BaseModel):
    """What one request may hold; published so that callers (the orchestrator) check before sending."""

    max_texts_per_request: int
    max_chars_per_text: int
    max_body_bytes: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "local"
    dimensions: int
    max_seq_length: int
    limits: RequestLimits


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
