"""The door: while the service drains, an embedding request is a 503 `shutting_down`; with one FIFO queue
(lanes off), a full queue is a 429; both before the body is read, and only for a caller with a valid key.
Other paths, and every path while there is room, go through."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from embedding_service.admission import AdmissionMiddleware
from embedding_service.app import create_app
from embedding_service.settings import EmbeddingSettings
from tests.asgi import call

KEY = "key-of-a-caller-0123"
LANE_KEY = "lane-key-of-the-orchestrator-4567"
ORIGIN = "https://app.example.com"
BODY = (b'{"input": ', b'"hello"}')  # sent chunked: nothing says how long it is


async def answer_ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def refused_at_the_door(reason: str) -> float:
    return REGISTRY.get_sample_value("embedding_rejected_requests_total", {"reason": reason}) or 0.0


async def test_a_full_queue_is_a_429_and_draining_a_503_before_the_body_is_read() -> None:
    room, closing = [False], [False]
    door = AdmissionMiddleware(answer_ok, has_room=lambda: room[0], closing=lambda: closing[0])
    before = refused_at_the_door("queue_full")
    full = await call(door, "POST", "/v1/embeddings", chunks=BODY)
    assert (full.status, full.json()["error"]["type"], full.headers["retry-after"]) == (429, "overloaded_error", "1")
    assert full.reads == 0 and refused_at_the_door("queue_full") == before + 1
    closing[0] = True  # draining: 503 even where a 429 would be, so a client retries elsewhere, not here
    before = refused_at_the_door("shutting_down")
    stopping = await call(door, "POST", "/embed", chunks=BODY)
    assert (stopping.status, stopping.json()["error"]["code"]) == (503, "shutting_down")
    assert stopping.headers["connection"] == "close" and stopping.reads == 0
    assert refused_at_the_door("shutting_down") == before + 1
    assert (await call(door, "GET", "/healthz")).status == 200
    room[0], closing[0] = True, False
    assert (await call(door, "POST", "/embed", chunks=BODY)).status == 200


@pytest.fixture
def draining(encoder_dir: Path) -> FastAPI:
    """The real app with auth, a lane key and CORS, its batcher draining (no model loaded: nothing gets past
    the door)."""
    settings = EmbeddingSettings(
        model_dir=encoder_dir, api_keys=KEY, lane_keys=f"orchestrator:{LANE_KEY}", cors_origins=ORIGIN
    )
    app = create_app(settings)
    app.state.model.batcher = SimpleNamespace(closing=True)
    return app


async def test_while_draining_a_caller_gets_its_401_first_then_a_503_with_cors_and_its_request_id(
    draining: FastAPI,
) -> None:
    headers = {"Origin": ORIGIN, "X-Request-ID": "req-7", "Content-Type": "application/json"}
    for given, code in (({}, "missing_api_key"), ({"Authorization": "Bearer wrong"}, "invalid_api_key")):
        refused = await call(draining, "POST", "/v1/embeddings", {**headers, **given}, BODY)
        assert (refused.status, refused.json()["error"]["code"]) == (401, code)
        assert refused.headers["access-control-allow-origin"] == ORIGIN and refused.reads == 0
    for key in (KEY, LANE_KEY):
        stopping = await call(draining, "POST", "/v1/embeddings", {**headers, "Authorization": f"Bearer {key}"}, BODY)
        assert (stopping.status, stopping.json()["error"]["code"]) == (503, "shutting_down")
        assert stopping.headers["access-control-allow-origin"] == ORIGIN
        assert stopping.headers["x-request-id"] == "req-7" and stopping.headers["retry-after"] == "1"
        assert stopping.reads == 0


async def test_without_api_keys_an_anonymous_caller_gets_the_503_too(encoder_dir: Path) -> None:
    app = create_app(EmbeddingSettings(model_dir=encoder_dir, lane_keys=f"orchestrator:{LANE_KEY}"))
    app.state.model.batcher = SimpleNamespace(closing=True)
    for given in ({}, {"Authorization": "Bearer sk-anything"}):
        stopping = await call(app, "POST", "/embed", given, BODY)
        assert (stopping.status, stopping.json()["error"]["code"], stopping.reads) == (503, "shutting_down", 0)
