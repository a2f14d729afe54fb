"""The embedding endpoint's overload and batch figures, side by side in one run:

1. Refusals. The service with a small queue (64 texts) and one FIFO queue (lanes and cache off), full in
   both ways a queue fills: "held" (the test encoder gate held, so the queue stays full the whole phase:
   nothing but the 429 path runs) and "3x overload" (gate open, an open-loop client at 3x the capacity a
   closed-loop c64 run measured just before). For each: refusals, refusals/s, refusal latency from send,
   and the service's CPU (/proc/<pid>/stat) per refusal. Beside them, the load client's own CPU per
   request, and its rate against the service's /healthz and against a null server (an asyncio server
   that answers at once): what the client could drive, against what it reported.
2. One request of 2,048 texts against 64 requests of 32 (the same 2,048 distinct texts, all 64 sent at
   once), on the service with its default settings but the cache off, alternated over rounds.

Writes perf/results/<UTC timestamp>/endpoint_bench.{json,md}.

`python -m perf.endpoint_bench [--quick] [--out DIR]`"""

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import numpy as np
import orjson

from perf.loadgen import Connection, http_request, one_hop
from perf.openloop import Sample, open_loop
from perf.sentences import SENTENCES
from stack import services as stack_services
from stack.procs import LOOPBACK, free_port, rss_mb, server_env, start_module, stop, wait_until_ok
from stack.services import ROOT, Service

if TYPE_CHECKING:
    from perf.report import Target

# perf.report imports TensorFlow: it is imported only where it is used, so the null server starts light.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TIMEOUT_S = 60.0  # per request
BIG_TEXTS = 2048
SMALL_TEXTS = 32
SMALL_CONCURRENCY = BIG_TEXTS // SMALL_TEXTS  # all 64 at once: see the module docstring and _batch_phase
REFUSED = "429"
HEALTHZ = http_request("GET", "/healthz")
# The load client's connections in the 3x overload run: under the small service's uvicorn limit
# (max_queue_texts + 64 = 128 connections), so what it refuses is the queue's 429, not uvicorn's 503.
OVERLOAD_CONNECTIONS = 96
# The small queue of the refusal phases.
SMALL_QUEUE = {"max_queue_texts": "64", "max_texts_per_request": "64"}


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
    xla: bool  # the services' encoder XLA-compiled (quick: off, so they start in seconds)
    idle_s: float  # the held service's CPU with no load: the gate's polling thread, subtracted
    refusal_rate_per_s: float  # the held open-loop run's offered rate (the rate the CPU target names)
    refusal_open_s: float
    closed_concurrency: int  # the held saturating run, /healthz and the null server
    closed_s: float
    closed_requests: int
    capacity_s: float  # the closed-loop c64 run that sets the overload rate
    capacity_requests: int
    overload_factor: float
    overload_s: float
    rounds: int  # of the batch comparison, alternating which kind goes first
    repeats: int  # sends of each kind per round
    warm_up: bool  # one unrecorded send of each kind first


QUICK = Plan("quick", False, 1.5, 1000.0, 3.0, 16, 2.0, 40_000, 3.0, 1500, 3.0, 3.0, 1, 1, False)
FULL = Plan("full", True, 4.0, 1000.0, 8.0, 16, 5.0, 100_000, 8.0, 5000, 3.0, 8.0, 3, 3, True)


