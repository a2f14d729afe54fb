"""ASGI middleware every service runs: request id, access log and latency metric, body size limit."""

import json
import logging
import time
import uuid

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service_common import tracing
from service_common.errors import PayloadTooLargeError, ServiceError
from service_common.logs import request_id_var
from service_common.metrics import REQUEST_SECONDS
from service_common.ops import OPS_PATHS

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_TRACE_HEADERS = (tracing.TRACEPARENT, "tracestate")
_MAX_REQUEST_ID = 128


class RequestContextMiddleware:
    """Takes X-Request-ID (or makes one), echoes it, logs one line per request and observes its latency.
    Continues the caller's W3C trace (`traceparent`), in a server span when tracing is on, and answers
    with `traceresponse`.

    Bodies over `max_body_bytes` are refused with 413 before the app reads them: at once when
    Content-Length says so, else while the chunked body streams in (it is buffered, bounded)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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
        request_id = given if given.isascii() and given.isprintable() and given else uuid.uuid4().hex
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
            replay = await self._bounded_body(headers, receive)
            if replay is None:
                await self.app(scope, receive, send_with_id)
            elif isinstance(replay, PayloadTooLargeError):
                await send_error(send_with_id, replay, close=True)
            else:
                await self.app(scope, replay, send_with_id)
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
            # Probed every few seconds by orchestrators and kubelets: their successes are logged at debug only.
            quiet = scope["path"] in OPS_PATHS and status < 400
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

    async def _bounded_body(
        self, headers: dict[bytes, bytes], receive: Receive
    ) -> Receive | PayloadTooLargeError | None:
        """None: pass through (Content-Length within the limit); an error: refuse; else a replaying receive."""
        too_large = PayloadTooLargeError(
            f"request body exceeds {self.max_body_bytes} bytes", param="body", code="body_too_large"
        )
        length = headers.get(b"content-length")
        if length is not None:
            return too_large if not length.isdigit() or int(length) > self.max_body_bytes else None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return too_large
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


async def send_error(
    send: Send, error: ServiceError, headers: list[tuple[bytes, bytes]] | None = None, *, close: bool = False
) -> None:
    """Answers with `error` straight from ASGI, before any app runs; `close` ends the connection (when the
    body left unread could be too large to skip)."""
    body = json.dumps(error.body()).encode()
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
