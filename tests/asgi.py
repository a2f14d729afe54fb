"""One HTTP request straight into an ASGI app, with a client whose every receive() is counted: a test can
prove a body was never read, and play a client that stalls or leaves halfway through its body."""

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

CALL_TIMEOUT_S = 10.0


@dataclass
class Answer:
    status: int | None = None  # None: nothing was answered
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reads: int = 0  # the app's receive() calls: 0 means not a byte of the body was read

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    chunks: Sequence[bytes] = (b"",),
    *,
    then: str = "wait",
) -> Answer:
    """Sends the body as `chunks` (no Content-Length unless `headers` has one: as chunked). After the last
    chunk, `then` is "wait" (the body is complete, and the client waits for its answer), "stall" (the body
    is incomplete and no more of it comes) or "leave" (the client disconnects before its body is complete)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    answer = Answer()
    pending = list(chunks)

    async def receive() -> Message:
        answer.reads += 1
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending) or then != "wait"}
        if then == "leave":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # a client still connected, sending nothing more
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {name.decode(): value.decode() for name, value in message["headers"]}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    async with asyncio.timeout(CALL_TIMEOUT_S):  # an app waiting for ever on a stalled client fails the test
        await app(scope, receive, send)
    return answer
