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
    """Awaits `awaitable` in this task, cancelling it (so queued work is dropped) if the client disconnects
    first: a watcher task waits for the disconnect, and no second task runs the work."""
    task = asyncio.current_task()
    assert task is not None, "called outside a task"
    left = False

    async def watch() -> None:
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await awaitable
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # cancelled by the watcher alone: the client went
            raise ClientClosedError("the client closed the connection", code="client_closed") from None
        raise
    finally:
        watcher.cancel()
