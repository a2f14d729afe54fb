"""Stops work for a client that has gone: uvicorn does not cancel a handler when its client disconnects."""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from service_common.errors import ServiceError

T = TypeVar("T")


class ClientClosedError(ServiceError):
    status_code = 499
    error_type = "client_closed"


async def unless_disconnected(request: Request, awaitable: Awaitable[T]) -> T:
    """Awaits `awaitable`, cancelling it (so queued work is dropped) if the client disconnects first."""
    work = asyncio.ensure_future(awaitable)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        work.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientClosedError("the client closed the connection", code="client_closed") from None
        raise
    finally:
        watcher.cancel()
