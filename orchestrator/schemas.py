"""Wire schemas of POST /classify."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr

Text = Annotated[StrictStr, Field(min_length=1)]


class ClassifyRequest(BaseModel):
    """Exactly one of `text` (one text) and `texts` (a batch); counts and lengths are bounded by settings."""

    model_config = ConfigDict(extra="forbid")

    texts: list[Text] | None = Field(None, min_length=1)
    text: Text | None = None
    chunk: bool = Field(False, description="classify texts over the encoder's max length on all of their text")


class Prediction(BaseModel):
    label: str
    score: float = Field(description="the probability of `label`, the most likely class")
    scores: dict[str, float] = Field(description="every class's probability")


class ModelInfo(BaseModel):
    name: str
    version: str = Field(description="the head version that answered")


class Chunked(BaseModel):
    index: int
    windows: int


class ClassifyResponse(BaseModel):
    predictions: list[Prediction] = Field(description="one per input text, in input order")
    model: ModelInfo
    truncated: list[int] = Field(description="indices of texts cut to the encoder's max sequence length")
    chunked: list[Chunked] = Field(description="texts embedded whole from several windows (`chunk`)")
