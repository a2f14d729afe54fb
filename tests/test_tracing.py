"""One request followed through three services: W3C Trace Context on every hop, spans exported over OTLP to
a receiver this test session runs on loopback, with the parents and links the docs promise, and the trace
ids in the services' JSON logs."""

import asyncio
import json
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import HeadServer, Pipeline, running_orchestrator
from tests.otlp import ExportedSpan, Receiver
from tests.servers import Server

pytestmark = pytest.mark.slow


def trace_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    version, trace_id, span_id, flags = response.headers["traceresponse"].split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16 and flags in ("00", "01")
    return trace_id


def one(spans: list[ExportedSpan], service: str, name: str) -> ExportedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, (service, name, [(s.service, s.name) for s in spans])
    return found[0]


def spans_of(otlp: Receiver, trace_id: str) -> list[ExportedSpan]:
    """The trace's spans, once every span a /classify makes in the three services has been exported."""

    def complete(spans: list[ExportedSpan]) -> bool:
        return {(s.service, s.name) for s in spans if s.trace_id == trace_id} >= EVERY_SPAN

    return [s for s in otlp.wait_for(complete) if s.trace_id == trace_id]


EVERY_SPAN = {
    *(("orchestrator", name) for name in ("POST /classify", "classify", "embed_call", "head_call")),
    *(("embedding-service", name) for name in ("POST /v1/embeddings", "tokenize", "queue", "infer")),
    ("head", "predict"),
}


def test_one_classify_is_one_trace_across_three_services_with_correct_parents(
    pipeline: Pipeline, otlp: Receiver
) -> None:
    text = f"a film I would watch again, {secrets.token_hex(4)}"  # new: the cache must not answer it
    trace_id = trace_of(httpx.post(f"{pipeline.orchestrator.url}/classify", json={"text": text}))
    spans = spans_of(otlp, trace_id)
    server = one(spans, "orchestrator", "POST /classify")
    classify = one(spans, "orchestrator", "classify")
    embed_call = one(spans, "orchestrator", "embed_call")
    head_call = one(spans, "orchestrator", "head_call")
    embedding = one(spans, "embedding-service", "POST /v1/embeddings")
    assert server.parent_span_id == ""
    assert classify.parent_span_id == server.span_id
    assert embed_call.parent_span_id == head_call.parent_span_id == classify.span_id
    assert embedding.parent_span_id == embed_call.span_id
    for stage in ("tokenize", "queue", "infer"):
        assert one(spans, "embedding-service", stage).parent_span_id == embedding.span_id, stage
    infer = one(spans, "embedding-service", "infer")
    assert infer.attributes["embedding.batch_texts"] >= 1 and infer.attributes["embedding.padded_tokens"] >= 1
    assert "orchestrator" in str(infer.attributes["embedding.lanes"])
    assert one(spans, "embedding-service", "queue").attributes["embedding.lane"] == "orchestrator"
    assert one(spans, "head", "predict").parent_span_id == head_call.span_id
    assert head_call.attributes["hop.head"] == "sentiment"


def test_an_incoming_traceparent_is_continued_and_a_malformed_one_starts_a_new_trace(
    pipeline: Pipeline, otlp: Receiver
) -> None:
    url = f"{pipeline.orchestrator.url}/classify"
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    text = f"fine, {secrets.token_hex(4)}"  # new: computed, so every span is made
    continued = httpx.post(url, json={"text": text}, headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    assert trace_of(continued) == trace_id
    server = one(spans_of(otlp, trace_id), "orchestrator", "POST /classify")
    assert server.parent_span_id == parent
    for malformed in ("00-zzzz-not-a-trace", f"00-{'0' * 32}-{parent}-01", "garbage"):
        answer = httpx.post(url, json={"text": "fine"}, headers={"traceparent": malformed})
        assert trace_of(answer) not in (trace_id, "0" * 32), malformed


@pytest.fixture(scope="module")
def merging_orchestrator(
    embedding_server: Server, head_server: HeadServer, otlp: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One hop call at a time: requests that arrive while it runs are merged into the next."""
    log = tmp_path_factory.mktemp("logs") / "orchestrator-merging.log"
    with running_orchestrator(
        embedding_server.url, head_server, log, env=otlp.env, max_in_flight_batches="1"
    ) as orchestrator:
        yield orchestrator


async def test_merged_requests_keep_their_own_traces_and_link_to_the_shared_call(
    merging_orchestrator: Server, otlp: Receiver
) -> None:
    stamp = secrets.token_hex(4)
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(
            *(client.post(f"{merging_orchestrator.url}/classify", json={"text": f"{stamp} {i}"}) for i in range(8))
        )
    traces = [trace_of(answer) for answer in answers]
    assert len(set(traces)) == 8  # each request its own trace

    def merged_call(spans: list[ExportedSpan]) -> bool:
        classified = {s.trace_id for s in spans if s.name == "classify"}
        return set(traces) <= classified and any(
            s.name == "embed_call" and s.trace_id in traces and s.links for s in spans
        )

    spans = otlp.wait_for(merged_call)
    calls = [s for s in spans if s.name == "embed_call" and s.trace_id in traces and s.links]
    classify = {s.trace_id: s for s in spans if s.name == "classify" and s.trace_id in traces}
    call = calls[0]
    served = {call.trace_id, *(trace for trace, _ in call.links)}
    assert len(served) == call.attributes["coalesced.requests"] >= 2
    assert call.parent_span_id == classify[call.trace_id].span_id  # a child of the first request
    for trace, span in call.links:  # and linked to each other request's own `classify` span
        assert classify[trace].span_id == span


def test_the_json_logs_carry_the_trace_id(pipeline: Pipeline, otlp: Receiver) -> None:
    trace_id = secrets.token_hex(16)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    text = f"logged, {secrets.token_hex(4)}"
    trace_of(httpx.post(f"{pipeline.orchestrator.url}/classify", json={"text": text}, headers=headers))
    spans_of(otlp, trace_id)
    for server in (pipeline.orchestrator, pipeline.embedding):
        lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        ours = [line for line in lines if line.get("trace_id") == trace_id]
        assert ours and all(len(line["span_id"]) == 16 and line["request_id"] != "-" for line in ours), server.url


def test_an_unsampled_trace_is_carried_through_every_hop_and_recorded_by_none(
    pipeline: Pipeline, otlp: Receiver
) -> None:
    """The root's decision holds downstream: no service records a span of a trace its caller did not sample
    (a hop that re-sampled it, or sent it on as sampled, would), and every hop still carries the trace (one
    that dropped it would log another trace id)."""
    url = f"{pipeline.orchestrator.url}/classify"
    trace_id = secrets.token_hex(16)
    unsampled = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-00"}
    answer = httpx.post(url, json={"text": f"unsampled, {secrets.token_hex(4)}"}, headers=unsampled)
    assert trace_of(answer) == trace_id and answer.headers["traceresponse"].endswith("-00")
    # A sampled request after it: once all of its spans are in, any of the first's would be too.
    spans_of(otlp, trace_of(httpx.post(url, json={"text": f"sampled, {secrets.token_hex(4)}"})))
    assert [(s.service, s.name) for s in otlp.spans if s.trace_id == trace_id] == []
    for server in (pipeline.orchestrator, pipeline.embedding):
        lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        assert any(line.get("trace_id") == trace_id for line in lines), server.url
