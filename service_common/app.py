"""The parts of every service's FastAPI app that are the same: settings on the state, middleware, the
error handlers, the ops routes, the shutdown signal; and ending a lifespan's background task."""

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.middleware import Middleware

from service_common.auth import auth_middleware, cors_middleware
from service_common.body_limit import BodyLimitMiddleware
from service_common.direct import DirectRoute, DirectRoutes, document
from service_common.errors import install_error_handlers
from service_common.middleware import RequestContextMiddleware
from service_common.ops import add_ops_routes
from service_common.settings import ServiceSettings


def service_app(
    title: str,
    settings: ServiceSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    not_ready_reason: Callable[[], str | None],
    router: APIRouter,
    *,
    admission: Middleware | None = None,
    expose_headers: Sequence[str] = (),
    direct: Sequence[DirectRoute] = (),
) -> FastAPI:
    """`admission`: a service's own refusal at the door (the embedding service's full queue or draining);
    `expose_headers`: its own answer headers a browser page may read when CORS is on; `direct`: its hot
    routes, served without FastAPI's per-request machinery (service_common/direct.py)."""
    # FastAPI's own OpenTelemetry spans (a server span and one per dependency, serializer...) would double
    # ours and cost the hot path: service_common.tracing makes the spans, and only those.
    off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan, telemetry={**off, "auto_configure": False})
    app.state.settings = settings
    app.state.stopping = asyncio.Event()
    for layer in reversed(middleware(settings, admission, expose_headers, direct)):
        app.add_middleware(layer.cls, *layer.args, **layer.kwargs)
    install_error_handlers(app)
    add_ops_routes(app, not_ready_reason)
    app.include_router(router)
    if direct:
        document(app, direct)
    return app


def middleware(
    settings: ServiceSettings,
    admission: Middleware | None = None,
    expose_headers: Sequence[str] = (),
    direct: Sequence[DirectRoute] = (),
) -> list[Middleware]:
    """Every service's middleware, outermost first: the one place their order is decided."""
    layers = [
        # CORS: every answer below (401, 413, 429, 503, even a 500) carries its headers, so a page can read
        # it; preflights are answered here, without a key.
        cors_middleware(settings, expose_headers),
        # Request id, log line, trace and latency: every request gets them, refusals included.
        Middleware(RequestContextMiddleware),
        # Who calls, before anything is read or queued: a stranger learns nothing of the load.
        auth_middleware(settings),
        # The cheap refusal (full, or draining), for a caller let in, before its body is read.
        admission,
        # The body, bounded in size and time, read only for a caller let in.
        Middleware(
            BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, read_timeout_s=settings.body_read_timeout_s
        ),
        # The hot routes, straight from ASGI, with everything above; FastAPI takes every other request.
        Middleware(DirectRoutes, routes=direct) if direct else None,
    ]
    return [layer for layer in layers if layer is not None]


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancels a lifespan's background task and waits until it has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# Kept back from the grace period: the time to answer 503 to what draining had to cut off.
_ANSWER_MARGIN_S = 1.0


def stopping_event(app: FastAPI) -> asyncio.Event:
    """Set by `serve` when the server stops accepting, before in-flight requests get their grace period."""
    event: asyncio.Event = app.state.stopping
    return event


def drain_budget_s(settings: ServiceSettings) -> float:
    """How long in-flight work may run after the stop began, so that what is still unfinished then is
    answered 503 before the server's grace period ends and it drops the connections."""
    return max(0.0, int(settings.graceful_shutdown_s) - _ANSWER_MARGIN_S)
