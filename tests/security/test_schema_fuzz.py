"""Schemathesis against the running embedding service and orchestrator, from the OpenAPI schema each one serves:
valid and schema-violating requests to every operation, none answered with a 5xx, and every documented answer
matching its schema. Bounded: a few dozen examples per operation and mode, each with a deadline."""

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.conftest import Pipeline
from tests.security.hostile import CLIENT_TIMEOUT_S
from tests.servers import Server

pytestmark = pytest.mark.slow

POST_EXAMPLES = 100  # per operation and mode; GETs take no input, so a few do
GET_EXAMPLES = 3
FUZZ = settings(
    deadline=10_000,  # ms per example: a hang fails the test long before the client's timeout adds up
    database=None,
    derandomize=True,  # the same examples every run, so a failure here is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def fuzz(server: Server) -> list[str]:
    """Every operation in both generation modes; returns the operations fuzzed."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=CLIENT_TIMEOUT_S)
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()
        post = operation.method.upper() == "POST"
        # The GETs take no input at all, so nothing about them can violate the schema.
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if post else (GenerationMode.POSITIVE,)
        examples = POST_EXAMPLES if post else GET_EXAMPLES
        for mode in modes:
            run_bounded(operation.as_strategy(generation_mode=mode), examples, server.url)()
        fuzzed.append(f"{operation.method.upper()} {operation.path}")
    return fuzzed


def run_bounded(strategy: object, examples: int, base_url: str) -> Callable[[], None]:
    @settings(FUZZ, max_examples=examples)
    @given(case=strategy)
    def check(case: Case) -> None:
        response = case.call(base_url=base_url, timeout=CLIENT_TIMEOUT_S)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    return check


def test_embedding_service_schema(embedding_server: Server) -> None:
    assert {"POST /v1/embeddings", "POST /embed", "GET /v1/models"} <= set(fuzz(embedding_server))


def test_orchestrator_schema(pipeline: Pipeline) -> None:
    assert "POST /classify" in fuzz(pipeline.orchestrator)