def say(message: str) -> None:
    print(f"[endpoint-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- CPU ---------------------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, all its threads (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def client_cpu_s() -> float:
    """This process's CPU (the load client's: it runs in this process's one event loop)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Usage:
    wall_s: float
    service_cpu_s: float
    client_cpu_s: float


class Meter:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = self._read()

    def _read(self) -> tuple[float, float, float]:
        return time.perf_counter(), process_cpu_s(self.pid), client_cpu_s()

    def stop(self) -> Usage:
        end = self._read()
        wall, service, client = (b - a for a, b in zip(self._start, end, strict=True))
        return Usage(wall, service, client)


# --- load ---------------------------------------------------------------------------------------------


def _post(payload: object) -> bytes:
    return http_request("POST", "/v1/embeddings", orjson.dumps(payload))


def one_text_requests() -> list[bytes]:
    return [_post({"input": text, "encoding_format": "base64"}) for text in SENTENCES]


def distinct_texts(count: int) -> list[str]:
    """`count` (up to 64 x 63) distinct short texts: the first half of one sentence and the second half
    of another, as long as the benchmark's short texts."""
    halves = [(s.split()[: len(s.split()) // 2], s.split()[len(s.split()) // 2 :]) for s in SENTENCES]
    n = len(SENTENCES)
    found = [" ".join([*halves[i % n][0], *halves[(i % n + 1 + i // n) % n][1]]) for i in range(count)]
    if len(set(found)) != count:
        raise ValueError(f"only {len(set(found))} of {count} texts are distinct")
    return found


async def closed_run(
    port: int, make: Callable[[int], bytes], *, pid: int, concurrency: int, requests: int, duration_s: float
) -> tuple[list[Sample], Usage]:
    """`concurrency` keep-alive connections, each sending its next request when its last is answered;
    one request per connection first opens them, unmeasured. Every outcome is kept (not only 200s)."""
    connections = [Connection(LOOPBACK, port) for _ in range(concurrency)]
    samples: list[Sample] = []
    try:
        await asyncio.gather(*(c.exchange(make(i)) for i, c in enumerate(connections)))
        meter = Meter(pid)
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker(first: int, connection: Connection) -> None:
            for index in range(first, requests, concurrency):
                if time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                try:
                    async with asyncio.timeout(TIMEOUT_S):
                        status, _ = await connection.exchange(make(index))
                    outcome = str(status)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                    outcome = type(exc).__name__
                now = time.perf_counter()
                samples.append(Sample(sent - start, now - sent, now - sent, outcome, b""))

        await asyncio.gather(*(worker(w, c) for w, c in enumerate(connections)))
        usage = meter.stop()
    finally:
        for connection in connections:
            connection.close()
    return samples, usage


async def open_run(
    port: int, make: Callable[[int], bytes], *, pid: int, rate_per_s: float, duration_s: float, connections: int
) -> tuple[list[Sample], Usage]:
    meter = Meter(pid)
    samples = await open_loop(
        LOOPBACK,
        one_hop(port, make),
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        timeout_s=TIMEOUT_S,
        max_connections=connections,
    )
    return samples, meter.stop()


async def counter(client: httpx.AsyncClient, url: str, name: str, label: str = "") -> float:
    """The sum of a Prometheus sample's values on `url`/metrics (those whose labels hold `label`)."""
    total = 0.0
    for line in (await client.get(f"{url}/metrics")).text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == name and label in sample:
            total += float(value)
    return total


async def refusal_counts(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The service's own counts of queue-full refusals: by the admission middleware before the body was
    read (requests), and by the route once the body was read (texts: a request admitted while the queue
    had room, that another request filled before this one could reserve its texts)."""
    label = 'reason="queue_full"'
    return {
        "before_body_requests": await counter(client, url, "embedding_rejected_requests_total", label),
        "after_body_texts": await counter(client, url, "embedding_rejected_texts_total", label),
    }


# --- figures ------------------------------------------------------------------------------------------


def ms(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    p50, p99, top = (float(v) for v in np.percentile(np.asarray(values) * 1e3, [50, 99, 100]))
    return {"p50": p50, "p99": p99, "max": top}


def summarise(
    load: str, samples: Sequence[Sample], usage: Usage, baseline_cpu_per_s: float = 0.0, *, only_refusals: bool = True
) -> dict[str, Any]:
    """Outcomes, rates, latencies (from send; from due for open-loop runs) and CPU. `baseline_cpu_per_s`
    (the service's CPU per second with no load) is subtracted for the net figures. The CPU per refusal
    is given only for runs that did nothing else (`only_refusals`)."""
    refused = [s for s in samples if s.outcome == REFUSED]
    ok = [s for s in samples if s.outcome == "200"]
    wall = usage.wall_s
    client_us = usage.client_cpu_s / len(samples) * 1e6 if samples else None
    net_cpu = usage.service_cpu_s - baseline_cpu_per_s * wall
    per_refusal = None
    if refused and only_refusals:
        per_refusal = {"raw": usage.service_cpu_s / len(refused), "net": net_cpu / len(refused)}
    return {
        "load": load,
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "wall_s": wall,
        "refusals": len(refused),
        "refusals_per_s": len(refused) / wall,
        "refusal_ms_from_send": ms([s.service_s for s in refused]),
        "refusal_ms_from_due": ms([s.latency_s for s in refused]),
        "admitted": len(ok),
        "admitted_per_s": len(ok) / wall,
        "admitted_ms_from_send": ms([s.service_s for s in ok]),
        "service_cpu_s": usage.service_cpu_s,
        "service_cores": usage.service_cpu_s / wall,
        "baseline_cpu_per_s": baseline_cpu_per_s,
        "service_net_cores": net_cpu / wall,
        # Service CPU per refusal: microseconds (= core-ms per 1,000 refusals) and the fraction of one
        # core it would take at 1,000 refusals/s (= CPU seconds per refusal x 1,000).
        "service_us_per_refusal": None if per_refusal is None else {k: v * 1e6 for k, v in per_refusal.items()},
        "core_fraction_at_1000_per_s": None if per_refusal is None else {k: v * 1e3 for k, v in per_refusal.items()},
        "client_cpu_s": usage.client_cpu_s,
        "client_cores": usage.client_cpu_s / wall,
        "client_us_per_request": client_us,
        # What the client could send if it had one core to itself, at its CPU per request here.
        "client_ceiling_per_s": 1e6 / client_us if client_us else None,
    }


def said(run: dict[str, Any]) -> str:
    refusal = run["refusal_ms_from_send"]
    text = f"{run['load']}: {run['outcomes']}, {run['refusals_per_s']:.0f} refusals/s"
    if refusal["p50"] is not None:
        text += f" (p50 {refusal['p50']:.2f} ms, p99 {refusal['p99']:.2f} ms from send)"
    if run["admitted"]:
        text += f", {run['admitted_per_s']:.0f} admitted/s"
    return text + f", service {run['service_cores']:.2f} cores, client {run['client_cores']:.2f} cores"


# --- services -----------------------------------------------------------------------------------------


@dataclass
class Started:
    service: Service
    pid: int
    ready_after_s: float
    idle_rss_mb: float
    loaded_rss_mb: float = 0.0

    @property
    def port(self) -> int:
        return int(self.service.url.rsplit(":", 1)[1])

    def record(self) -> dict[str, Any]:
        return {
            "command": ["python", "-m", self.service.module, *self.service.args],
            "env": dict(self.service.env),
            "ready_after_s": self.ready_after_s,
            "idle_rss_mb": self.idle_rss_mb,
            "loaded_rss_mb": self.loaded_rss_mb,
        }


@contextmanager
def started(service: Service, logs: Path) -> Iterator[Started]:
    """Starts `service` (its log under `logs`), waits until it is ready, always stops it by PID."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{service.name}.log").open("wb") as log:
        proc = start_module(service.module, service.args, server_env(service.env), cwd=ROOT, stdout=log, stderr=log)
    try:
        ready_after = wait_until_ok(proc, service.ready_url, 600, poll_s=0.2)
        say(f"{service.name} ready after {ready_after:.1f}s (pid {proc.pid})")
        found = Started(service, proc.pid, ready_after, rss_mb(proc.pid))
        yield found
        found.loaded_rss_mb = rss_mb(proc.pid)
    finally:
        stop(proc)


def embedding_service(name: str, plan: Plan, **settings: str) -> Service:
    service = stack_services.embedding(
        free_port(),
        ROOT / "build" / "encoder",
        xla_cache_dir=str(ROOT / "build" / "xla-cache"),
        xla=str(plan.xla).lower(),
        log_level="warning",
        **settings,
    )
    return Service(name, service.module, service.url, service.ready_path, service.args, service.env)


# --- phase 1: refusals --------------------------------------------------------------------------------


async def _wait_full(client: httpx.AsyncClient, url: str, texts: int, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while await counter(client, url, "embedding_admitted_texts") < texts:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the queue did not fill to {texts} texts within {within_s:.0f}s")
        await asyncio.sleep(0.05)


def _release(gate: Path) -> None:
    gate.unlink(missing_ok=True)


async def _idle(pid: int, seconds: float) -> dict[str, float]:
    meter = Meter(pid)
    await asyncio.sleep(seconds)
    idle = meter.stop()
    return {**asdict(idle), "service_cores": idle.service_cpu_s / idle.wall_s}


async def _held_and_overload(service: Started, gate: Path, plan: Plan) -> dict[str, Any]:
    """Phase (a) with the gate held, then (b) with it open, on the same small-queue service."""
    pid, port, url = service.pid, service.port, service.service.url
    requests = one_text_requests()
    refusal_request = requests[0]
    queue_texts = int(SMALL_QUEUE["max_queue_texts"])
    rate = plan.refusal_rate_per_s

    def one(_: int) -> bytes:
        return refusal_request

    def cycled(index: int) -> bytes:
        return requests[index % len(requests)]

    def healthz(_: int) -> bytes:
        return HEALTHZ

    async with httpx.AsyncClient(timeout=30.0) as client:

        async def counted(
            phase: str,
            name: str,
            load: Awaitable[tuple[list[Sample], Usage]],
            baseline: float = 0.0,
            only_refusals: bool = True,
        ) -> dict[str, Any]:
            """Runs `load`, summarised with the service's own refusal counts over it."""
            before = await refusal_counts(client, url)
            samples, usage = await load
            after = await refusal_counts(client, url)
            run = summarise(name, samples, usage, baseline, only_refusals=only_refusals)
            run["server_counted"] = {k: after[k] - before[k] for k in after}
            say(f"{phase}, {said(run)}")
            return run

        # (a) held: one request of 64 texts fills the queue and waits at the gate.
        fill_connection = Connection(LOOPBACK, port)
        fill_request = _post({"input": list(SENTENCES[:queue_texts]), "encoding_format": "base64"})
        fill = asyncio.create_task(fill_connection.exchange(fill_request))
        await _wait_full(client, url, queue_texts)
        probe = Connection(LOOPBACK, port)
        status, _ = await probe.exchange(refusal_request)
        probe.close()
        if status != 429:
            raise RuntimeError(f"the queue is full but a request got {status}, not 429")
        say(f"queue held full ({queue_texts} texts); measuring the 429 path")

        held: dict[str, Any] = {"idle": await _idle(pid, plan.idle_s)}
        baseline = held["idle"]["service_cores"]
        say(f"held, no load: the service uses {baseline:.3f} cores (the gate's polling thread; subtracted)")
        c = plan.closed_concurrency
        held["at_rate"] = await counted(
            "held",
            f"open loop {rate:g}/s",
            open_run(port, one, pid=pid, rate_per_s=rate, duration_s=plan.refusal_open_s, connections=96),
            baseline,
        )
        held["saturated"] = await counted(
            "held",
            f"closed loop c{c}",
            closed_run(port, one, pid=pid, concurrency=c, requests=plan.closed_requests, duration_s=plan.closed_s),
            baseline,
        )
        # The server's counts include the one unmeasured request per connection that opened them.
        held["saturated"]["unmeasured_opening_requests"] = c
        held["healthz"] = await counted(
            "held",
            f"GET /healthz, closed loop c{c}",
            closed_run(port, healthz, pid=pid, concurrency=c, requests=plan.closed_requests, duration_s=plan.closed_s),
        )
        held["healthz_at_rate"] = await counted(
            "held",
            f"GET /healthz, open loop {rate:g}/s",
            open_run(port, healthz, pid=pid, rate_per_s=rate, duration_s=plan.refusal_open_s, connections=96),
        )

        _release(gate)
        status, body = await asyncio.wait_for(fill, TIMEOUT_S)
        fill_connection.close()
        filled = len(orjson.loads(body)["data"]) if status == 200 else 0
        held["fill_request"] = {"texts": queue_texts, "status": status, "embeddings": filled}
        if status != 200 or filled != queue_texts:
            raise RuntimeError(f"the request that held the queue got {status} with {filled} embeddings")

        # The control: the same /healthz load with the gate open, to see what the held gate's polling
        # thread costs a loaded service beyond its idle CPU.
        released: dict[str, Any] = {"idle": await _idle(pid, plan.idle_s)}
        say(f"released, no load: the service uses {released['idle']['service_cores']:.3f} cores")
        released["healthz_at_rate"] = await counted(
            "released",
            f"GET /healthz, open loop {rate:g}/s",
            open_run(port, healthz, pid=pid, rate_per_s=rate, duration_s=plan.refusal_open_s, connections=96),
        )
        held_extra = held["healthz_at_rate"]["service_cores"] - held["idle"]["service_cores"]
        released_extra = released["healthz_at_rate"]["service_cores"] - released["idle"]["service_cores"]
        released["gate_cost_under_load_us_per_request"] = (
            (held_extra - released_extra) / held["healthz_at_rate"]["requests"] * held["healthz_at_rate"]["wall_s"]
        ) * 1e6

        # (b) 3x overload: capacity first (closed loop c64), then an open loop at 3x it. The client keeps
        # its connections under the uvicorn limit (max_queue_texts + 64), so what refuses is the queue.
        capacity = await counted(
            "capacity",
            f"closed loop c{queue_texts}, one text per request",
            closed_run(
                port,
                cycled,
                pid=pid,
                concurrency=queue_texts,
                requests=plan.capacity_requests,
                duration_s=plan.capacity_s,
            ),
        )
        admitted_cpu_s = capacity["service_cpu_s"] / capacity["admitted"] if capacity["admitted"] else 0.0
        offered = round(plan.overload_factor * capacity["admitted_per_s"], 1)
        overload = await counted(
            "overload",
            f"open loop {offered:g}/s ({plan.overload_factor:g}x capacity)",
            open_run(
                port,
                cycled,
                pid=pid,
                rate_per_s=offered,
                duration_s=plan.overload_s,
                connections=OVERLOAD_CONNECTIONS,
            ),
            only_refusals=False,
        )
        # The phase's CPU also pays for what it admitted: charging each admitted request what one cost in
        # the capacity run leaves an estimate of the refusals' share (noisy; phase (a) is the clean figure).
        rest = overload["service_cpu_s"] - overload["admitted"] * admitted_cpu_s
        overload["attributed"] = {
            "admitted_cpu_s_each_from_capacity_run": admitted_cpu_s,
            "service_us_per_refusal_estimate": rest / overload["refusals"] * 1e6 if overload["refusals"] else None,
        }
    return {
        "held": held,
        "released": released,
        "overload": {"capacity": capacity, "offered_per_s": offered, "run": overload},
    }


# --- the null server: what the load client can drive -------------------------------------------------

NULL_REFUSAL = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
NULL_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _null_server(port: int) -> None:
    """Answers every request at once (GET: 200, anything else: 429), reading its body first."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                if at >= 0:
                    await reader.readexactly(int(lower[at + 17 : lower.index(b"\r\n", at + 2)]))
                writer.write(NULL_OK if head.startswith(b"GET ") else NULL_REFUSAL)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, port)
    async with server:
        await server.serve_forever()


def _null_server_runs(plan: Plan, logs: Path) -> dict[str, Any]:
    """The refusal request against the null server: closed loop (what the client drives against a server
    that costs next to nothing) and at the held open-loop rate (the floor any asyncio server pays per
    request at that rate on this machine: the wake-ups and system calls, with no HTTP framework)."""
    port = free_port()
    args = ("--null-server", str(port))
    service = Service("null-server", "perf.endpoint_bench", f"http://{LOOPBACK}:{port}", "/", args)
    refusal_request = one_text_requests()[0]

    def one(_: int) -> bytes:
        return refusal_request

    c, rate = plan.closed_concurrency, plan.refusal_rate_per_s
    with started(service, logs) as null:
        closed = asyncio.run(
            closed_run(port, one, pid=null.pid, concurrency=c, requests=plan.closed_requests, duration_s=plan.closed_s)
        )
        at_rate = asyncio.run(
            open_run(port, one, pid=null.pid, rate_per_s=rate, duration_s=plan.refusal_open_s, connections=96)
        )
    runs = {
        "saturated": summarise(f"closed loop c{c}", *closed),
        "at_rate": summarise(f"open loop {rate:g}/s", *at_rate),
    }
    for run in runs.values():
        say(f"null server, {said(run)}")
    return runs


# --- phase 2: one request of 2,048 texts against 64 of 32 ---------------------------------------------


@dataclass(frozen=True)
class Send:
    """One send of a kind: its requests, all at once, each on its own connection."""

    requests: list[bytes]
    texts_each: int
    connections: list[Connection]


async def _timed(pid: int, send: Send) -> dict[str, Any]:
    """Times one send (from the first request sent to the last answer read), then checks each answer
    holds its embeddings. The connections are opened afresh first, unmeasured: ones left idle through
    the other kind's sends would have passed uvicorn's 5 s keep-alive timeout."""
    for connection in send.connections:
        connection.close()
    await asyncio.gather(*(c.exchange(HEALTHZ) for c in send.connections))
    meter = Meter(pid)
    pairs = zip(send.connections, send.requests, strict=True)
    answers = await asyncio.gather(*(c.exchange(r) for c, r in pairs))
    usage = meter.stop()
    for status, body in answers:
        got = len(orjson.loads(body)["data"]) if status == 200 else 0
        if status != 200 or got != send.texts_each:
            raise RuntimeError(f"a request of {send.texts_each} texts got {status} with {got} embeddings")
    texts = send.texts_each * len(send.requests)
    return {
        "seconds": usage.wall_s,
        "texts_per_s": texts / usage.wall_s,
        "service_core_s_per_1000_texts": usage.service_cpu_s / texts * 1e3,
    }


async def _batch_phase(service: Started, plan: Plan) -> dict[str, Any]:
    texts = distinct_texts(BIG_TEXTS)
    small_requests = [
        _post({"input": texts[k : k + SMALL_TEXTS], "encoding_format": "base64"})
        for k in range(0, BIG_TEXTS, SMALL_TEXTS)
    ]
    kinds = {
        "one_of_2048": Send(
            [_post({"input": texts, "encoding_format": "base64"})], BIG_TEXTS, [Connection(LOOPBACK, service.port)]
        ),
        "64_of_32": Send(small_requests, SMALL_TEXTS, [Connection(LOOPBACK, service.port) for _ in small_requests]),
    }
    runs: list[dict[str, Any]] = []
    try:
        if plan.warm_up:
            for name, send in kinds.items():
                warm = await _timed(service.pid, send)
                say(f"warm-up, {name}: {warm['texts_per_s']:.0f} texts/s (not recorded)")
        for round_ in range(1, plan.rounds + 1):
            order = list(kinds) if round_ % 2 else list(kinds)[::-1]
            for name in order:
                for repeat in range(1, plan.repeats + 1):
                    run = {"round": round_, "kind": name, "repeat": repeat, **await _timed(service.pid, kinds[name])}
                    runs.append(run)
                    say(f"round {round_}, {name} #{repeat}: {run['texts_per_s']:.0f} texts/s ({run['seconds']:.2f}s)")
    finally:
        for send in kinds.values():
            for connection in send.connections:
                connection.close()

    def median(kind: str, round_: int | None = None) -> float:
        rates = [r["texts_per_s"] for r in runs if r["kind"] == kind and round_ in (None, r["round"])]
        return float(statistics.median(rates))

    rounds = [
        {
            "round": r,
            "one_of_2048_texts_per_s": median("one_of_2048", r),
            "64_of_32_texts_per_s": median("64_of_32", r),
            "ratio": median("one_of_2048", r) / median("64_of_32", r),
        }
        for r in range(1, plan.rounds + 1)
    ]
    return {
        "texts": BIG_TEXTS,
        "distinct_texts": len(set(texts)),
        "mean_words_per_text": statistics.mean(len(t.split()) for t in texts),
        "small_concurrency": SMALL_CONCURRENCY,
        "why_c64": (
            "all 64 requests at once puts the same 2,048 texts in the queue at the same moment as the one "
            "request does, so both measure only how the service turns the same work into encoder batches; "
            "at c16 the client's round trips between requests (each next request sent, parsed and "
            "tokenised only after one is answered) would be measured too"
        ),
        "runs": runs,
        "rounds": rounds,
        "one_of_2048_texts_per_s": median("one_of_2048"),
        "64_of_32_texts_per_s": median("64_of_32"),
        "ratio": median("one_of_2048") / median("64_of_32"),
        "ratio_per_round": [r["ratio"] for r in rounds],
    }


# --- the report ---------------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list["Target"]:
    from perf.report import Target, at_least, at_most

    held = results["refusals"]["held"]
    at_rate, saturated = held["at_rate"], held["saturated"]
    overload = results["refusals"]["overload"]["run"]
    client = results["client"]
    rate = f"{at_rate['refusals_per_s']:.0f}"
    gate_cost = results["refusals"]["released"]["gate_cost_under_load_us_per_request"]

    def net(run: dict[str, Any], key: str) -> float | None:
        return None if run[key] is None else float(run[key]["net"])

    def below(name: str, value: float | None, goal: float) -> Target:
        return Target(name, value, f"< {goal:g}", None if value is None else value < goal)

    def info(name: str, value: float | None) -> Target:
        return Target(name, value, "-", None)

    return [
        at_most(f"held: 429 p50 from send, open loop at {rate}/s (ms)", at_rate["refusal_ms_from_send"]["p50"], 2.0),
        info(f"held: 429 p99 from send, open loop at {rate}/s (ms)", at_rate["refusal_ms_from_send"]["p99"]),
        below(
            f"held: service CPU per refusal at {rate}/s x 1,000/s, fraction of one core (net of idle)",
            net(at_rate, "core_fraction_at_1000_per_s"),
            0.10,
        ),
        below(
            f"held: service CPU per refusal at {rate}/s, us = core-ms per 1,000 (net of idle)",
            net(at_rate, "service_us_per_refusal"),
            100.0,
        ),
        info(
            f"held: service CPU per refusal at {rate}/s, us, net of idle and of the gate's cost under load (estimate)",
            None if (v := net(at_rate, "service_us_per_refusal")) is None else v - gate_cost,
        ),
        info(f"held, saturated ({saturated['load']}): refusals/s", saturated["refusals_per_s"]),
        info(
            f"held, saturated ({saturated['load']}): 429 p50 from send (ms)", saturated["refusal_ms_from_send"]["p50"]
        ),
        below(
            "held, saturated: service CPU per refusal (us, net of idle)", net(saturated, "service_us_per_refusal"), 100
        ),
        info(
            f"null server at {rate}/s: its CPU per request (us; the asyncio floor)",
            net(client["null_server"]["at_rate"], "service_us_per_refusal"),
        ),
        at_most("3x overload: 429 p50 from send (ms)", overload["refusal_ms_from_send"]["p50"], 2.0),
        info("3x overload: 429 p99 from send (ms)", overload["refusal_ms_from_send"]["p99"]),
        info("3x overload: refusals/s", overload["refusals_per_s"]),
        at_least("one request of 2,048 / 64 requests of 32 (c64), texts/s", results["batch"]["ratio"], 0.90),
        at_least(
            f"load client: null-server rate / the highest open-loop rate it offered "
            f"({client['highest_open_loop_rate_per_s']:.0f}/s)",
            client["null_over_open_loop_rate"],
            3.0,
        ),
        info("load client: its CPU per request, held saturated run (us)", saturated["client_us_per_request"]),
        info(
            "load client: its one-core ceiling (1 / CPU per request) / held saturated rate",
            client["ceiling_over_refusals"],
        ),
        info("load client: null-server rate / held saturated refusal rate", client["null_over_refusals"]),
        info("load client: /healthz rate / held saturated refusal rate", client["healthz_over_refusals"]),
    ]


def _row(name: str, run: dict[str, Any]) -> str:
    from perf.report import num

    refusal = run["refusal_ms_from_send"]
    per = run["service_us_per_refusal"] or {"raw": None, "net": None}
    return (
        f"| {name} | {run['load']} | {run['requests']} | {run['refusals_per_s']:.0f} | {num(refusal['p50'])} | "
        f"{num(refusal['p99'])} | {run['admitted_per_s']:.0f} | {num(run['admitted_ms_from_send']['p50'])} | "
        f"{num(per['raw'], 1)} | {num(per['net'], 1)} | {run['service_cores']:.3f} | "
        f"{num(run['client_us_per_request'], 1)} | {run['client_cores']:.3f} |"
    )


def markdown(report: dict[str, Any]) -> str:
    from perf.report import num, run_line, targets_table

    results = report["results"]
    plan = report["settings"]["plan"]
    refusals = results["refusals"]
    held, released, over = refusals["held"], refusals["released"], refusals["overload"]
    null = results["client"]["null_server"]
    batch = results["batch"]
    lines = [
        f"# Embedding endpoint: refusals, and one request of 2,048 texts ({plan['mode']} mode)",
        "",
        f"{run_line(report, plan['xla'])} "
        "Compare ratios inside one run, not absolute figures across runs: the machine is shared.",
        "",
        "## Targets",
        "",
        *targets_table([_as_target(t) for t in results["targets"]]),
        "",
        "## Refusals (small queue: max_queue_texts 64)",
        "",
        "*held*: the encoder gate held, the queue full all along, nothing but the 429 path runs. Latencies from "
        "when each request was sent. Service CPU from /proc/<pid>/stat (10 ms ticks); *net*: less the held "
        f"service's idle CPU ({held['idle']['service_cores']:.3f} cores, the test gate's polling thread; "
        f"{released['idle']['service_cores']:.3f} with the gate open). The gate's extra cost under load, from "
        f"/healthz at {plan['refusal_rate_per_s']:g}/s held and released: "
        f"{num(released['gate_cost_under_load_us_per_request'], 1)} us per request. In the 3x overload run the "
        "service's CPU also pays for the admitted requests, so it gives no clean CPU per refusal; charging "
        "each admitted request what one cost in the capacity run leaves "
        f"{num(over['run']['attributed']['service_us_per_refusal_estimate'], 1)} us per refusal, a difference "
        "of two large, noisy figures (the encoder's cost per text depends on the batch sizes each load makes): "
        "not a measurement.",
        "",
        "| phase | load | requests | 429/s | 429 p50 ms | 429 p99 ms | 200/s | 200 p50 ms | service us/429 | "
        "net us/429 | service cores | client us/request | client cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        _row("held", held["at_rate"]),
        _row("held", held["saturated"]),
        _row("held", held["healthz"]),
        _row("held", held["healthz_at_rate"]),
        _row("released", released["healthz_at_rate"]),
        _row("capacity", over["capacity"]),
        _row("3x overload", over["run"]),
        _row("null server", null["saturated"]),
        _row("null server", null["at_rate"]),
        "",
        f"3x overload: offered {over['offered_per_s']:g}/s against a capacity of "
        f"{over['capacity']['admitted_per_s']:.0f}/s; outcomes {over['run']['outcomes']}; refused before the "
        f"body was read: {over['run']['server_counted']['before_body_requests']:.0f}, after (the route's "
        f"reservation): {over['run']['server_counted']['after_body_texts']:.0f}.",
        "",
        "The null server (in its rows, *service* is the null server) is an asyncio server that reads each "
        "request and answers at once: the client's closed-loop rate against it is what the client can drive "
        f"here, {results['client']['null_over_open_loop_rate']:.1f}x the highest open-loop rate the targets "
        "are judged on, and "
        f"{results['client']['null_over_refusals']:.2f}x the held closed-loop refusal rate: that rate is "
        "bounded by the client and the machine as much as by the service, which is why the CPU per refusal, "
        "not the rate, is the figure to take from it. At the open-loop rate the null server is also the floor "
        "any Python asyncio server pays per request on this machine (wake-ups and system calls). /healthz is "
        "no trivial endpoint here: it goes through the service's whole middleware stack and costs it more "
        "than a 429, which runs before any of it.",
        "",
        "## One request of 2,048 texts against 64 requests of 32",
        "",
        f"The same {batch['texts']} distinct texts ({batch['mean_words_per_text']:.1f} words on average), "
        f"default settings; the 64 requests all sent at once (c{batch['small_concurrency']}): {batch['why_c64']}. "
        f"Each round: the median of {plan['repeats']} sends per kind; the kinds alternate which goes first.",
        "",
        "| round | one of 2,048: texts/s | 64 of 32: texts/s | ratio |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['round']} | {r['one_of_2048_texts_per_s']:.0f} | {r['64_of_32_texts_per_s']:.0f} | "
            f"{r['ratio']:.3f} |"
            for r in batch["rounds"]
        ),
        f"| median of all sends | {batch['one_of_2048_texts_per_s']:.0f} | {batch['64_of_32_texts_per_s']:.0f} | "
        f"{batch['ratio']:.3f} |",
        "",
        "## Services",
        "",
        "| service | ready after s | idle RSS MB | loaded RSS MB | settings |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {name} | {s['ready_after_s']:.1f} | {s['idle_rss_mb']:.0f} | {s['loaded_rss_mb']:.0f} | "
            + ", ".join(f"{k}={v}" for k, v in s["env"].items() if k not in {"EMBEDDING_HOST", "EMBEDDING_PORT"})
            + " |"
            for name, s in results["services"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def _as_target(found: dict[str, Any]) -> "Target":
    from perf.report import Target

    return Target(**found)


# --- main ---------------------------------------------------------------------------------------------


def client_figures(refusals: dict[str, Any], null: dict[str, Any]) -> dict[str, Any]:
    """The load client's headroom: the rate it drives against the null server over the highest rate an
    open-loop run asked of it (the runs the latency and CPU targets are judged on), and over the held
    closed-loop refusal rate (near 1: that rate is the client's and the machine's, not the service's)."""
    held = refusals["held"]
    null_rate = null["saturated"]["refusals_per_s"]
    offered = max(held["at_rate"]["requests"] / held["at_rate"]["wall_s"], refusals["overload"]["offered_per_s"])
    ceiling = held["saturated"]["client_ceiling_per_s"]
    saturated = held["saturated"]["refusals_per_s"]
    return {
        "null_server": null,
        "highest_open_loop_rate_per_s": offered,
        "null_over_open_loop_rate": null_rate / offered,
        "null_over_refusals": null_rate / saturated,
        "ceiling_over_refusals": None if ceiling is None else ceiling / saturated,
        "healthz_over_refusals": held["healthz"]["admitted_per_s"] / saturated,
    }


def run_bench(plan: Plan, out: Path) -> dict[str, Any]:
    logs = out / "logs"
    gate = logs / "encoder.gate"
    logs.mkdir(parents=True, exist_ok=True)
    services: dict[str, Any] = {}
    small = embedding_service(
        "embedding-small-queue",
        plan,
        **SMALL_QUEUE,
        # The request holding the queue full waits at the gate the whole held phase.
        request_timeout_s="300",
        test_encoder_gate=str(gate),
        # One FIFO queue: a full queue refuses at the door, before the body is read (with lanes, the
        # request's lane decides once its body is parsed); with the cache (and its sharing of identical
        # texts in flight) the repeated texts would not all be computed, and the capacity would read high.
        lanes="false",
        cache_bytes="0",
    )
    gate.touch()
    try:
        with started(small, logs) as service:
            refusals = asyncio.run(_held_and_overload(service, gate, plan))
        services[small.name] = service.record()
    finally:
        _release(gate)
    null = _null_server_runs(plan, logs)
    # Every round sends the same 2,048 texts: with the cache, the rounds after the first would not compute.
    default = embedding_service("embedding-default", plan, cache_bytes="0")
    with started(default, logs) as service:
        batch = asyncio.run(_batch_phase(service, plan))
    services[default.name] = service.record()
    return {"services": services, "refusals": refusals, "client": client_figures(refusals, null), "batch": batch}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, one round, no XLA: about a minute")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    parser.add_argument("--null-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.null_server:
        asyncio.run(_null_server(args.null_server))
        return
    plan = QUICK if args.quick else FULL
    started_at = datetime.now(UTC)
    out: Path = args.out or ROOT / "perf" / "results" / started_at.strftime("%Y%m%d-%H%M%S")
    results = run_bench(plan, out)
    # TensorFlow, imported only once the load is over.
    from perf.report import run_header, write_report

    report: dict[str, Any] = {
        **run_header("perf.endpoint_bench", argv if argv is not None else sys.argv[1:], started_at),
        "settings": {"plan": asdict(plan)},
        "results": results,
    }
    results["targets"] = [asdict(t) for t in targets(results)]
    write_report(out, "endpoint_bench", report, markdown(report))
    say(f"wrote {out}/endpoint_bench.json and endpoint_bench.md")


if __name__ == "__main__":
    main()
