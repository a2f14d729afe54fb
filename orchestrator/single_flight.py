"""SingleFlight: one task per key, shared by concurrent callers, each waiting at most until its own deadline.

The task runs on its own budget (the caller gives it one), so a caller with a short deadline cannot fail it
for the others; a caller whose deadline passes gets the error `timed_out` makes. A failed task is tried
again by the next caller."""

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from service_common.deadline import Deadline
from service_common.errors import ServiceError

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[T]] = {}

    async def run(
        self, key: K, start: Callable[[], Awaitable[T]], deadline: Deadline, timed_out: Callable[[], ServiceError]
    ) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(start())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        try:
            async with asyncio.timeout(deadline.remaining_s()):
                return await asyncio.shield(task)
        except TimeoutError:
            raise timed_out() from None

    def _finished(self, key: K, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # marks a failure as seen: the callers (if any are left) got it
