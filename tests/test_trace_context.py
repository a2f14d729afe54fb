"""With tracing off (no OTLP endpoint: no SDK, no spans), a service still continues its caller's W3C trace:
the trace id comes back in `traceresponse` and is in the log lines; a malformed `traceparent` is ignored."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from service_common import tracing
from service_common.app import service_app
from service_common.settings import ServiceSettings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def client() -> TestClient:
    router = APIRouter()

    @router.get("/v1/where")
    async def where() -> dict[str, str]:
        logging.getLogger("tests.trace").info("inside the route")
        trace_id, span_id = tracing.ids()
        return {"trace_id": trace_id, "span_id": span_id}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    return TestClient(service_app("test", ServiceSettings(), lifespan, lambda: None, router))


def test_tracing_is_off_in_a_process_with_no_endpoint() -> None:
    assert not tracing.enabled()
    with tracing.span("nothing") as span:
        assert span is None


def test_an_incoming_trace_is_continued_and_answered(caplog: pytest.LogCaptureFixture) -> None:
    http = client()
    with caplog.at_level(logging.INFO):
        answer = http.get("/v1/where", headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})
    assert answer.json() == {"trace_id": TRACE_ID, "span_id": PARENT}  # off: no span of our own
    assert answer.headers["traceresponse"] == f"00-{TRACE_ID}-{PARENT}-01"
    inside = [r for r in caplog.records if r.getMessage() == "inside the route"]
    assert inside and tracing.ids() == ("-", "-")  # and nothing leaks out of the request


@pytest.mark.parametrize("traceparent", [None, "garbage", f"00-{'0' * 32}-{PARENT}-01", f"ff-{TRACE_ID}-{PARENT}-01"])
def test_no_or_a_malformed_traceparent_is_no_trace_and_never_an_error(traceparent: str | None) -> None:
    headers = {} if traceparent is None else {"traceparent": traceparent}
    answer = client().get("/v1/where", headers=headers)
    assert answer.status_code == 200 and answer.json() == {"trace_id": "-", "span_id": "-"}
    assert "traceresponse" not in answer.headers
