"""Bounded retries with full-jitter exponential backoff, for calls that never reached their server."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from orchestrator.metrics import HOP_RETRIES_TOTAL
from service_common.deadline import Deadline

T = TypeVar("T")


async def retry_unreached(
    call: Callable[[], Awaitable[T]],
    *,
    unreached: Callable[[Exception], bool],
    hop: str,
    retries: int,
    backoff_s: float,
    deadline: Deadline,
) -> T:
    """Calls `call`; when it fails with an error `unreached` says never reached the server (so retrying
    cannot do the work twice), tries again up to `retries` times after a random wait in
    [0, backoff_s * 2**attempt), never past `deadline`. Any other error goes straight to the caller."""
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if attempt >= retries or not unreached(exc):
                raise
            pause_s = random.uniform(0, backoff_s * 2**attempt)
            if pause_s >= deadline.remaining_s():
                raise
            HOP_RETRIES_TOTAL.labels(hop).inc()
            attempt += 1
            await asyncio.sleep(pause_s)
