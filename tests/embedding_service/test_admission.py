"""The door: with one FIFO queue (lanes off), a full queue refuses an embedding request before its body is
read; other paths, and every path while there is room, go through."""

import httpx
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from embedding_service.admission import AdmissionMiddleware


async def answer_ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def refused_at_the_door() -> float:
    return REGISTRY.get_sample_value("embedding_rejected_requests_total", {"reason": "queue_full"}) or 0.0


async def test_a_full_queue_refuses_before_the_body_is_read() -> None:
    room = [False]
    door = AdmissionMiddleware(answer_ok, has_room=lambda: room[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=door), base_url="http://door") as client:
        before = refused_at_the_door()
        refused = await client.post("/v1/embeddings", content=b"{}", headers={"X-Request-ID": "req-1"})
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "overloaded_error"
        assert refused.headers["retry-after"] == "1" and refused.headers["x-request-id"] == "req-1"
        assert refused_at_the_door() == before + 1
        assert (await client.get("/healthz")).status_code == 200
        room[0] = True
        assert (await client.post("/embed", content=b"{}")).status_code == 200
