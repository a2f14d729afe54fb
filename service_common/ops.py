"""Liveness, readiness and metrics routes, added to each service's app by its factory."""

from collections.abc import Callable

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service_common.errors import UnavailableError

OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def add_ops_routes(app: FastAPI, not_ready_reason: Callable[[], str | None]) -> None:
    """`not_ready_reason` returns None when the service can take traffic, else why it cannot."""

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> dict[str, str]:
        reason = not_ready_reason()
        if reason is not None:
            raise UnavailableError(f"not ready: {reason}", code="not_ready")
        return {"status": "ready"}

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
