"""ASGI middleware every service runs: request id, access log, trace and latency metric; and answering an
error straight from ASGI."""

import json
import logging
import os
import time

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service_common import tracing
from service_common.errors import ServiceError
from service_common.logs import request_id_var
from service_common.metrics import REQUEST_SECONDS
from service_common.ops import OPS_PATHS

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
CLIENT_CLOSED = 499  # nginx's status for a request whose client closed the connection
_TRACE_HEADERS = (tracing.TRACEPARENT, "tracestate")
_MAX_REQUEST_ID = 128


class RequestContextMiddleware:
    """Takes X-Request-ID (or makes one), echoes it, logs one line per request and observes its latency.
    Continues the caller's W3C trace (`traceparent`), in a server span when tracing is on, and answers
    with `traceresponse`. It reads nothing of the body: the middleware inside it (auth first) decide
    whether the body is read at all. A request whose client left before anything answered it is logged
    with status 499."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        caller = {name: headers[name.encode()].decode("latin-1") for name in _TRACE_HEADERS if name.encode() in headers}
        if not caller and not tracing.enabled():  # nothing to continue, nothing to record: no cost
            await self._handle(scope, receive, send, headers)
            return
        with tracing.continued(tracing.extract(caller)):
            if scope["path"] in OPS_PATHS:
                await self._handle(scope, receive, send, headers)
                return
            with tracing.span(f"{scope['method']} {scope['path']}", kind=SpanKind.SERVER) as server:
                await self._handle(scope, receive, send, headers)
                if server is not None:
                    route = getattr(scope.get("route"), "path", None)
                    if route:
                        server.update_name(f"{scope['method']} {route}")

    async def _handle(self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]) -> None:
        given = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")[:_MAX_REQUEST_ID]
        # Printable ASCII only: the id goes on into HTTP headers and gRPC metadata, which take nothing else.
        request_id = given if given.isascii() and given.isprintable() and given else os.urandom(16).hex()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
                if answered_by := tracing.traceresponse():
                    message["headers"].append((tracing.TRACERESPONSE.encode(), answered_by.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
            if not responded:
                status = CLIENT_CLOSED  # nothing to answer: the client left before its request was in
        except Exception:
            # Here rather than in an exception handler: Starlette sends those from outside every user
            # middleware, so the 500 would lose its request id.
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not responded:
                await send_error(send_with_id, ServiceError("internal error", code="internal"), close=True)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(elapsed)
            # Probed every few seconds by orchestrators, kubelets and `make run`: their successes, and /readyz's
            # 503 while a service warms up (it says why in its own lines), are logged at debug only; so is a
            # model card read (each orchestrator reads the embedding service's every second for its encoder).
            probed = scope["path"] in OPS_PATHS or (scope["path"] == "/v1/models" and scope["method"] == "GET")
            quiet = probed and (status < 400 or status == 503)
            logger.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1e3,
                extra={"status": status, "duration_ms": round(elapsed * 1e3, 2)},
            )
            request_id_var.reset(token)


async def send_error(
    send: Send, error: ServiceError, headers: list[tuple[bytes, bytes]] | None = None, *, close: bool = False
) -> None:
    """Answers with `error` straight from ASGI, before any app runs; `close` ends the connection (when the
    body left unread could be too large to skip)."""
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    start = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
        *(headers or []),
    ]
    if close:
        start.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status_code, "headers": start})
    await send({"type": "http.response.body", "body": body})
