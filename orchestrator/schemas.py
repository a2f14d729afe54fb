"""Wire schemas of POST /classify."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr

Text = Annotated[StrictStr, Field(min_length=1)]


class ClassifyRequest(BaseModel):
    """Exactly one of `text` (one text) and `texts` (a batch); counts and lengths are bounded by settings.
    At most one of `head` (one head) and `heads` (several, from one embedding); neither: the default head."""

    model_config = ConfigDict(extra="forbid")

    texts: list[Text] | None = Field(None, min_length=1)
    text: Text | None = None
    head: StrictStr | None = None
    heads: list[StrictStr] | None = None
    chunk: bool = Field(False, description="classify texts over the encoder's max length on all of their text")


class Prediction(BaseModel):
    label: str
    score: float = Field(description="the probability of `label`, the most likely class")
    scores: dict[str, float] = Field(description="every class's probability")


class ModelInfo(BaseModel):
    name: str
    version: str = Field(description="the head version that answered")
    encoder: str = Field(description="the identity of the encoder that embedded the texts, the version's own")


class Chunked(BaseModel):
    index: int
    windows: int


class HeadAnswer(BaseModel):
    """One head's part of a `heads` answer: its predictions and its encoder's long texts, or its error
    (OpenAI's error shape)."""

    model: ModelInfo | None = None
    predictions: list[Prediction] | None = None
    truncated: list[int] | None = Field(None, description="texts cut to this head's encoder's max length")
    chunked: list[Chunked] | None = None
    error: dict[str, str | None] | None = None


class MultiHeadResponse(BaseModel):
    heads: dict[str, HeadAnswer] = Field(description="one entry per head asked, in the order asked")
    truncated: list[int] = Field(description="texts cut for any head (each entry says for its own)")
    chunked: list[Chunked]


class HeadVersionInfo(BaseModel):
    version: int
    labels: list[str]
    input_dimension: int | None
    encoder: str | None = Field(description="the identity of the encoder it was trained on; null: no stamp")
    problem: str | None = Field(description="why it cannot be given vectors now; null when it can")


class HeadInfo(BaseModel):
    name: str
    default: bool
    ready: bool
    problem: str | None = Field(description="why it cannot answer now; null when it can")
    versions: list[HeadVersionInfo] = Field(description="the versions TF Serving has AVAILABLE, ascending")


class EncoderInfo(BaseModel):
    identity: str | None = Field(description="the encoder it serves; null until it has said")
    url: str
    dimensions: int | None
    ready: bool
    problem: str | None = Field(description="why it cannot embed now; null when it can")
    head_versions: list[str] = Field(
        description="`head/version` of every served head version trained on this encoder; empty: it can be retired"
    )


class HeadList(BaseModel):
    heads: list[HeadInfo]
    encoders: list[EncoderInfo] = Field(description="one per embedding service the orchestrator is given")


class ClassifyResponse(BaseModel):
    predictions: list[Prediction] = Field(description="one per input text, in input order")
    model: ModelInfo
    truncated: list[int] = Field(description="indices of texts cut to the encoder's max sequence length")
    chunked: list[Chunked] = Field(description="texts embedded whole from several windows (`chunk`)")
