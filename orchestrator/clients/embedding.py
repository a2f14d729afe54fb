"""EmbeddingClient: one embedding service's /v1/embeddings over pooled keep-alive connections, base64.

Each answer says which encoder made its vectors (ENCODER_HEADER): the client keeps the identity it last
saw, from the model card or an answer, so a service that changed encoder under it is known as such."""

import base64
import logging
import re
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import numpy as np
import orjson

from orchestrator.clients import http_hop
from orchestrator.clients.http_client import HttpResponse, PooledHttpClient
from orchestrator.limits import EmbeddingLimits
from orchestrator.metrics import HOP_ERRORS_TOTAL, STAGE_SECONDS
from orchestrator.settings import OrchestratorSettings
from service_common import tracing
from service_common.deadline import TIMEOUT_HEADER, Deadline
from service_common.errors import (
    BadGatewayError,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    ServiceError,
    UnavailableError,
)
from service_common.logs import request_id_var
from service_common.middleware import REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

HOP = "embedding"
# Below uvicorn's (and most servers') 5 s idle timeout: a pooled connection is dropped before the server
# closes it, not reused in the instant it does (which fails the call).
KEEPALIVE_EXPIRY_S = 4.0
_INPUT_INDEX = re.compile(r"input\[([0-9]{1,9})\]", re.ASCII)
# The embedding service's header naming the encoder of an answer's vectors (its manifest's identity).
ENCODER_HEADER = "X-Encoder-Identity"
PRECISION_HEADER = "X-Encoder-Precision"  # what the encoder computed them in
IDENTITY = re.compile(r"[0-9a-f]{16}", re.ASCII)  # what an encoder identity looks like


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # [texts, dimensions] float32
    encoder: str  # the identity of the encoder that made them, as the answer says
    truncated: list[int]  # indices of texts cut to the encoder's max sequence length
    chunked: list[tuple[int, int]]  # (index, windows) of texts embedded whole from several windows
    # At int8 (outside the parity contract): the only head versions, (name, version), whose accuracy the
    # int8 build checked, and so the only ones that may take these vectors. None: every head of the encoder.
    int8_heads: frozenset[tuple[str, int]] | None = None


class EmbeddingRefusedError(InvalidRequestError):
    """The embedding service refused the call's texts (4xx): `index` is the text it named, in the call's
    order, or None when it refused the call as a whole. `for_caller` says it in a caller's own terms."""

    def __init__(self, message: str, *, status_code: int, param: str | None, code: str | None) -> None:
        super().__init__(message, param=param, code=code)
        self.status_code = status_code
        match = _INPUT_INDEX.fullmatch(param or "")
        self.index = int(match[1]) if match else None

    def for_caller(self, field: str, index: int | None) -> InvalidRequestError:
        """`field` is the caller's name for its texts (`text` or `texts`); `index` its own text's position."""
        ours = field if field == "text" or index is None else f"{field}[{index}]"
        message = self.message.replace(self.param, ours) if self.param else self.message
        error = InvalidRequestError(message, param=ours, code=self.code)
        error.status_code = self.status_code
        return error


