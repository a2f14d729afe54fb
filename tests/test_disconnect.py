"""unless_disconnected: the work's answer while the client stays, the work cancelled and a 499 when it leaves,
and any other cancellation left as it is."""

import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message

from service_common.disconnect import ClientClosedError, unless_disconnected


def client(leaves: asyncio.Event) -> Request:
    async def receive() -> Message:
        await leaves.wait()
        return {"type": "http.disconnect"}

    return Request({"type": "http", "headers": []}, receive)


async def test_the_work_answers_while_the_client_stays() -> None:
    async def work() -> int:
        await asyncio.sleep(0.01)
        return 7

    assert await unless_disconnected(client(asyncio.Event()), work()) == 7


async def test_a_client_that_leaves_cancels_the_work_and_gets_499() -> None:
    leaves, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> int:
        leaves.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 7

    with pytest.raises(ClientClosedError) as caught:
        await unless_disconnected(client(leaves), work())
    assert caught.value.status_code == 499 and cancelled.is_set()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # nothing left pending


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def handler() -> int:
        return await unless_disconnected(client(asyncio.Event()), asyncio.sleep(10, 7))

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
