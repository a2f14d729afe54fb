"""Pipeline: texts -> embeddings (the embedding service serving the head's encoder) -> probabilities (the
head version trained on that encoder) -> label names, in input order.

Two steps, so the coalescer that calls them knows which hop a batch is waiting on, and embeds once per
encoder for every head its requests name. A head is never given vectors from an encoder other than the
one its answering version was trained on: `score` pins the version stamped with the encoder the embedding
answer names."""

from dataclasses import dataclass, field, replace

import numpy as np

from orchestrator.clients.embedding import Embedded
from orchestrator.clients.head import HeadClient, ModelNotFoundError, head_error
from orchestrator.encoders import EmbeddingEndpoints
from orchestrator.heads import HeadRegistry
from orchestrator.metrics import CLASSIFIED_TEXTS_TOTAL
from orchestrator.versions import HeadVersion, VersionCatalog
from service_common.deadline import Deadline
from service_common.errors import BadGatewayError, ServiceError, UnavailableError


@dataclass(frozen=True)
class Classified:
    """One head's answer for some texts, and what its encoder made of the long ones."""

    head: str
    probabilities: np.ndarray  # [texts, classes]
    labels: list[str]  # the answering version's class names, in column order
    version: int
    encoder: str  # the identity of the encoder that embedded the texts (and that the version was trained on)
    truncated: list[int] = field(default_factory=list)  # indices of texts cut to the encoder's max length
    chunked: list[tuple[int, int]] = field(default_factory=list)  # (index, windows) of texts embedded whole

    def rows(self, start: int, stop: int, truncated: list[int], chunked: list[tuple[int, int]]) -> "Classified":
        """Rows [start, stop), with their own texts' `truncated` and `chunked` (indices from 0)."""
        return replace(self, probabilities=self.probabilities[start:stop], truncated=truncated, chunked=chunked)


# What one /classify request gets: each head's answer or error, in the order asked.
Answer = dict[str, Classified | ServiceError]


class EncoderMovedError(Exception):
    """The head no longer has a version for the vectors' encoder, and now answers for `encoder`'s (its new
    version loaded while they were embedded): embed again for that encoder."""

    def __init__(self, head: str, vectors_encoder: str, encoder: str) -> None:
        super().__init__(head, vectors_encoder, encoder)
        self.head = head
        self.vectors_encoder = vectors_encoder
        self.encoder = encoder

    def mismatch(self) -> BadGatewayError:
        return BadGatewayError(
            f"head {self.head!r} answers for encoder {self.encoder}, and the embedding service embedded the "
            f"texts with encoder {self.vectors_encoder}",
            code="encoder_mismatch",
        )


class Pipeline:
    def __init__(
        self,
        endpoints: EmbeddingEndpoints,
        head: HeadClient,
        catalog: VersionCatalog,
        heads: HeadRegistry,
        head_timeout_s: float,
    ) -> None:
        self.endpoints = endpoints
        self.head = head
        self.catalog = catalog
        self.heads = heads
        self._head_timeout_s = head_timeout_s  # the budget of a look at a head, shared by its callers

    async def route(self, head: str, param: str, deadline: Deadline) -> str:
        """The encoder whose vectors `head` takes now. While no embedding service has named its encoder,
        they are asked first; a head not readable at the last look is looked at again (it may have
        loaded since); a head whose encoder may be that of a service not named yet is a 503, not a 502.
        While the head is down, a 503 at once: no embedding is made for a head that cannot take it (a
        second after the last try that found it unreachable, a request tries it again, as the readiness
        checks do)."""
        if (where := self.head.down) is not None:
            raise head_error("UNAVAILABLE", "its last calls could not reach it", where=where, timeout_s=0)
        encoders = await self.endpoints.learn(deadline)
        if not encoders:
            raise UnavailableError(
                f"no embedding service can be asked for its encoder: {self.endpoints.problems()}",
                code="embedding_unavailable",
            )
        try:
            try:
                return self.heads.route(head, param, encoders, self.endpoints.ready_encoders())
            except UnavailableError as exc:
                if exc.code != "head_unavailable":
                    raise
            await self.heads.reread(self.head, self.catalog, head, deadline, self._head_timeout_s)
            return self.heads.route(head, param, self.endpoints.encoders(), self.endpoints.ready_encoders())
        except BadGatewayError as exc:
            unnamed = self.endpoints.unnamed()
            if exc.code != "encoder_mismatch" or unnamed is None:
                raise
            raise UnavailableError(
                f"{exc.message}; not every embedding service has named its encoder yet ({unnamed})",
                code="embedding_unavailable",
            ) from None

    async def embed(self, texts: list[str], deadline: Deadline, *, chunk: bool, encoder: str) -> Embedded:
        return await self.endpoints.serving(encoder).embed(texts, deadline, chunk=chunk)

    async def score(self, head: str, vectors: np.ndarray, made: Embedded, deadline: Deadline) -> Classified:
        """The probabilities of the head version trained on the encoder that `made` the vectors, with its
        label names. EncoderMovedError when the head answers for another encoder now; a BadGatewayError
        when the vectors are int8 and the int8 build did not check that head version."""
        encoder = made.encoder
        version = self._checked(head, made)
        try:
            probabilities = await self.head.predict(head, version.version, vectors, deadline)
        except ModelNotFoundError:
            # The version was unloaded (a newer one came): look at the head again, and go on with the
            # version trained on this encoder, if one is still there.
            await self.heads.reread(self.head, self.catalog, head, deadline, self._head_timeout_s)
            version = self._checked(head, made)
            probabilities = await self.head.predict(head, version.version, vectors, deadline)
        _check_shape(head, version.version, probabilities, version.labels, len(vectors))
        CLASSIFIED_TEXTS_TOTAL.labels(head).inc(len(vectors))
        return Classified(head, probabilities, version.labels, version.version, encoder)

    def _checked(self, head: str, made: Embedded) -> HeadVersion:
        version = self._version_for(head, made.encoder)
        if made.int8_heads is not None and (head, version.version) not in made.int8_heads:
            raise BadGatewayError(
                f"head {head!r} version {version.version} takes encoder {made.encoder}'s vectors, but the embedding "
                "service runs it at int8, and its int8 build did not check this head version's accuracy: rebuild "
                "the int8 model (make models-int8) with this version, or serve the encoder at fp32 or bf16",
                code="unchecked_precision",
            )
        return version

    def _version_for(self, head: str, encoder: str) -> HeadVersion:
        version = self.heads.version_for(head, encoder)
        if version is None:
            routed = self.heads.route(head, "head", self.endpoints.encoders())  # raises encoder_mismatch
            raise EncoderMovedError(head, encoder, routed)
        return version


def _check_shape(head: str, version: int, probabilities: np.ndarray, names: list[str], texts: int) -> None:
    expected = (texts, len(names))
    if not names or probabilities.shape != expected:
        raise BadGatewayError(
            f"head {head!r} version {version} returned probabilities of shape "
            f"{list(probabilities.shape)} for {texts} texts and {len(names)} labels",
            code="head_error",
        )
