"""HeadRestClient: TF Serving's REST API, for deployments that only open port 8501.

Every call names its version (`/versions/{v}:predict`), as the pipeline pins each one (REST predict
answers would not say which version answered).

Failures are mapped exactly as over gRPC: an HTTP status back to the gRPC status TF Serving derived it from,
a dropped or refused connection to UNAVAILABLE (what gRPC reports for one), and then `head_error()` and
`unreached()` decide, so both protocols report and retry the same events the same way."""

import time
from typing import Any, Self

import numpy as np
import orjson

from orchestrator.clients import http_hop
from orchestrator.clients.embedding import KEEPALIVE_EXPIRY_S
from orchestrator.clients.head import (
    EMBEDDINGS_INPUT,
    HOP,
    MALFORMED,
    PROBABILITIES_SIGNATURE,
    ModelNotFoundError,
    Signatures,
    head_error,
    unreached,
)
from orchestrator.clients.http_client import HttpResponse, PooledHttpClient
from orchestrator.metrics import STAGE_SECONDS
from orchestrator.retry import UnreachedRetries
from orchestrator.settings import OrchestratorSettings
from service_common import tracing
from service_common.deadline import Deadline
from service_common.logs import request_id_var
from service_common.middleware import REQUEST_ID_HEADER

HEAD_MAX_CONNECTIONS = 100  # REST calls to the head at once (httpx's default, which it had before)

# TF Serving's REST status codes back to the gRPC status names head_error() maps: the inverse of its
# ToHTTPStatusCode. Where several codes share a status, head_error() treats them all alike.
_KINDS = {
    400: "INVALID_ARGUMENT",  # and FAILED_PRECONDITION, OUT_OF_RANGE
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",  # not TF Serving's own, but a request timeout all the same (a proxy's)
    409: "ABORTED",  # and ALREADY_EXISTS
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",  # and UNKNOWN, DATA_LOSS
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def status_kind(status_code: int) -> str:
    """The gRPC status name of a REST answer's HTTP status; `HTTP_<code>` for one TF Serving never sends."""
    return _KINDS.get(status_code, f"HTTP_{status_code}")


class _Failed(Exception):
    """One attempt's failure, as the gRPC status name and detail head_error() maps."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


def _unreached(exc: Exception) -> bool:
    return isinstance(exc, _Failed) and unreached(exc.kind, exc.detail)


def _path(model: str) -> str:
    """The model's REST path; the name is one the orchestrator validated (no `/`, `:` or `%`)."""
    return f"/v1/models/{model}"


def _detail(response: HttpResponse) -> str:
    """TF Serving's `{"error": "..."}` message, or the start of a body that is not one."""
    try:
        return str(orjson.loads(response.content)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return response.text[:200]


class HeadRestClient:
    def __init__(self, settings: OrchestratorSettings) -> None:
        self.url = settings.head_rest_url.rstrip("/")
        self._settings = settings
        # One attempt per http_hop call: _call retries every unreached failure (a refused connection
        # included) in one loop, with one count of retries, as the gRPC client does.
        self._retries = UnreachedRetries(HOP, self.url, settings, _unreached)
        self._client = PooledHttpClient(
            self.url, max_connections=HEAD_MAX_CONNECTIONS, keepalive_expiry_s=KEEPALIVE_EXPIRY_S
        )

    async def __aenter__(self) -> Self:
        return self

    @property
    def down(self) -> str | None:
        return self.url if self._retries.down else None

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def predict(self, model: str, version: int, embeddings: np.ndarray, deadline: Deadline) -> np.ndarray:
        started = time.perf_counter()
        try:
            outputs = await self._predict(model, PROBABILITIES_SIGNATURE, version, embeddings, deadline)
        finally:
            STAGE_SECONDS.labels("head_call").observe(time.perf_counter() - started)
        try:
            return np.asarray(outputs, dtype=np.float32).reshape(len(embeddings), -1)
        except (TypeError, ValueError) as exc:
            raise head_error(MALFORMED, repr(exc), where=self.url, timeout_s=0) from None

    async def constants(
        self, model: str, version: int, signature: str, dimensions: int, deadline: Deadline
    ) -> list[str]:
        zeros = np.zeros((1, dimensions), np.float32)
        outputs = await self._predict(model, signature, version, zeros, deadline)
        try:
            return [str(value) for value in outputs[0]]
        except (IndexError, KeyError, TypeError) as exc:
            raise head_error(MALFORMED, repr(exc), where=self.url, timeout_s=0) from None

    async def versions(self, model: str, timeout_s: float) -> list[int]:
        try:
            status = await self._call("GET", _path(model), Deadline(timeout_s))
        except ModelNotFoundError:
            return []
        try:
            available = sorted(int(s["version"]) for s in status["model_version_status"] if s["state"] == "AVAILABLE")
        except (KeyError, TypeError, ValueError) as exc:
            raise head_error(MALFORMED, repr(exc), where=self.url, timeout_s=timeout_s) from None
        return available

    async def signatures(self, model: str, version: int, timeout_s: float) -> Signatures:
        answer = await self._call("GET", f"{_path(model)}/versions/{version}/metadata", Deadline(timeout_s))
        try:
            signatures = answer["metadata"]["signature_def"]["signature_def"]
            dims = signatures[PROBABILITIES_SIGNATURE]["inputs"][EMBEDDINGS_INPUT]["tensor_shape"]["dim"]
            size = int(dims[-1]["size"]) if dims else -1
            return Signatures(size if size > 0 else None, frozenset(signatures))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise head_error(MALFORMED, repr(exc), where=self.url, timeout_s=0) from None

    async def _predict(
        self, model: str, signature: str, version: int, embeddings: np.ndarray, deadline: Deadline
    ) -> Any:
        body = {"signature_name": signature, "inputs": {EMBEDDINGS_INPUT: embeddings}}
        content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        path = f"{_path(model)}/versions/{version}:predict"
        answer = await self._call("POST", path, deadline, content=content)
        try:
            return answer["outputs"]
        except (KeyError, TypeError) as exc:
            raise head_error(MALFORMED, repr(exc), where=self.url, timeout_s=0) from None

    async def _call(self, method: str, path: str, deadline: Deadline, content: bytes = b"") -> Any:
        timeout_s = deadline.budget_s(self._settings.head_timeout_s)
        hop_deadline = Deadline(timeout_s)
        try:
            response = await self._retries.call(
                lambda: self._attempt(method, path, hop_deadline, content), hop_deadline
            )
        except _Failed as failure:
            raise head_error(failure.kind, failure.detail, where=self.url, timeout_s=timeout_s) from None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise head_error(MALFORMED, repr(exc), where=self.url, timeout_s=timeout_s) from None

    async def _attempt(self, method: str, path: str, hop_deadline: Deadline, content: bytes) -> HttpResponse:
        headers = {REQUEST_ID_HEADER: request_id_var.get(), "Content-Type": "application/json"}
        tracing.inject(headers)
        try:
            response = await http_hop.request(
                self._client,
                method,
                path,
                retries=None,
                timeout_s=hop_deadline.remaining_s(),
                headers=headers,
                content=content,
            )
        except TimeoutError:
            raise _Failed("DEADLINE_EXCEEDED", "") from None
        except http_hop.HopUnreachable as exc:  # refused, reset or dropped: what gRPC reports as UNAVAILABLE
            raise _Failed("UNAVAILABLE", str(exc)) from None
        if response.status_code != 200:
            raise _Failed(status_kind(response.status_code), _detail(response))
        return response
