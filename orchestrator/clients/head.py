"""What the pipeline needs from the head (TF Serving), whichever protocol carries it."""

from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np

from orchestrator.metrics import HOP_ERRORS_TOTAL
from service_common.deadline import Deadline
from service_common.errors import (
    BadGatewayError,
    DeadlineExceededError,
    OverloadedError,
    ServiceError,
    UnavailableError,
)

HOP = "head"
PROBABILITIES_SIGNATURE = "serving_default"
LABELS_SIGNATURE = "labels"
EMBEDDINGS_INPUT = "embeddings"
# TF Serving's batching refuses with UNAVAILABLE and this message when its queue is full: overload, not an
# outage, so it is neither retried nor reported as the head being down.
QUEUE_FULL = "queue to which this task was submitted is full"
MALFORMED = "MALFORMED_ANSWER"  # head_error() kind for an answer we cannot read


def unreached(kind: str, detail: str) -> bool:
    """The head did not run the call: it could not be reached (UNAVAILABLE, but not a full batching queue),
    or it was shutting down (gRPC cancels calls that arrive after a server's graceful stop has begun, as
    the stand-in's does on SIGTERM; the real tensorflow_model_server has no graceful stop, tensorflow/serving
    #1853, and is killed: its calls fail as refused or reset connections, UNAVAILABLE). Safe to retry: a
    Predict is a pure read. Both clients retry exactly this: REST's 499 and 503 are CANCELLED and
    UNAVAILABLE, and a connection refused or dropped is UNAVAILABLE, as gRPC reports one."""
    return kind == "CANCELLED" or (kind == "UNAVAILABLE" and QUEUE_FULL not in detail)


@dataclass(frozen=True)
class Scores:
    probabilities: np.ndarray  # [texts, classes] float32
    version: int  # the model version that answered


class ModelNotFoundError(UnavailableError):
    """The head serves no such model or version: not loaded yet, or unloaded after a newer one came."""


def head_error(kind: str, detail: str, *, where: str, timeout_s: float) -> ServiceError:
    """One table for both protocols; `kind` is the gRPC status name (REST codes are mapped to it)."""
    HOP_ERRORS_TOTAL.labels(HOP, kind.lower()).inc()
    if kind == "DEADLINE_EXCEEDED":
        return DeadlineExceededError(f"the head did not answer within {timeout_s:.3g}s", code="head_timeout")
    if unreached(kind, detail):
        return UnavailableError(f"the head at {where} is unavailable: {detail}", code="head_unavailable")
    if kind == "NOT_FOUND":
        return ModelNotFoundError(f"the head does not serve it: {detail}", code="head_model_not_found")
    if kind == "RESOURCE_EXHAUSTED" or (kind == "UNAVAILABLE" and QUEUE_FULL in detail):
        return OverloadedError(f"the head is overloaded: {detail}")
    return BadGatewayError(f"the head answered {kind}: {detail}", code="head_error")


class HeadClient(Protocol):
    """TF Serving's calls the orchestrator makes, for any model (head) it serves."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def predict(self, model: str, embeddings: np.ndarray, deadline: Deadline) -> Scores: ...

    async def label_names(self, model: str, version: int, dimensions: int, deadline: Deadline) -> list[str]:
        """The `labels` signature of exactly `version`; ModelNotFoundError once it is unloaded."""
        ...

    async def versions(self, model: str, timeout_s: float) -> list[int]:
        """The versions in state AVAILABLE, ascending; empty if none (or no such model)."""
        ...

    async def input_dimension(self, model: str, version: int, timeout_s: float) -> int | None:
        """The embedding size `version`'s `serving_default` signature takes (None: not fixed)."""
        ...
