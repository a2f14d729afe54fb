"""The parts of every service's FastAPI app that are the same: settings on the state, middleware, the
error handlers, the ops routes, the shutdown signal; and ending a lifespan's background task."""

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig

from service_common.auth import add_access_control
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
) -> FastAPI:
    # FastAPI's own OpenTelemetry spans (a server span and one per dependency, serializer...) would double
    # ours and cost the hot path: service_common.tracing makes the spans, and only those.
    off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan, telemetry={**off, "auto_configure": False})
    app.state.settings = settings
    app.state.stopping = asyncio.Event()
    add_access_control(app, settings)  # inside the request context: refusals get an id and a log line
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    add_ops_routes(app, not_ready_reason)
    app.include_router(router)
    return app


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
