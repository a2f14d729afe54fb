"""Pipeline: texts -> embeddings (embedding service) -> probabilities (head) -> label names, in input order.

Two steps, so the coalescer that calls them knows which hop a batch is waiting on."""

from dataclasses import dataclass

import numpy as np

from orchestrator.clients.embedding import Embedded, EmbeddingClient
from orchestrator.clients.head import HeadClient, ModelNotFoundError, Scores
from orchestrator.labels import LabelCatalog
from orchestrator.metrics import CLASSIFIED_TEXTS_TOTAL
from service_common.deadline import Deadline
from service_common.errors import BadGatewayError


@dataclass(frozen=True)
class Classified:
    probabilities: np.ndarray  # [texts, classes]
    labels: list[str]  # the answering version's class names, in column order
    version: int
    truncated: list[int]
    chunked: list[tuple[int, int]]  # (text index, windows) of texts embedded whole from several windows

    def rows(self, start: int, stop: int) -> "Classified":
        """The part for texts [start, stop), with indices relative to `start`."""
        truncated = [i - start for i in self.truncated if start <= i < stop]
        chunked = [(i - start, n) for i, n in self.chunked if start <= i < stop]
        return Classified(self.probabilities[start:stop], self.labels, self.version, truncated, chunked)


class Pipeline:
    def __init__(self, embedding: EmbeddingClient, head: HeadClient, labels: LabelCatalog) -> None:
        self.embedding = embedding
        self.head = head
        self.labels = labels

    async def embed(self, texts: list[str], deadline: Deadline, *, chunk: bool) -> Embedded:
        return await self.embedding.embed(texts, deadline, chunk=chunk)

    async def score(self, embedded: Embedded, deadline: Deadline) -> Classified:
        """The head's probabilities for the embedded texts, with the answering version's label names."""
        texts = len(embedded.vectors)
        scores = await self.head.predict(embedded.vectors, deadline)
        try:
            names = await self.labels.names(scores.version, embedded.vectors.shape[1], deadline)
        except ModelNotFoundError:
            # The version that answered was unloaded before its labels were read (a swap in between):
            # the newer version answers again, and its labels are read.
            scores = await self.head.predict(embedded.vectors, deadline)
            names = await self.labels.names(scores.version, embedded.vectors.shape[1], deadline)
        _check_shape(scores, names, texts)
        CLASSIFIED_TEXTS_TOTAL.inc(texts)
        return Classified(scores.probabilities, names, scores.version, embedded.truncated, embedded.chunked)


def _check_shape(scores: Scores, names: list[str], texts: int) -> None:
    expected = (texts, len(names))
    if not names or scores.probabilities.shape != expected:
        raise BadGatewayError(
            f"the head's version {scores.version} returned probabilities of shape "
            f"{list(scores.probabilities.shape)} for {texts} texts and {len(names)} labels",
            code="head_error",
        )