class EmbeddingClient:
    def __init__(self, settings: OrchestratorSettings, url: str) -> None:
        self.url = url.rstrip("/")
        self._settings = settings
        self._retries = http_hop.connect_retries(HOP, self.url, settings)
        self.limits: EmbeddingLimits | None = None  # learned from its /v1/models by `describe`
        self.identity: str | None = None  # its encoder's, as last seen (None: not seen yet)
        self.int8_heads: frozenset[tuple[str, int]] = frozenset()  # from its model card, when it runs int8
        self.dimensions: int | None = None
        key = settings.embedding_key
        self._client = PooledHttpClient(
            self.url,
            max_connections=settings.embedding_max_connections,
            keepalive_expiry_s=KEEPALIVE_EXPIRY_S,
            # On every call, the readiness checks' included (/v1/models needs it when the service has auth on).
            # The key is the orchestrator's identity there too: a lane key gives it its lane and weight.
            headers={"Authorization": f"Bearer {key}"} if key else None,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self._client.aclose()

    async def embed(self, texts: list[str], deadline: Deadline, *, chunk: bool = False) -> Embedded:
        """The texts' vectors, in order; EmbeddingRefusedError when the service refuses them. `chunk`: texts
        over the encoder's max length are embedded whole (the mean of their windows), not cut."""
        timeout_s = deadline.budget_s(self._settings.embedding_timeout_s)
        request: dict[str, object] = {"input": texts, "encoding_format": "base64"}
        if chunk:
            request["chunk"] = True
        body = orjson.dumps(request)
        response = await self._call("POST", "/v1/embeddings", timeout_s, body)
        if response.status_code != 200:
            raise _as_error(response)
        encoder = self._learn(response.header(ENCODER_HEADER))
        try:
            answer = orjson.loads(response.content)
            items = sorted(answer["data"], key=lambda item: item["index"])
            if [item["index"] for item in items] != list(range(len(texts))):
                raise ValueError(f"{len(items)} embeddings for {len(texts)} texts")
            vectors = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in items])
            chunked = [(int(c["index"]), int(c["windows"])) for c in answer.get("chunked", [])]
            int8 = self.int8_heads if response.header(PRECISION_HEADER) == "int8" else None
            return Embedded(vectors, encoder, [int(i) for i in answer.get("truncated", [])], chunked, int8)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            HOP_ERRORS_TOTAL.labels(HOP, "malformed").inc()
            raise BadGatewayError(
                f"the embedding service's answer is malformed: {exc!r}", code="embedding_error"
            ) from None

    async def check_ready(self, timeout_s: float) -> None:
        """Returns when the embedding service is ready; raises UnavailableError saying why not."""
        response = await self._call("GET", "/readyz", timeout_s)
        if response.status_code != 200:
            raise _as_error(response)

    async def describe(self, timeout_s: float) -> None:
        """Reads the served encoder's identity, embedding size and request limits from its model card.
        Raises UnavailableError until it is loaded and warm."""
        response = await self._call("GET", "/v1/models", timeout_s)
        if response.status_code != 200:
            raise _as_error(response)
        try:
            card = orjson.loads(response.content)["data"][0]
            limits = EmbeddingLimits.from_model_card(card)
            dimensions = int(card["dimensions"])
            identity = str(card["identity"])
            checked = (card.get("runtime", {}).get("int8") or {}).get("heads", [])
            int8_heads = frozenset((str(head["name"]), int(head["version"])) for head in checked)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
            HOP_ERRORS_TOTAL.labels(HOP, "malformed").inc()
            raise BadGatewayError(
                f"the embedding service's model list is malformed: {exc!r}", code="embedding_error"
            ) from None
        self._learn(identity)
        self.limits, self.dimensions, self.int8_heads = limits, dimensions, int8_heads

    def _learn(self, identity: str) -> str:
        """The identity an answer carries, kept as this service's; BadGatewayError if it carries none."""
        if not IDENTITY.fullmatch(identity):
            HOP_ERRORS_TOTAL.labels(HOP, "malformed").inc()
            raise BadGatewayError(
                f"the embedding service at {self.url} names no encoder identity ({ENCODER_HEADER}: {identity[:32]!r})",
                code="embedding_error",
            )
        if identity != self.identity:
            if self.identity is not None:
                logger.warning(
                    "the embedding service at %s now serves encoder %s, not %s", self.url, identity, self.identity
                )
            self.identity = identity
        return identity

    async def _call(self, method: str, path: str, timeout_s: float, body: bytes = b"") -> HttpResponse:
        headers = {REQUEST_ID_HEADER: request_id_var.get(), TIMEOUT_HEADER: Deadline.header_value(timeout_s)}
        if body:
            headers["Content-Type"] = "application/json"
        tracing.inject(headers)
        started = time.perf_counter()
        try:
            return await http_hop.request(
                self._client,
                method,
                path,
                retries=self._retries,
                timeout_s=timeout_s,
                headers=headers,
                content=body,
            )
        except TimeoutError:
            HOP_ERRORS_TOTAL.labels(HOP, "timeout").inc()
            raise DeadlineExceededError(
                f"the embedding service did not answer within {timeout_s:.3g}s", code="embedding_timeout"
            ) from None
        except http_hop.HopUnreachable as exc:
            HOP_ERRORS_TOTAL.labels(HOP, "unavailable").inc()
            raise UnavailableError(
                f"the embedding service at {self.url} is unavailable: {exc}",
                code="embedding_unavailable",
            ) from None
        finally:
            if method == "POST":
                STAGE_SECONDS.labels("embed_call").observe(time.perf_counter() - started)


def _as_error(response: HttpResponse) -> ServiceError:
    """The embedding service's error as ours; its refusals of the texts stay refusals (EmbeddingRefusedError)."""
    try:
        error = orjson.loads(response.content)["error"]
        message, param, code = str(error["message"]), error.get("param"), error.get("code")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message, param, code = response.text[:200], None, None
    status = response.status_code
    HOP_ERRORS_TOTAL.labels(HOP, str(status)).inc()
    if status == 429:
        overloaded = OverloadedError(f"the embedding service is overloaded: {message}")
        overloaded.headers = {"Retry-After": response.header("Retry-After", "1")}
        return overloaded
    if status in (400, 413):
        return EmbeddingRefusedError(message, status_code=status, param=param, code=code)
    if status == 503:
        return UnavailableError(f"the embedding service is not ready: {message}", code="embedding_unavailable")
    if status == 504:
        return DeadlineExceededError(f"the embedding service timed out: {message}", code="embedding_timeout")
    return BadGatewayError(f"the embedding service answered {status}: {message}", code="embedding_error")
