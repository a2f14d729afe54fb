"""Refusal before any work: while the encoder queue has no room at all, an embedding request is answered
429 before its body is read, parsed or authenticated, the cheapest answer the server can give.

It runs outside the other middleware, so such a refusal is counted (`embedding_rejected_requests_total`)
but not logged; it echoes the caller's X-Request-ID."""

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from embedding_service.metrics import REJECTED_REQUESTS_TOTAL
from service_common.errors import OverloadedError
from service_common.middleware import REQUEST_ID_HEADER, send_error

# The routes that queue texts for the encoder.
QUEUEING_PATHS = frozenset({"/v1/embeddings", "/embed"})


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, has_room: Callable[[], bool]) -> None:
        self.app = app
        self.has_room = has_room

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in QUEUEING_PATHS and not self.has_room():
            REJECTED_REQUESTS_TOTAL.labels("queue_full").inc()
            error = OverloadedError("the encoder queue is full; retry shortly")
            echoed = [value for name, value in scope["headers"] if name == REQUEST_ID_HEADER.encode()][:1]
            await send_error(send, error, [(REQUEST_ID_HEADER.encode(), value) for value in echoed])
            return
        await self.app(scope, receive, send)
