"""POST /classify end to end: the real embedding service, head and orchestrator as subprocesses."""

import asyncio
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedding_service.manifest import EncoderManifest
from tests.conftest import HeadServer, Pipeline, running_orchestrator
from tests.servers import Server

pytestmark = pytest.mark.slow

POSITIVE = ["An absolute delight from start to finish, I loved it.", "Fantastic service, friendly staff, great food."]
NEGATIVE = [
    "This was a waste of money and it broke after a day.",
    "The worst film I have seen, boring and far too long.",
]


def classify(url: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/classify", json=body, headers=headers, timeout=60)


def served_version(pipeline: Pipeline) -> str:
    status = httpx.get(f"{pipeline.head.rest_url}/v1/models/sentiment").json()["model_version_status"]
    return max(s["version"] for s in status if s["state"] == "AVAILABLE")


def test_one_text(pipeline: Pipeline, encoder_dir: Path) -> None:
    response = classify(pipeline.orchestrator.url, {"text": POSITIVE[0]})
    assert response.status_code == 200, response.text
    body = response.json()
    [prediction] = body["predictions"]
    assert prediction["label"] == "positive"
    assert set(prediction["scores"]) == {"positive", "negative"}
    assert prediction["score"] == max(prediction["scores"].values())
    assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    identity = EncoderManifest.read(encoder_dir).identity  # the encoder that embedded it, the head's own
    assert body["model"] == {"name": "sentiment", "version": served_version(pipeline), "encoder": identity}
    assert body["truncated"] == []


def test_obvious_texts_get_the_obvious_labels(pipeline: Pipeline) -> None:
    response = classify(pipeline.orchestrator.url, {"texts": POSITIVE + NEGATIVE})
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == ["positive"] * 2 + ["negative"] * 2


def test_a_batch_of_100_answers_each_text_as_if_it_came_alone_in_input_order(pipeline: Pipeline) -> None:
    texts = [f"{(POSITIVE + NEGATIVE)[i % 4]} Review number {i}{'!' * (i % 3)}" for i in range(100)]
    response = classify(pipeline.orchestrator.url, {"texts": texts})
    assert response.status_code == 200, response.text
    batch = response.json()["predictions"]
    assert len(batch) == 100
    for text, prediction in zip(texts, batch, strict=True):
        alone = classify(pipeline.orchestrator.url, {"text": text}).json()["predictions"][0]
        assert prediction["label"] == alone["label"], text
        assert prediction["score"] == pytest.approx(alone["score"], abs=1e-4), text


def test_over_long_texts_are_cut_and_reported(pipeline: Pipeline) -> None:
    response = classify(pipeline.orchestrator.url, {"texts": ["short and sweet", "word " * 600]})
    assert response.status_code == 200, response.text
    assert response.json()["truncated"] == [1]


async def test_64_concurrent_clients_get_the_answers_each_text_gets_alone(pipeline: Pipeline) -> None:
    texts = [f"{(POSITIVE + NEGATIVE)[i % 4]} Number {i}." for i in range(64)]
    url = f"{pipeline.orchestrator.url}/classify"
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        alone = [(await client.post(url, json={"text": t})).json()["predictions"][0] for t in texts]
        for _ in range(2):
            together = await asyncio.gather(*(client.post(url, json={"text": t}) for t in texts))
            for single, response in zip(alone, together, strict=True):
                assert response.status_code == 200, response.text
                prediction = response.json()["predictions"][0]
                assert prediction["label"] == single["label"]
                assert prediction["score"] == pytest.approx(single["score"], abs=1e-4)


def logged(log: Path, text: str, within_s: float = 5.0) -> bool:
    """Whether `text` reaches `log` in time: a request's log line is written after its answer is sent."""
    deadline = time.monotonic() + within_s
    while text not in log.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_request_id_goes_to_both_hops_and_the_logs(pipeline: Pipeline) -> None:
    request_id = "trace-3f9a1c-classify"
    response = classify(pipeline.orchestrator.url, {"text": POSITIVE[1]}, **{"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    assert logged(pipeline.orchestrator.log, request_id)
    assert logged(pipeline.embedding.log, request_id)
    generated = classify(pipeline.orchestrator.url, {"text": POSITIVE[1]}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    # Not ASCII: could not go on in HTTP headers or gRPC metadata, so the request gets a new id instead.
    response = httpx.post(
        f"{pipeline.orchestrator.url}/classify",
        json={"text": POSITIVE[1]},
        headers={"X-Request-ID": "café".encode("latin-1")},
    )
    assert response.status_code == 200, response.text
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


BAD_INPUTS = [
    ({}, "texts", "invalid_request_error"),
    ({"text": "a", "texts": ["b"]}, "texts", "invalid_request_error"),
    ({"texts": []}, "texts", "invalid_value"),
    ({"texts": ["fine", ""]}, "texts[1]", "invalid_value"),
    ({"texts": ["fine", 7]}, "texts[1]", "invalid_value"),
    ({"text": ["a list"]}, "text", "invalid_value"),
    ({"texts": "not a list"}, "texts", "invalid_value"),
    ({"texts": ["x"], "top_k": 3}, "top_k", "invalid_value"),
    ({"texts": ["x"] * 257}, "texts", "too_many_texts"),
    ({"texts": ["ok", "y" * 20_001]}, "texts[1]", "text_too_long"),
    ({"text": "y" * 20_001}, "text", "text_too_long"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD_INPUTS)
def test_bad_input_is_a_400_naming_the_field(pipeline: Pipeline, body: object, param: str, code: str) -> None:
    response = classify(pipeline.orchestrator.url, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert code in (error["code"], error["type"])
    assert classify(pipeline.orchestrator.url, {"text": POSITIVE[0]}).status_code == 200


@pytest.mark.parametrize(
    ("content", "headers", "status", "param"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "body"),
        (b'["a", "list"]', {"Content-Type": "application/json"}, 400, "body"),
        (b'{"text": "hi"}', {"Content-Type": "text/plain"}, 400, "body"),
        (b'{"text": "hi"}', {"Content-Type": "application/json", "X-Request-Timeout-Ms": "soon"}, 400, None),
        (b'{"text": "' + b"a" * (5 * 1024 * 1024) + b'"}', {"Content-Type": "application/json"}, 413, "body"),
    ],
)
def test_malformed_requests(
    pipeline: Pipeline, content: bytes, headers: dict[str, str], status: int, param: str | None
) -> None:
    response = httpx.post(f"{pipeline.orchestrator.url}/classify", content=content, headers=headers, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == (param or "X-Request-Timeout-Ms")


def sample(url: str, name: str, **labels: str) -> float:
    """The sum of the `name` samples at `url`/metrics whose labels include `labels` (0 when none is there yet)."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == name and all(s.labels.get(key) == value for key, value in labels.items())
    )


Sample = tuple[str, dict[str, str]]  # a sample's name and the labels it must have


def samples(url: str, *wanted: Sample) -> list[float]:
    return [sample(url, name, **labels) for name, labels in wanted]


STAGE_COUNT = "orchestrator_stage_duration_seconds_count"
EMBED_CALLS: Sample = (STAGE_COUNT, {"stage": "embed_call"})
HEAD_CALLS: Sample = (STAGE_COUNT, {"stage": "head_call"})
CLASSIFIED: Sample = ("orchestrator_classified_texts_total", {})
REQUESTS_PER_CALL_SUM: Sample = ("orchestrator_requests_per_call_sum", {})
REQUESTS_PER_CALL_COUNT: Sample = ("orchestrator_requests_per_call_count", {})


def test_metrics_have_per_hop_latency(pipeline: Pipeline) -> None:
    # The session's orchestrator has served the tests before this one: only deltas say anything. Its
    # readiness checks observe no stage (they make no POST to the embedding service and no Predict call).
    url = pipeline.orchestrator.url
    wanted = (EMBED_CALLS, HEAD_CALLS, CLASSIFIED, REQUESTS_PER_CALL_SUM, REQUESTS_PER_CALL_COUNT)
    before = samples(url, *wanted)
    assert classify(url, {"texts": POSITIVE}).status_code == 200
    after = samples(url, *wanted)
    # One request alone: one call to each hop, for its two texts.
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, len(POSITIVE), 1, 1]


def test_concurrent_requests_are_merged_into_fewer_hop_calls(
    embedding_server: Server, head_server: HeadServer, tmp_path: Path
) -> None:
    """With one call slot, a burst must share calls: the first request takes the slot alone and every
    request that arrives while its call is under way waits and leaves with the others in one call."""
    n = 48
    with running_orchestrator(
        embedding_server.url, head_server, tmp_path / "orchestrator-one-slot.log", max_in_flight_batches="1"
    ) as orchestrator:
        wanted = (REQUESTS_PER_CALL_SUM, REQUESTS_PER_CALL_COUNT, EMBED_CALLS, HEAD_CALLS, CLASSIFIED)
        before = samples(orchestrator.url, *wanted)
        embedded_before = embedding_server.metric("embedding_texts_total")
        barrier = threading.Barrier(n)

        def one(i: int) -> httpx.Response:
            with httpx.Client(base_url=orchestrator.url, timeout=60) as client:
                client.get("/healthz").raise_for_status()  # connected before the burst: all leave at once
                barrier.wait(timeout=60)
                return client.post("/classify", json={"text": f"{(POSITIVE + NEGATIVE)[i % 4]} Number {i}."})

        with ThreadPoolExecutor(n) as pool:
            responses = list(pool.map(one, range(n)))
        for response in responses:
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == 1
        requests, calls, embed_calls, head_calls, classified = (
            a - b for a, b in zip(samples(orchestrator.url, *wanted), before, strict=True)
        )
        embedded = embedding_server.metric("embedding_texts_total") - embedded_before
    assert requests == n  # every request went in exactly one call
    assert calls < n, "no two requests shared an embedding call"
    assert embed_calls == head_calls == calls  # one call to each hop per merged batch
    assert classified == embedded == n  # every text embedded and classified once


def test_readyz_and_healthz(pipeline: Pipeline) -> None:
    assert httpx.get(f"{pipeline.orchestrator.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{pipeline.orchestrator.url}/readyz").json() == {"status": "ready"}


def test_rest_to_the_head_answers_as_grpc_does(pipeline: Pipeline, tmp_path) -> None:  # type: ignore[no-untyped-def]
    texts = POSITIVE + NEGATIVE
    over_grpc = classify(pipeline.orchestrator.url, {"texts": texts}).json()
    with running_orchestrator(
        pipeline.embedding.url, pipeline.head, tmp_path / "orchestrator-rest.log", head_protocol="rest"
    ) as rest:
        over_rest = classify(rest.url, {"texts": texts}).json()
    assert over_rest["model"] == over_grpc["model"]
    for a, b in zip(over_rest["predictions"], over_grpc["predictions"], strict=True):
        assert a["label"] == b["label"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)


def test_the_terminal_client(pipeline: Pipeline) -> None:
    command = [sys.executable, "-m", "orchestrator.cli", "--url", pipeline.orchestrator.url]
    out = subprocess.run([*command, POSITIVE[0]], capture_output=True, text=True, check=True).stdout
    assert out.startswith("positive ") and POSITIVE[0] in out
    lines = subprocess.run(
        command, input="\n".join(NEGATIVE) + "\n", capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["negative", "negative"]
    failed = subprocess.run([*command, "x" * 20_001], capture_output=True, text=True)
    assert failed.returncode == 1 and "texts[0]" in failed.stderr


PRAISE = [
    "The opening scenes are gorgeous and the cast is charming.",
    "I loved the music in the first act, it was wonderful.",
    "What a delightful, warm and funny beginning.",
]
COMPLAINTS = [
    "Then it falls apart: the plot is boring and the dialogue is awful.",
    "I regret paying for this, it was a terrible waste of an evening.",
    "The ending is dreadful, lazy and insulting, the worst I have seen.",
]


def test_chunk_classifies_a_long_review_on_all_of_its_text(pipeline: Pipeline) -> None:
    """Praise for its first 256 tokens and complaints for the rest: cut, it reads as praise; whole, it is
    the complaint it mostly is."""
    review = " ".join(PRAISE * 9 + COMPLAINTS * 30)
    cut = classify(pipeline.orchestrator.url, {"text": review}).json()
    assert cut["truncated"] == [0] and cut["chunked"] == []
    assert cut["predictions"][0]["label"] == "positive"
    whole = classify(pipeline.orchestrator.url, {"text": review, "chunk": True}).json()
    assert whole["truncated"] == [] and whole["chunked"][0]["index"] == 0 and whole["chunked"][0]["windows"] > 4
    assert whole["predictions"][0]["label"] == "negative"
