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
# Constant signatures of a head version, each answering one row of strings per input row under an output
# of its own name: its label names, and the identity of the encoder it was trained on (its stamp).
LABELS_SIGNATURE = "labels"
ENCODER_SIGNATURE = "encoder"
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
class Signatures:
    """What a version's metadata says about it."""

    input_dimension: int | None  # the embedding size `serving_default` takes (None: not fixed)
    names: frozenset[str]  # its signatures' names


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

    @property
    def down(self) -> str | None:
        """The head's address while it counts as down (a call failed unreached through all its retries, none
        has reached it since, and one found it unreachable within the last second: orchestrator.retry); None
        otherwise."""
        ...

    async def predict(self, model: str, version: int, embeddings: np.ndarray, deadline: Deadline) -> np.ndarray:
        """`serving_default` of exactly `version`: probabilities [texts, classes]; ModelNotFoundError once
        that version is unloaded."""
        ...

    async def constants(
        self, model: str, version: int, signature: str, dimensions: int, deadline: Deadline
    ) -> list[str]:
        """The first row of a constant string signature (`labels`, `encoder`) of exactly `version`."""
        ...

    async def versions(self, model: str, timeout_s: float) -> list[int]:
        """The versions in state AVAILABLE, ascending; empty if none (or no such model)."""
        ...

    async def signatures(self, model: str, version: int, timeout_s: float) -> Signatures:
        """`version`'s metadata: its signatures and the embedding size it takes."""
        ...
