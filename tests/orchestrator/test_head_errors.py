"""One table for both head protocols: each failure TF Serving can report over REST (its HTTP status, from
ToHTTPStatusCode, with its `{"error": ...}` body) and over gRPC (the status it derived it from) gives the same
error, and is retried exactly as often, through the real clients. No head: REST's answers come from a scripted
server, gRPC's calls are faked."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import orjson
import pytest
from prometheus_client import REGISTRY

from orchestrator.clients.head import LABELS_SIGNATURE, QUEUE_FULL, ModelNotFoundError
from orchestrator.clients.head_grpc import HeadGrpcClient
from orchestrator.clients.head_rest import HeadRestClient, status_kind
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import Deadline
from service_common.errors import (
    BadGatewayError,
    DeadlineExceededError,
    OverloadedError,
    ServiceError,
    UnavailableError,
)
from stack.procs import LOOPBACK, free_port
from tests.http_stub import CLOSE, RESET, Answer, Received, Reply, serving

S = grpc.StatusCode
RETRIES = 2
FULL = f"The batch {QUEUE_FULL}; ..."
SETTINGS = OrchestratorSettings(
    head_grpc_target="127.0.0.1:1", head_rest_url="http://head.invalid", connect_retries=RETRIES, retry_backoff_ms=0
)


@dataclass(frozen=True)
class Case:
    http_status: int
    code: grpc.StatusCode
    message: str
    expected: type[ServiceError]
    error_code: str | None
    retried: bool


# Each HTTP status TF Serving answers with, beside each gRPC status it maps to it (errors.py's table).
CASES = [
    Case(400, S.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key", BadGatewayError, "head_error", False),
    Case(400, S.FAILED_PRECONDITION, 'Serving signature key "x" not found.', BadGatewayError, "head_error", False),
    Case(404, S.NOT_FOUND, "Servable not found: Specific(head, 9)", ModelNotFoundError, "head_model_not_found", False),
    Case(408, S.DEADLINE_EXCEEDED, "Request Timeout", DeadlineExceededError, "head_timeout", False),
    Case(429, S.RESOURCE_EXHAUSTED, "out of memory", OverloadedError, "overloaded", False),
    Case(499, S.CANCELLED, "Cancelled", UnavailableError, "head_unavailable", True),
    Case(500, S.INTERNAL, "Matrix size-incompatible", BadGatewayError, "head_error", False),
    Case(500, S.UNKNOWN, "a model bug", BadGatewayError, "head_error", False),
    Case(503, S.UNAVAILABLE, "Cancelling all calls", UnavailableError, "head_unavailable", True),
    Case(503, S.UNAVAILABLE, FULL, OverloadedError, "overloaded", False),
    Case(504, S.DEADLINE_EXCEEDED, "Deadline Exceeded", DeadlineExceededError, "head_timeout", False),
]


async def _rest_error(answer: Answer) -> tuple[ServiceError, int]:
    """What HeadRestClient raises for a label lookup (one predict call) whose every attempt gets `answer`."""
    async with serving(answer) as server:
        error = await _label_lookup_error(server.url)
    return error, len(server.received)


async def _label_lookup_error(url: str) -> ServiceError:
    async with HeadRestClient(SETTINGS.model_copy(update={"head_rest_url": url})) as client:
        with pytest.raises(ServiceError) as caught:
            await client.constants("sentiment", 1, LABELS_SIGNATURE, 4, Deadline(5.0))
    return caught.value


async def _refused_rest_error() -> tuple[ServiceError, int]:
    """The same with nothing listening: its attempts are the first and each retry the client counts."""
    retried = REGISTRY.get_sample_value("orchestrator_hop_retries_total", {"hop": "head"}) or 0.0
    error = await _label_lookup_error(f"http://{LOOPBACK}:{free_port()}")
    attempts = 1 + (REGISTRY.get_sample_value("orchestrator_hop_retries_total", {"hop": "head"}) or 0.0) - retried
    return error, int(attempts)


async def _grpc_error(fail: Callable[[], Awaitable[object]]) -> tuple[ServiceError, int]:
    """What HeadGrpcClient raises for a label lookup whose every attempt fails with `fail()`."""
    attempts = 0

    def call(request: object, *, timeout: float, metadata: object) -> Awaitable[object]:
        nonlocal attempts
        attempts += 1
        return fail()

    async with HeadGrpcClient(SETTINGS) as client:
        client._predict = call
        with pytest.raises(ServiceError) as caught:
            await client.constants("sentiment", 1, LABELS_SIGNATURE, 4, Deadline(5.0))
    return caught.value, attempts


def _aborted(code: grpc.StatusCode, message: str) -> Callable[[], Awaitable[object]]:
    async def fail() -> object:
        raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), message)

    return fail


def _same(rest: tuple[ServiceError, int], over_grpc: tuple[ServiceError, int]) -> tuple[object, ...]:
    (rest_error, rest_attempts), (grpc_error, grpc_attempts) = rest, over_grpc
    assert (type(rest_error), rest_error.status_code, rest_error.code, rest_attempts) == (
        type(grpc_error),
        grpc_error.status_code,
        grpc_error.code,
        grpc_attempts,
    ), (rest_error, grpc_error)
    return type(rest_error), rest_error.status_code, rest_error.code, rest_attempts


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.http_status}-{c.code.name}")
async def test_a_tf_serving_error_is_the_same_error_whatever_the_protocol(case: Case) -> None:
    body = orjson.dumps({"error": case.message}, option=orjson.OPT_INDENT_2)
    rest = await _rest_error(lambda _: Reply(case.http_status, body))
    over_grpc = await _grpc_error(_aborted(case.code, case.message))
    expected = (case.expected, case.expected.status_code, case.error_code, 1 + RETRIES if case.retried else 1)
    assert _same(rest, over_grpc) == expected


def test_rest_statuses_name_the_grpc_status_tf_serving_derived_them_from() -> None:
    """The inverse of ToHTTPStatusCode (head_service/errors.py holds the forward table)."""
    for case in CASES:
        if case.code not in (S.FAILED_PRECONDITION, S.UNKNOWN):  # share 400 / 500
            assert status_kind(case.http_status) == case.code.name
    assert status_kind(502) == "HTTP_502"  # not TF Serving's: a proxy's, reported as a bad answer


async def test_a_bare_500_is_a_bad_answer_not_an_unavailable_head() -> None:
    """A 500 that is not TF Serving's body (a web server's own page) is still INTERNAL: a 502, not retried."""
    error, attempts = await _rest_error(lambda _: Reply(500, b"Internal Server Error"))
    assert (type(error), error.code, attempts) == (BadGatewayError, "head_error", 1)
    assert "INTERNAL: Internal Server Error" in str(error)


@pytest.mark.parametrize("ending", ["refused", RESET, CLOSE])
async def test_a_refused_or_dropped_connection_is_unavailable_as_over_grpc(ending: str) -> None:
    """gRPC reports a refused, reset or dropped connection as UNAVAILABLE: REST's transport errors are the same."""
    rest = await (_refused_rest_error() if ending == "refused" else _rest_error(lambda _: ending))
    over_grpc = await _grpc_error(_aborted(S.UNAVAILABLE, "Connection reset by peer"))
    assert _same(rest, over_grpc) == (UnavailableError, 503, "head_unavailable", 1 + RETRIES)


async def test_an_answer_after_an_unreached_attempt_is_used() -> None:
    """A retried 499 then a 200: the call succeeds, as a CANCELLED then OK does over gRPC."""
    answers = iter([Reply(499, orjson.dumps({"error": "Cancelled"})), Reply(200, orjson.dumps({"outputs": [["a"]]}))])

    def answer(_: Received) -> Reply:
        return next(answers)

    async with (
        serving(answer) as server,
        HeadRestClient(SETTINGS.model_copy(update={"head_rest_url": server.url})) as client,
    ):
        assert await client.constants("sentiment", 1, LABELS_SIGNATURE, 4, Deadline(5.0)) == ["a"]
