"""Overload, deadlines and disconnects: refused fast, and abandoned texts cost no compute."""

import asyncio
import socket
import time

import httpx
import pytest

from tests.servers import Server

pytestmark = pytest.mark.slow

LONG = "The delivery was late and the package was damaged but support replied quickly. " * 20


async def test_a_full_queue_answers_429_with_retry_after_at_once(constrained_server: Server) -> None:
    url = f"{constrained_server.url}/v1/embeddings"
    async with httpx.AsyncClient(timeout=60) as client:
        holding_the_queue = asyncio.create_task(client.post(url, json={"input": [LONG] * 200}))
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        refused = await client.post(url, json={"input": ["short"] * 100})
        refused_after = time.perf_counter() - started
        await holding_the_queue
        after = await client.post(url, json={"input": "after the storm"})
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "overloaded_error"
    assert refused_after < 1.0  # the held queue takes several seconds: a queued request would wait that long
    assert after.status_code == 200


def test_a_request_past_its_deadline_gets_504_and_its_remaining_texts_are_dropped(
    constrained_server: Server,
) -> None:
    url = f"{constrained_server.url}/v1/embeddings"
    computed_before = constrained_server.metric("embedding_batch_texts_sum")
    started = time.perf_counter()
    response = httpx.post(url, json={"input": [LONG] * 200}, timeout=60)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["type"] == "timeout_error"
    assert time.perf_counter() - started < 4
    time.sleep(1)
    assert constrained_server.metric("embedding_queue_texts") == 0
    assert constrained_server.metric("embedding_batch_texts_sum") - computed_before < 200


def test_a_client_that_disconnects_has_its_texts_dropped(constrained_server: Server) -> None:
    computed_before = constrained_server.metric("embedding_batch_texts_sum")
    body = httpx.Request("POST", f"{constrained_server.url}/v1/embeddings", json={"input": [LONG] * 200}).read()
    host, port = constrained_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)
    time.sleep(0.7)  # well before the 2 s deadline would drop them
    assert constrained_server.metric("embedding_queue_texts") == 0
    assert constrained_server.metric("embedding_batch_texts_sum") - computed_before < 100
