"""HTTP load from one asyncio loop: the closed-loop runner, the routes a request takes, and the summary
every benchmark reports.

The client is a minimal HTTP/1.1 keep-alive client over asyncio streams sending pre-encoded requests:
on 2 cores the load generator shares the CPU with the server, and httpx costs several times more CPU
per request, which the encoder would lose and the benchmark would wrongly charge to the service."""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Request number -> the complete request bytes to send for it.
MakeRequest = Callable[[int], bytes]


@dataclass(frozen=True)
class Measurement:
    completed: int  # calls that returned, successful or not
    errors: int
    error_kinds: dict[str, int]  # HTTP status or exception name -> count
    elapsed_s: float
    throughput_per_s: float  # successful items per second
    p50_ms: float | None  # of successful calls; None when there were none
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(
        cls, latencies_s: Sequence[float], error_kinds: Counter[str], elapsed_s: float, items_per_call: int
    ) -> "Measurement":
        """`latencies_s` holds successful calls only; errors are counted in `error_kinds`."""
        errors = sum(error_kinds.values())
        ms = np.asarray(latencies_s) * 1e3
        p50, p90, p99, top = (float(v) for v in np.percentile(ms, [50, 90, 99, 100])) if ms.size else (None,) * 4
        return cls(
            completed=len(latencies_s) + errors,
            errors=errors,
            error_kinds=dict(error_kinds),
            elapsed_s=elapsed_s,
            throughput_per_s=len(latencies_s) * items_per_call / elapsed_s if elapsed_s > 0 else 0.0,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            max_ms=top,
        )


def http_request(method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode("ascii") + b"\r\n" + body


class Connection:
    """One keep-alive connection; reopened after the server closes it or an error."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Sends `request`, reads the whole response, returns its status code and body."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(*self._address)
        reader, writer = self._streams
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            headers = head.lower()
            length_at = headers.find(b"\r\ncontent-length:")
            if length_at < 0:
                raise ConnectionError("response without Content-Length")
            length = int(headers[length_at + 17 : headers.index(b"\r\n", length_at + 2)])
            body = await reader.readexactly(length)
            if b"\r\nconnection: close" in headers:
                self.close()
            return int(head[9:12]), body
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


@dataclass(frozen=True)
class Hop:
    """One HTTP exchange of a request: the port it goes to, and its bytes, built from the request's
    number and the previous hop's answer (b"" for the first hop)."""

    port: int
    build: Callable[[int, bytes], bytes]


Route = tuple[Hop, ...]  # a request's hops, in order: one for a server, more for a client-chained pipeline


def one_hop(port: int, make: MakeRequest) -> Route:
    return (Hop(port, lambda index, _: make(index)),)


class Lane:
    """A keep-alive connection for each hop of a route: what one client uses for one request at a time."""

    def __init__(self, host: str, route: Route) -> None:
        self._hops = [(Connection(host, hop.port), hop.build) for hop in route]

    async def send(self, index: int) -> tuple[int, bytes]:
        """Request `index` through every hop; the first non-200 answer ends it."""
        status, body = 200, b""
        for connection, build in self._hops:
            status, body = await connection.exchange(build(index, body))
            if status != 200:
                break
        return status, body

    def close(self) -> None:
        for connection, _ in self._hops:
            connection.close()


class CallFailed(Exception):
    """A call that returned, but not successfully; `kind` is what the report counts it under."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


# Makes call number `index` on one worker's own connection; raises CallFailed (or an OSError) on failure.
Call = Callable[[int], Awaitable[None]]


@dataclass
class _Tally:
    latencies_s: list[float]
    error_kinds: Counter[str]


async def _worker(call: Call, indices: range, deadline: float, timeout_s: float, tally: _Tally) -> None:
    for index in indices:
        if time.perf_counter() >= deadline:
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                await call(index)
        except CallFailed as failure:
            tally.error_kinds[failure.kind] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            tally.error_kinds[type(exc).__name__] += 1
        else:
            tally.latencies_s.append(time.perf_counter() - started)


async def _run(calls: list[Call], requests: int, duration_s: float, timeout_s: float) -> Measurement:
    """Worker w makes calls w, w + workers, ... until they are done or `duration_s` has passed."""
    tally = _Tally([], Counter())
    started = time.perf_counter()
    deadline = started + duration_s
    workers = len(calls)
    await asyncio.gather(
        *(_worker(call, range(w, requests, workers), deadline, timeout_s, tally) for w, call in enumerate(calls))
    )
    return Measurement.of(tally.latencies_s, tally.error_kinds, time.perf_counter() - started, 1)


async def run_closed_loop(
    calls: list[Call], *, requests: int, duration_s: float, warmup_per_worker: int = 2, timeout_s: float = 30.0
) -> Measurement:
    """One worker per call function, each making its next call as soon as its last one returns. A
    warm-up of `warmup_per_worker` calls per worker goes first and is not measured, so every
    connection is open before timing starts. Bounded by `requests` and by `duration_s` (calls in
    flight at the deadline finish, within `timeout_s`)."""
    await _run(calls, warmup_per_worker * len(calls), duration_s, timeout_s)
    return await _run(calls, requests, duration_s, timeout_s)


def _lane_call(lane: Lane) -> Call:
    async def call(index: int) -> None:
        status, _ = await lane.send(index)
        if status != 200:
            raise CallFailed(str(status))

    return call


async def closed_loop(host: str, route: Route, *, concurrency: int, requests: int, duration_s: float) -> Measurement:
    """HTTP load: `concurrency` workers, each on its own lane of keep-alive connections."""
    lanes = [Lane(host, route) for _ in range(concurrency)]
    try:
        return await run_closed_loop([_lane_call(lane) for lane in lanes], requests=requests, duration_s=duration_s)
    finally:
        for lane in lanes:
            lane.close()
