"""Pipeline: texts -> embeddings (embedding service) -> probabilities (a head) -> label names, in input order.

Two steps, so the coalescer that calls them knows which hop a batch is waiting on, and embeds once for
every head its requests name."""

from dataclasses import dataclass

import numpy as np

from orchestrator.clients.embedding import Embedded, EmbeddingClient
from orchestrator.clients.head import HeadClient, ModelNotFoundError, Scores
from orchestrator.heads import HeadRegistry
from orchestrator.labels import LabelCatalog
from orchestrator.metrics import CLASSIFIED_TEXTS_TOTAL
from service_common.deadline import Deadline
from service_common.errors import BadGatewayError, ServiceError


@dataclass(frozen=True)
class Classified:
    """One head's answer for some texts."""

    head: str
    probabilities: np.ndarray  # [texts, classes]
    labels: list[str]  # the answering version's class names, in column order
    version: int

    def rows(self, start: int, stop: int) -> "Classified":
        return Classified(self.head, self.probabilities[start:stop], self.labels, self.version)


@dataclass(frozen=True)
class Answer:
    """What one /classify request gets: each head's answer or error, and what became of long texts."""

    heads: dict[str, Classified | ServiceError]
    truncated: list[int]
    chunked: list[tuple[int, int]]  # (text index, windows) of texts embedded whole from several windows


class Pipeline:
    def __init__(self, embedding: EmbeddingClient, head: HeadClient, labels: LabelCatalog, heads: HeadRegistry) -> None:
        self.embedding = embedding
        self.head = head
        self.labels = labels
        self.heads = heads

    async def embed(self, texts: list[str], deadline: Deadline, *, chunk: bool) -> Embedded:
        return await self.embedding.embed(texts, deadline, chunk=chunk)

    async def score(self, head: str, vectors: np.ndarray, deadline: Deadline) -> Classified:
        """The head's probabilities for the vectors, with the answering version's label names."""
        self.heads.check(head, "head")
        scores = await self.head.predict(head, vectors, deadline)
        try:
            names = await self.labels.names(head, scores.version, vectors.shape[1], deadline)
        except ModelNotFoundError:
            # The version that answered was unloaded before its labels were read (a swap in between):
            # the newer version answers again, and its labels are read.
            scores = await self.head.predict(head, vectors, deadline)
            names = await self.labels.names(head, scores.version, vectors.shape[1], deadline)
        _check_shape(head, scores, names, len(vectors))
        CLASSIFIED_TEXTS_TOTAL.labels(head).inc(len(vectors))
        return Classified(head, scores.probabilities, names, scores.version)


def _check_shape(head: str, scores: Scores, names: list[str], texts: int) -> None:
    expected = (texts, len(names))
    if not names or scores.probabilities.shape != expected:
        raise BadGatewayError(
            f"head {head!r} version {scores.version} returned probabilities of shape "
            f"{list(scores.probabilities.shape)} for {texts} texts and {len(names)} labels",
            code="head_error",
        )
