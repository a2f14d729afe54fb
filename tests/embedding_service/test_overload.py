"""Overload, deadlines, disconnects and batching, with the encoder held by a test gate: refused fast,
abandoned texts cost no compute, concurrent texts share batches; true on hardware of any speed."""

import asyncio
import socket
import time

import httpx
import numpy as np
import pytest

from tests.conftest import GatedServer

pytestmark = pytest.mark.slow

BATCH = 8  # the constrained server's max_batch_size: what the held encoder has taken


def texts(n: int, tag: str) -> list[str]:
    return [f"{tag} review {i}: the delivery was late but support replied quickly." for i in range(n)]


async def test_a_full_queue_answers_429_with_retry_after_at_once(constrained_server: GatedServer) -> None:
    url = f"{constrained_server.url}/v1/embeddings"
    async with httpx.AsyncClient(timeout=60) as client:
        with constrained_server.hold():
            holding_the_queue = asyncio.create_task(client.post(url, json={"input": texts(200, "held")}))
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_admitted_texts", 200)
            started = time.perf_counter()
            refused = await client.post(url, json={"input": texts(100, "refused")})
            refused_after = time.perf_counter() - started
        held = await holding_the_queue
        after = await client.post(url, json={"input": "after the storm"})
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1  # the lane's own backlog at the encoder's rate
    assert refused.json()["error"]["type"] == "overloaded_error"
    assert refused_after < 1.0  # a queued request would wait as long as the gate is held
    assert held.status_code == 200 and len(held.json()["data"]) == 200
    assert after.status_code == 200


def test_a_request_past_its_deadline_gets_504_and_its_remaining_texts_are_dropped(
    constrained_server: GatedServer,
) -> None:
    url = f"{constrained_server.url}/v1/embeddings"
    computed_before = constrained_server.metric("embedding_batch_texts_sum")
    with constrained_server.hold():
        started = time.perf_counter()
        response = httpx.post(url, json={"input": texts(200, "late")}, timeout=60)
        elapsed = time.perf_counter() - started
        assert response.status_code == 504, response.text
        assert response.json()["error"]["type"] == "timeout_error"
        assert 1.8 < elapsed < 4  # the server's 2 s request timeout
        assert constrained_server.metric("embedding_queue_texts") == 0
        assert constrained_server.metric("embedding_admitted_texts") == BATCH  # the running batch holds its room
    constrained_server.wait_for_metric("embedding_batch_texts_sum", computed_before + BATCH)
    constrained_server.wait_for_metric("embedding_admitted_texts", 0)


def test_a_client_that_disconnects_has_its_texts_dropped(constrained_server: GatedServer) -> None:
    computed_before = constrained_server.metric("embedding_batch_texts_sum")
    body = httpx.Request("POST", f"{constrained_server.url}/v1/embeddings", json={"input": texts(200, "gone")}).read()
    host, port = constrained_server.url.removeprefix("http://").split(":")
    with constrained_server.hold():
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            constrained_server.wait_for_metric("embedding_admitted_texts", 200)
        dropped_at = time.perf_counter()
        constrained_server.wait_for_metric("embedding_admitted_texts", BATCH)  # the running batch holds its room
        assert constrained_server.metric("embedding_queue_texts") == 0
        assert time.perf_counter() - dropped_at < 1.5  # dropped on the disconnect, not at the 2 s deadline
    constrained_server.wait_for_metric("embedding_batch_texts_sum", computed_before + BATCH)
    constrained_server.wait_for_metric("embedding_admitted_texts", 0)


async def test_concurrent_requests_each_get_their_own_vector_in_shared_batches(
    constrained_server: GatedServer,
) -> None:
    many = texts(64, "concurrent")
    # Max pooling reads token vectors, which the cache does not keep: the second time, they are computed too.
    url = f"{constrained_server.url}/embed"

    def body(text: str) -> dict[str, object]:
        return {"inputs": [text], "pooling": "max"}

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        alone = [np.asarray((await client.post(url, json=body(t))).json()["embeddings"][0]) for t in many]
        batches_before = constrained_server.metric("embedding_batch_texts_count")
        texts_before = constrained_server.metric("embedding_batch_texts_sum")
        with constrained_server.hold():
            sent = [asyncio.create_task(client.post(url, json=body(t))) for t in many]
            # Every text is queued or in the held batch: the rest can only go together.
            await asyncio.to_thread(
                constrained_server.wait_for_metric, "embedding_queue_texts", len(many) - BATCH, at_least=True
            )
        responses = await asyncio.gather(*sent)
    together = [np.asarray(r.json()["embeddings"][0]) for r in responses]
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"text {i}")
    assert constrained_server.metric("embedding_batch_texts_sum") - texts_before == 64
    batches = constrained_server.metric("embedding_batch_texts_count") - batches_before
    assert batches <= 1 + 64 / BATCH, f"64 concurrent texts ran in {batches} encoder calls"


def test_the_callers_deadline_header_is_honoured(constrained_server: GatedServer) -> None:
    url = f"{constrained_server.url}/v1/embeddings"
    body = {"input": texts(4, "deadline")}
    with constrained_server.hold():
        started = time.perf_counter()
        response = httpx.post(url, json=body, headers={"X-Request-Timeout-Ms": "200"}, timeout=60)
        assert time.perf_counter() - started < 1.5  # the caller's 200 ms, not the server's 2 s
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "timeout"
    assert httpx.post(url, json=body, headers={"X-Request-Timeout-Ms": "60000"}, timeout=60).status_code == 200
    malformed = httpx.post(url, json={"input": "hi"}, headers={"X-Request-Timeout-Ms": "-1"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["param"] == "X-Request-Timeout-Ms"


def tokenized(server: GatedServer) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in httpx.get(f"{server.url}/metrics").text.splitlines()
        if line.startswith('embedding_stage_duration_seconds_count{stage="tokenize"}')
    )


async def test_a_refused_request_is_never_tokenized(constrained_server: GatedServer) -> None:
    url = f"{constrained_server.url}/v1/embeddings"
    async with httpx.AsyncClient(timeout=60) as client:
        with constrained_server.hold():
            # 250 of the 256 texts of room taken: a request of 10 of the same lane finds no room for all.
            holding = asyncio.create_task(client.post(url, json={"input": texts(250, "first")}))
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_admitted_texts", 250)
            before = tokenized(constrained_server)
            too_many = await client.post(url, json={"input": texts(10, "ten")})
            fill = asyncio.create_task(client.post(url, json={"input": texts(6, "last")}))
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_admitted_texts", 256)
            refusals_before = constrained_server.metric("embedding_lane_refusals_total")
            refused = [await client.post(url, json={"input": f"refused {i}"}) for i in range(20)]
            assert tokenized(constrained_server) == before + 1  # the six that fit, and nothing else
        answered = [await holding, await fill]
    assert too_many.status_code == 429 and too_many.json()["error"]["type"] == "overloaded_error"
    assert all(r.status_code == 429 and int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"]["code"] == "overloaded" for r in refused)
    assert constrained_server.metric("embedding_lane_refusals_total") == refusals_before + 20
    # Admitted, they are answered: embedded, or 504 had holding the encoder outlasted the 2 s deadline.
    assert all(r.status_code in (200, 504) for r in answered)
