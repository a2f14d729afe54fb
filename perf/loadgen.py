"""Closed-loop HTTP load from one asyncio loop, and the summary every benchmark reports: rate, p50, p99."""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import numpy as np

# Sends request number `index` (workers pick their payload from it) and returns the response.
SendRequest = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Measurement:
    completed: int  # calls that returned, successful or not
    errors: int
    error_kinds: dict[str, int]  # HTTP status or exception name -> count
    elapsed_s: float
    throughput_per_s: float  # successful items per second
    p50_ms: float | None  # of successful calls; None when there were none
    p99_ms: float | None

    @classmethod
    def of(
        cls, latencies_s: Sequence[float], error_kinds: Counter[str], elapsed_s: float, items_per_call: int
    ) -> "Measurement":
        """`latencies_s` holds successful calls only; errors are counted in `error_kinds`."""
        p50, p99 = np.percentile(np.asarray(latencies_s) * 1e3, [50, 99]) if latencies_s else (None, None)
        errors = sum(error_kinds.values())
        return cls(
            completed=len(latencies_s) + errors,
            errors=errors,
            error_kinds=dict(error_kinds),
            elapsed_s=elapsed_s,
            throughput_per_s=len(latencies_s) * items_per_call / elapsed_s if elapsed_s > 0 else 0.0,
            p50_ms=None if p50 is None else float(p50),
            p99_ms=None if p99 is None else float(p99),
        )


@dataclass
class _Tally:
    latencies_s: list[float]
    error_kinds: Counter[str]


async def _worker(client: httpx.AsyncClient, send: SendRequest, indices: range, deadline: float, tally: _Tally) -> None:
    for index in indices:
        if time.perf_counter() >= deadline:
            return
        started = time.perf_counter()
        try:
            status = (await send(client, index)).status_code
        except httpx.HTTPError as exc:
            tally.error_kinds[type(exc).__name__] += 1
            continue
        if status == 200:
            tally.latencies_s.append(time.perf_counter() - started)
        else:
            tally.error_kinds[str(status)] += 1


async def _run(clients: list[httpx.AsyncClient], send: SendRequest, requests: int, duration_s: float) -> Measurement:
    """Worker w sends requests w, w + workers, ... until they are done or `duration_s` has passed."""
    tally = _Tally([], Counter())
    started = time.perf_counter()
    deadline = started + duration_s
    workers = len(clients)
    await asyncio.gather(
        *(_worker(client, send, range(w, requests, workers), deadline, tally) for w, client in enumerate(clients))
    )
    return Measurement.of(tally.latencies_s, tally.error_kinds, time.perf_counter() - started, 1)


async def closed_loop(
    base_url: str,
    send: SendRequest,
    *,
    concurrency: int,
    requests: int,
    duration_s: float,
    warmup_per_worker: int = 2,
    timeout_s: float = 30.0,
) -> Measurement:
    """`concurrency` workers, each sending its next request as soon as its last one returns.

    Each worker has its own client holding one keep-alive connection: one httpx pool shared by many
    concurrent requests slows down sharply (encode/httpx#3215), and the client would be what is measured.
    A warm-up of `warmup_per_worker` requests per worker goes first and is not measured, so every
    connection is open before timing starts. Bounded by `requests` and by `duration_s` (requests in
    flight at the deadline finish, within `timeout_s`)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout_s))
            for _ in range(concurrency)
        ]
        await _run(clients, send, warmup_per_worker * concurrency, duration_s)
        return await _run(clients, send, requests, duration_s)
