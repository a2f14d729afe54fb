"""Open-loop HTTP load: requests leave at a fixed rate whatever the server does, and each latency is
counted from when the request was due to leave. A closed loop hides a server that falls behind (its
clients slow down with it); an open loop shows it as growing latency, as real traffic would."""

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perf.loadgen import Lane, Route

IDLE_EXPIRY_S = 4.0  # below uvicorn's 5 s keep-alive timeout


@dataclass(frozen=True)
class Sample:
    due_s: float  # when it was due to leave, seconds from the start of the run
    latency_s: float  # from due to answered, or to failed
    service_s: float  # from actually sent (a connection was free) to answered: the server's part
    outcome: str  # the HTTP status ("200", "503"), or the exception's name ("TimeoutError")
    body: bytes


async def open_loop(
    host: str,
    route: Route,
    *,
    rate_per_s: float,
    duration_s: float,
    timeout_s: float,
    max_connections: int = 512,
    stop: asyncio.Event | None = None,
) -> list[Sample]:
    """`rate_per_s * duration_s` requests, request i due at i / rate; keep-alive lanes (a connection per
    hop) are reused, up to `max_connections` (a request finding none free waits, and that wait counts in
    its latency). Setting `stop` ends the schedule early; requests already sent are still awaited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    idle: list[tuple[Lane, float]] = []  # with the time each was last used
    slots = asyncio.Semaphore(max_connections)
    samples: list[Sample] = []

    def take() -> tuple[Lane, bool]:
        """An idle lane (reused: True) or a new one. Idle ones are dropped after IDLE_EXPIRY_S, before
        the servers' keep-alive timeout closes them under a request."""
        while idle:
            lane, used_at = idle.pop()
            if loop.time() - used_at < IDLE_EXPIRY_S:
                return lane, True
            lane.close()
        return Lane(host, route), False

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
                        # server that has begun shutting down): sent again once on a new connection, as
                        # HTTP clients do. Anything else, or a second failure, is counted.
                        if not reused or (isinstance(stale, asyncio.IncompleteReadError) and stale.partial):
                            raise
                        lane.close()
                        lane = Lane(host, route)
                        status, body = await lane.send(index)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
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
    return sorted(samples, key=lambda s: s.due_s)


@dataclass(frozen=True)
class Summary:
    requests: int
    outcomes: dict[str, int]
    ok_p50_ms: float | None
    ok_p99_ms: float | None
    max_ms: float

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> "Summary":
        ok = [s.latency_s * 1e3 for s in samples if s.outcome == "200"]
        p50, p99 = (float(v) for v in np.percentile(ok, [50, 99])) if ok else (None, None)
        return cls(
            requests=len(samples),
            outcomes=dict(Counter(s.outcome for s in samples)),
            ok_p50_ms=p50,
            ok_p99_ms=p99,
            max_ms=max((s.latency_s * 1e3 for s in samples), default=0.0),
        )


def windows(samples: Sequence[Sample], width_s: float) -> list[list[Sample]]:
    """The samples in consecutive windows of `width_s` by due time."""
    if not samples:
        return []
    count = int(max(s.due_s for s in samples) // width_s) + 1
    grouped: list[list[Sample]] = [[] for _ in range(count)]
    for sample in samples:
        grouped[int(sample.due_s // width_s)].append(sample)
    return grouped
