"""Refusal at the door, before the body is read: while the service drains, an embedding request is answered
503 `shutting_down`; with one FIFO queue (lanes off), while the queue has no room at all, 429.

It runs inside auth and the request context (service_common.app.middleware): a caller without a valid key
gets its 401 first, and a refusal is logged, carries the request id and, when CORS is on, its headers. Such
refusals are counted in `embedding_rejected_requests_total`."""

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from embedding_service.metrics import REJECTED_REQUESTS_TOTAL
from service_common.errors import OverloadedError, UnavailableError
from service_common.middleware import send_error

# The routes that queue texts for the encoder.
QUEUEING_PATHS = frozenset({"/v1/embeddings", "/embed"})


class AdmissionMiddleware:
    """`closing()`: whether the service is draining; `has_room()`: whether a request whose lane is not known
    yet could be admitted now."""

    def __init__(self, app: ASGIApp, has_room: Callable[[], bool], closing: Callable[[], bool]) -> None:
        self.app = app
        self.has_room = has_room
        self.closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in QUEUEING_PATHS:
            if self.closing():
                REJECTED_REQUESTS_TOTAL.labels("shutting_down").inc()
                # The connection ends with the answer: the server is going away.
                stopping = UnavailableError("the service is shutting down", code="shutting_down")
                await send_error(send, stopping, close=True)
                return
            if not self.has_room():
                REJECTED_REQUESTS_TOTAL.labels("queue_full").inc()
                await send_error(send, OverloadedError("the encoder queue is full; retry shortly"))
                return
        await self.app(scope, receive, send)
