"""The embedding service's request limits, as the orchestrator applies them to /classify before queueing.

They have one source: the embedding service's own settings, which it publishes in `GET /v1/models` and
the readiness monitor reads. Checked here, a text the embedding service would refuse is refused with
the caller's own field names before it can join a merged call, and no merged call outgrows them."""

from dataclasses import dataclass
from typing import Any

import orjson

from service_common.errors import InvalidRequestError, PayloadTooLargeError

# The /v1/embeddings body around the texts: {"input":[...],"encoding_format":"base64"}.
CALL_OVERHEAD_BYTES = 64


@dataclass(frozen=True)
class EmbeddingLimits:
    max_texts_per_request: int
    max_chars_per_text: int
    max_body_bytes: int

    @classmethod
    def from_model_card(cls, card: dict[str, Any]) -> "EmbeddingLimits":
        """Raises KeyError, TypeError or ValueError for a card without them."""
        limits = card["limits"]
        return cls(
            int(limits["max_texts_per_request"]), int(limits["max_chars_per_text"]), int(limits["max_body_bytes"])
        )

    @property
    def max_call_bytes(self) -> int:
        """The encoded texts one embedding call may carry."""
        return self.max_body_bytes - CALL_OVERHEAD_BYTES


def encoded_bytes(texts: list[str]) -> int:
    """What the texts add to an embedding call's body, as the client encodes them."""
    return len(orjson.dumps(texts))


def check_texts(texts: list[str], field: str, limits: EmbeddingLimits | None, max_queue_texts: int) -> int:
    """Refuses what the embedding service would refuse, naming the caller's field (`text`, `texts`,
    `texts[3]`); returns the texts' encoded size. Until the limits are known, only the queue bounds."""
    most = max_queue_texts if limits is None else min(max_queue_texts, limits.max_texts_per_request)
    if len(texts) > most:
        raise InvalidRequestError(
            f"texts has {len(texts)} texts; at most {most} are allowed per request",
            param="texts",
            code="too_many_texts",
        )
    size = encoded_bytes(texts)
    if limits is None:
        return size
    for index, text in enumerate(texts):
        if len(text) > limits.max_chars_per_text:
            param = field if field == "text" else f"texts[{index}]"
            raise InvalidRequestError(
                f"{param} has {len(text)} characters; at most {limits.max_chars_per_text} are allowed",
                param=param,
                code="text_too_long",
            )
    if size > limits.max_call_bytes:
        raise PayloadTooLargeError(
            f"{field} encode to {size} bytes; the embedding service takes at most {limits.max_call_bytes}",
            param=field,
            code="body_too_large",
        )
    return size
