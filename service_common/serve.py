"""Runs an app under uvicorn with our logging (uvicorn's own log config off) and graceful shutdown."""

import asyncio
import socket

import uvicorn
from fastapi import FastAPI

from service_common.app import stopping_event
from service_common.settings import ServiceSettings


class _Server(uvicorn.Server):
    """uvicorn that tells the app the moment it stops accepting: before in-flight requests get their grace
    period, so the app can bound its own draining (a hung call answered 503) within it."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stopping.set()
        await super().shutdown(sockets)


def serve(app: FastAPI, settings: ServiceSettings, *, max_concurrency: int | None = None) -> None:
    """Blocks until SIGINT/SIGTERM; then stops accepting, lets in-flight requests finish for up to
    `graceful_shutdown_s`, and runs the app's lifespan shutdown. Past `max_concurrency` connections or
    requests at once, uvicorn itself answers 503 before the app sees them."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        server_header=False,
        limit_concurrency=max_concurrency,
    )
    _Server(config, stopping_event(app)).run()
