"""Runs an app under uvicorn with our logging (uvicorn's own log config off) and graceful shutdown."""

import uvicorn
from fastapi import FastAPI

from service_common.settings import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Blocks until SIGINT/SIGTERM; then stops accepting, lets in-flight requests finish for up to
    `graceful_shutdown_s`, and runs the app's lifespan shutdown."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        server_header=False,
    )
    uvicorn.Server(config).run()
