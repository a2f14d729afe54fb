"""Load from one asyncio loop: closed loops (each worker sends its next request when its last is
answered) and open loops (requests leave at a fixed rate whatever the server does, each latency counted
from when it was due). A closed loop hides a server that falls behind; an open loop shows it as growing
latency, as real traffic would. Every outcome is kept, not only the successes."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from perf.harness.client import IDLE_EXPIRY_S, Lane, Route
from perf.harness.meters import Meter, Usage
from stack.procs import LOOPBACK

TIMEOUT_S = 60.0  # per request
FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError)


@dataclass(frozen=True)
class Sample:
    due_s: float  # when it was due to leave (a closed loop: when it left), seconds from the run's start
    latency_s: float  # from due to answered, or to failed
    service_s: float  # from actually sent to answered: the server's part
    outcome: str  # the HTTP status ("200", "429"), or the exception's name ("TimeoutError")
    body: bytes


@dataclass(frozen=True)
class Run:
    samples: list[Sample]
    usage: Usage

    def ok(self, outcome: str = "200") -> list[Sample]:
        return [s for s in self.samples if s.outcome == outcome]


# Makes call number `index` on one worker's own channel; returns its outcome and answer.
Call = Callable[[int], Awaitable[tuple[str, bytes]]]


def lane_call(lane: Lane) -> Call:
    async def call(index: int) -> tuple[str, bytes]:
        status, body = await lane.send(index)
        return str(status), body

    return call


async def closed_calls(
    calls: Sequence[Call],
    *,
    requests: int,
    duration_s: float,
    pids: Sequence[int] = (),
    timeout_s: float = TIMEOUT_S,
    stop: asyncio.Event | None = None,
    warm_up: bool = True,
) -> Run:
    """One worker per call function; worker w makes calls w, w + workers, ... until `requests` are made,
    `duration_s` has passed or `stop` is set (calls in flight then finish). One unmeasured call per worker
    goes first (unless `warm_up` is false: calls so big that the first is load to measure), so every
    connection is open before timing starts. `pids`: the processes whose CPU the run meters."""
    if warm_up:
        await asyncio.gather(*(call(w) for w, call in enumerate(calls)))
    samples: list[Sample] = []
    meter = Meter(*pids)
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker(first: int, call: Call) -> None:
        for index in range(first, requests, len(calls)):
            if (sent := time.perf_counter()) >= deadline or (stop is not None and stop.is_set()):
                return
            body = b""
            try:
                async with asyncio.timeout(timeout_s):
                    outcome, body = await call(index)
            except FAILURES as exc:
                outcome = type(exc).__name__
            now = time.perf_counter()
            samples.append(Sample(sent - start, now - sent, now - sent, outcome, body))

    await asyncio.gather(*(worker(w, call) for w, call in enumerate(calls)))
    return Run(samples, meter.stop())


async def closed_run(
    route: Route,
    *,
    concurrency: int,
    requests: int,
    duration_s: float,
    pids: Sequence[int] = (),
    stop: asyncio.Event | None = None,
) -> Run:
    """HTTP load: `concurrency` workers, each on its own lane of keep-alive connections."""
    lanes = [Lane(LOOPBACK, route) for _ in range(concurrency)]
    try:
        calls = [lane_call(lane) for lane in lanes]
        return await closed_calls(calls, requests=requests, duration_s=duration_s, pids=pids, stop=stop)
    finally:
        for lane in lanes:
            lane.close()


async def open_run(
    route: Route,
    *,
    rate_per_s: float,
    duration_s: float,
    pids: Sequence[int] = (),
    timeout_s: float = TIMEOUT_S,
    max_connections: int = 512,
    stop: asyncio.Event | None = None,
) -> Run:
    """`rate_per_s * duration_s` requests, request i due at i / rate; keep-alive lanes are reused, up to
    `max_connections` (a request finding none free waits, and that wait counts in its latency). Setting
    `stop` ends the schedule early; requests already sent are still awaited."""
    loop = asyncio.get_running_loop()
    meter = Meter(*pids)
    start = loop.time()
    idle: list[tuple[Lane, float]] = []  # with the time each was last used
    slots = asyncio.Semaphore(max_connections)
    samples: list[Sample] = []

    def take() -> tuple[Lane, bool]:
        """An idle lane (reused: True) or a new one."""
        while idle:
            lane, used_at = idle.pop()
            if loop.time() - used_at < IDLE_EXPIRY_S:
                return lane, True
            lane.close()
        return Lane(LOOPBACK, route), False

    async def send(index: int, due: float) -> None:
        async with slots:
            sent = loop.time()
            lane, reused = take()
            try:
                async with asyncio.timeout(timeout_s):
                    try:
                        status, body = await lane.send(index)
                    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as stale:
                        # A reused connection the server closed before answering (a keep-alive race, or a
                        # server shutting down): sent again once on a new connection, as HTTP clients do.
                        if not reused or (isinstance(stale, asyncio.IncompleteReadError) and stale.partial):
                            raise
                        lane.close()
                        lane = Lane(LOOPBACK, route)
                        status, body = await lane.send(index)
            except FAILURES as exc:
                lane.close()
                now = loop.time()
                samples.append(Sample(due - start, now - due, now - sent, type(exc).__name__, b""))
                return
            idle.append((lane, loop.time()))
            now = loop.time()
            samples.append(Sample(due - start, now - due, now - sent, str(status), body))

    tasks = []
    for index in range(round(rate_per_s * duration_s)):
        if stop is not None and stop.is_set():
            break
        due = start + index / rate_per_s
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(send(index, due)))
    await asyncio.gather(*tasks)
    for lane, _ in idle:
        lane.close()
    return Run(sorted(samples, key=lambda s: s.due_s), meter.stop())


def windows(samples: Sequence[Sample], width_s: float) -> list[list[Sample]]:
    """The samples in consecutive windows of `width_s` by due time."""
    if not samples:
        return []
    grouped: list[list[Sample]] = [[] for _ in range(int(max(s.due_s for s in samples) // width_s) + 1)]
    for sample in samples:
        grouped[int(sample.due_s // width_s)].append(sample)
    return grouped
