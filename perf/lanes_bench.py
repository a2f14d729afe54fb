"""Fair lanes and the exact embedding cache, side by side in one run:

1. Noisy neighbour. Two pipelines (embedding service, head, orchestrator), started one after the other:
   A with fair lanes (EMBEDDING_LANES=true, the cache at its default) and B with one FIFO queue
   (EMBEDDING_LANES=false) and no cache (EMBEDDING_CACHE_BYTES=0). On each: (a) an interactive caller
   (/v1/embeddings, one text per request, user "web", c2) and /classify (one text, c2) alone; (b) the
   same under a bulk flood (4 workers, each sending its next request of 256 texts, user "bulk-job",
   when its last is answered; a 429 waits out its Retry-After, capped); (c) the flood alone. Every text
   sent is new (a counter appended), so the cache never answers one. Neither caller has a key: `user`
   names their flows inside the shared `anonymous` lane; /classify's texts are in the orchestrator's lane
   (its key, which the stack launcher gives it).
2. Repeats. Zipf draws (s = 1.1) over 10,000 distinct texts, one text per request at c64: the same
   sequence against A's embedding service (cache on) and B's (cache off). The hit rate from A's
   /metrics counters, over the run.
3. The load client's headroom: its closed-loop c64 rate against a null server (perf.endpoint_bench's)
   and against A's embedding /healthz, next to the rates measured.
4. Weighted share. An embedding service alone, on the default settings, with two named API keys, `fast`
   (weight 4) and `bulk` (1), both kept backlogged: `fast` short texts (16 a request, 16 workers), `bulk`
   ~120-token ones (64 a request, 4 workers), every text new. `fast`'s share of
   embedding_lane_tokens_total over a window after a warm-up (its weight entitles it to 0.80).

Writes perf/results/<UTC timestamp>/lanes_bench.{json,md}.

`python -m perf.lanes_bench [--quick] [--out DIR]`"""

import argparse
import asyncio
import itertools
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import numpy as np
import orjson

from embedding_service.lanes import ANONYMOUS
from perf.endpoint_bench import HEALTHZ, TIMEOUT_S, Started, closed_run, counter, ms, started
from perf.heads_bench import wait_for_heads
from perf.loadgen import Connection, http_request
from perf.sentences import SENTENCES
from stack import services as stack_services
from stack.procs import LOOPBACK, free_port
from stack.services import DEFAULT_HEAD, DEFAULT_HEADS_ROOT, ROOT, Service

if TYPE_CHECKING:
    from perf.report import Target

# perf.report imports TensorFlow: it is imported only once the load is over.

WEB, BULK, REPEATS = "web", "bulk-job", "repeats"  # OpenAI's `user`: flows of the anonymous lane
ORCHESTRATOR = stack_services.ORCHESTRATOR_LANE  # /classify's lane: the orchestrator's key
# The lanes whose metrics are read: the orchestrator's, and the keyless callers' (all of B's: one FIFO queue).
LANES = (ORCHESTRATOR, ANONYMOUS)
FAST, SLOW = "fast", "bulk"  # the weighted share's lanes: named API keys
SHARE_LANES = (FAST, SLOW)
SHARE_WEIGHTS = f"{ORCHESTRATOR}:4,{FAST}:4"  # the orchestrator's weight kept; `bulk` weighs 1, as any lane
SHARE_GOAL, SHARE_TOLERANCE = 0.8, 0.05
SENTENCES_PER_SLOW_TEXT = 8  # and a counter: about 120 tokens
CALLERS = 2  # concurrency of the interactive caller, and of /classify
BULK_WORKERS = 4
BULK_TEXTS = 256  # per bulk request
RETRY_CAP_S = 2.0  # the longest a bulk worker waits out a 429's Retry-After
ZIPF_S = 1.1
ZIPF_TEXTS = 10_000
ZIPF_SEED = 20261201
HIGH = 64  # the repeats' and the headroom runs' concurrency
HEADROOM_REQUESTS = 200_000  # per headroom run: it ends at its duration long before this
CACHE_COUNTERS = {
    "hits": "embedding_cache_hits_total",
    "misses": "embedding_cache_misses_total",
    "shared_in_flight": "embedding_inflight_shared_total",
    "evictions": "embedding_cache_evictions_total",
}


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
    xla: bool  # the embedding services' encoder XLA-compiled (quick: off, so they start in seconds)
    warm_s: float  # per stack: the callers and the flood together, not recorded
    alone_s: float  # (a) the callers alone
    flood_s: float  # (b) the flood sends this long; the callers run until its last answer
    bulk_s: float  # (c) the flood alone
    repeats: int  # requests per repeats run
    repeats_cap_s: float  # a bound on each repeats run, far above what it takes
    headroom_s: float  # each of the load client's headroom runs
    share_warm_s: float  # the weighted share: both lanes backlogged, not recorded
    share_s: float  # its window (its service's start and the last answers add a few seconds)


QUICK = Plan("quick", False, 1.0, 2.0, 3.0, 2.0, 800, 90.0, 1.0, 5.0, 20.0)
FULL = Plan("full", True, 5.0, 20.0, 30.0, 20.0, 10_000, 240.0, 4.0, 10.0, 60.0)


@dataclass(frozen=True)
class Policy:
    key: str
    title: str
    settings: Mapping[str, str]  # EMBEDDING_* overrides by lower-case name


A = Policy("a", "lanes on, cache on (its default size)", {"lanes": "true"})
B = Policy("b", "lanes off, cache off", {"lanes": "false", "cache_bytes": "0"})
# The API keys (`fast:<key>,bulk:<key>`, new each run) are added when its service is started. At a fifth of
# the encoder, bulk's four requests of 64 long texts queued at once can take longer than the default 30 s
# request timeout: the timeout is raised to the client's (a 504 would drop texts half computed).
W = Policy(
    "w",
    "two keyed lanes, fast:4 and bulk:1 (defaults otherwise)",
    {"lane_weights": SHARE_WEIGHTS, "request_timeout_s": f"{TIMEOUT_S:g}"},
)


def say(message: str) -> None:
    print(f"[lanes-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- services -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    embedding: Service
    head: Service
    orchestrator: Service


def embedding_service(plan: Plan, **settings: str) -> Service:
    return stack_services.embedding(
        free_port(),
        ROOT / "build" / "encoder",
        xla_cache_dir=str(ROOT / "build" / "xla-cache"),
        xla=str(plan.xla).lower(),
        log_level="warning",
        **settings,
    )


def pipeline(policy: Policy, plan: Plan, work: Path) -> Pipeline:
    """The three services on free ports, named <service>-<policy key>; the head serves the default head."""
    config_path = work / f"heads-{policy.key}.config"
    grpc_port, rest_port = free_port(), free_port()
    head = stack_services.head(grpc_port, rest_port, DEFAULT_HEADS_ROOT, config_path, heads=(DEFAULT_HEAD,))
    found = embedding_service(plan, **policy.settings)
    orchestrator = stack_services.orchestrator(
        free_port(), found.url, grpc_port, rest_port, log_level="warning", head_config_file=str(config_path)
    )
    return Pipeline(*(replace(s, name=f"{s.name}-{policy.key}") for s in (found, head, orchestrator)))


def record(up: Started) -> dict[str, Any]:
    """A started service's record, its keys hidden: they are made for the run, but need not be kept."""
    found = up.record()
    found["env"] = {k: "(hidden)" if k.endswith(("_KEY", "_KEYS")) else v for k, v in found["env"].items()}
    return found


@dataclass(frozen=True)
class Running:
    embedding: Started
    orchestrator: Started


@contextmanager
def running(found: Pipeline, logs: Path, records: dict[str, Any]) -> Iterator[Running]:
    """Starts the pipeline, checks one request on each route, stops it and records it in `records`."""
    with ExitStack() as stack:
        up = [stack.enter_context(started(s, logs)) for s in (found.head, found.embedding, found.orchestrator)]
        wait_for_heads(found.orchestrator.url, (DEFAULT_HEAD,))
        for url, body in (
            (f"{found.embedding.url}/v1/embeddings", {"input": SENTENCES[0], "user": WEB}),
            (f"{found.orchestrator.url}/classify", {"text": SENTENCES[0]}),
        ):
            response = httpx.post(url, json=body, timeout=30.0)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:500]}")
        yield Running(up[1], up[2])
    records.update({s.service.name: record(s) for s in up})


# --- noisy neighbour ----------------------------------------------------------------------------------


def new_texts() -> Iterator[str]:
    """Texts never sent before in this run: a sentence with a counter appended."""
    return (f"{SENTENCES[n % len(SENTENCES)]} #{n}" for n in itertools.count())


def slow_texts() -> Iterator[str]:
    """New texts of SENTENCES_PER_SLOW_TEXT consecutive sentences, a counter appended."""
    return (
        " ".join(SENTENCES[(n + k) % len(SENTENCES)] for k in range(SENTENCES_PER_SLOW_TEXT)) + f" #{n}"
        for n in itertools.count()
    )


def embeddings_body(texts: str | list[str], user: str) -> bytes:
    return orjson.dumps({"input": texts, "encoding_format": "base64", "user": user})


@dataclass
class Calls:
    latencies_s: list[float] = field(default_factory=list)  # of the 200s, from send
    outcomes: Counter[str] = field(default_factory=Counter)  # HTTP status or exception name


async def callers(port: int, make: Callable[[], bytes], done: asyncio.Event) -> Calls:
    """CALLERS keep-alive connections (opened with a /healthz first), each sending its next request when
    its last is answered, until `done` is set."""
    calls = Calls()
    connections = [Connection(LOOPBACK, port) for _ in range(CALLERS)]

    async def worker(connection: Connection) -> None:
        while not done.is_set():
            request = make()
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    status, _ = await connection.exchange(request)
                outcome = str(status)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                outcome = type(exc).__name__
            calls.outcomes[outcome] += 1
            if outcome == "200":
                calls.latencies_s.append(time.perf_counter() - sent)

    try:
        await asyncio.gather(*(c.exchange(HEALTHZ) for c in connections))
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    return calls


@dataclass
class Flood:
    texts: int = 0  # embedded: in requests answered 200 with every embedding
    latencies_s: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    retry_after_waited_s: float = 0.0
    wall_s: float = 0.0  # from the first send to the last answer


@dataclass(frozen=True)
class Sender:
    """A flood's shape: closed-loop workers, texts per request, and who they are."""

    workers: int = BULK_WORKERS
    texts: int = BULK_TEXTS  # per request
    user: str = BULK
    key: str | None = None  # a bearer key


async def flood(url: str, texts: Iterator[str], duration_s: float, sender: Sender = Sender()) -> Flood:
    """`sender.workers` workers, each sending a request of `sender.texts` new texts when its last is
    answered, for `duration_s`; a 429 waits out its Retry-After (at most RETRY_CAP_S) first. The queue
    holds its work until the last answer, so texts / wall time is the service's rate for it."""
    found = Flood()
    start = time.perf_counter()
    deadline = start + duration_s
    headers = {"content-type": "application/json"}
    if sender.key:
        headers["authorization"] = f"Bearer {sender.key}"
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                body = embeddings_body([next(texts) for _ in range(sender.texts)], sender.user)
                sent = time.perf_counter()
                try:
                    response = await client.post("/v1/embeddings", content=body, headers=headers)
                except httpx.HTTPError as exc:
                    found.outcomes[type(exc).__name__] += 1
                    continue
                outcome = str(response.status_code)
                if outcome == "200" and len(orjson.loads(response.content)["data"]) != sender.texts:
                    outcome = "200 short"
                found.outcomes[outcome] += 1
                if outcome == "200":
                    found.texts += sender.texts
                    found.latencies_s.append(time.perf_counter() - sent)
                elif outcome == "429":
                    wait = min(float(response.headers.get("retry-after", "1")), RETRY_CAP_S)
                    found.retry_after_waited_s += wait
                    await asyncio.sleep(wait)

        await asyncio.gather(*(worker() for _ in range(sender.workers)))
    found.wall_s = time.perf_counter() - start
    return found


async def lane_counts(client: httpx.AsyncClient, url: str, lanes: Sequence[str] = LANES) -> dict[str, float]:
    """The embedding service's per-lane counters, and its cache hits."""
    found = {"cache_hits": await counter(client, url, CACHE_COUNTERS["hits"])}
    for lane in lanes:
        label = f'lane="{lane}"'
        for key, name in (
            ("texts", "embedding_lane_texts_total"),
            ("tokens", "embedding_lane_tokens_total"),
            ("refusals", "embedding_lane_refusals_total"),
            ("queue_s", "embedding_lane_queue_seconds_sum"),
            ("queued", "embedding_lane_queue_seconds_count"),
        ):
            found[f"{lane}/{key}"] = await counter(client, url, name, label)
    return found


def lane_figures(before: dict[str, float], after: dict[str, float], lanes: Sequence[str] = LANES) -> dict[str, Any]:
    delta = {key: after[key] - before[key] for key in after}
    found = {
        lane: {
            "texts": delta[f"{lane}/texts"],
            "tokens": delta[f"{lane}/tokens"],
            "refusals": delta[f"{lane}/refusals"],
            "queued": delta[f"{lane}/queued"],
            "queue_mean_ms": delta[f"{lane}/queue_s"] / delta[f"{lane}/queued"] * 1e3
            if delta[f"{lane}/queued"]
            else None,
        }
        for lane in lanes
    }
    return {"cache_hits": delta["cache_hits"], "lanes": found}


def caller_figures(calls: Calls, wall_s: float) -> dict[str, Any]:
    return {
        "requests": sum(calls.outcomes.values()),
        "outcomes": dict(calls.outcomes),
        "errors": sum(n for outcome, n in calls.outcomes.items() if outcome != "200"),
        "per_s": len(calls.latencies_s) / wall_s,
        "latency_ms": ms(calls.latencies_s),
    }


def flood_figures(found: Flood) -> dict[str, Any]:
    return {
        "requests": sum(found.outcomes.values()),
        "outcomes": dict(found.outcomes),
        "refusals": found.outcomes["429"],
        "errors": sum(n for outcome, n in found.outcomes.items() if outcome not in {"200", "429"}),
        "texts": found.texts,
        "wall_s": found.wall_s,
        "texts_per_s": found.texts / found.wall_s,
        "retry_after_waited_s": found.retry_after_waited_s,
        "request_latency_ms": ms(found.latencies_s),
    }


async def phase(
    client: httpx.AsyncClient, up: Running, texts: Iterator[str], *, seconds: float, with_callers: bool, bulk: bool
) -> dict[str, Any]:
    """The callers (interactive and /classify) for `seconds`, the flood for `seconds`, or both, the
    callers then running until the flood's last answer."""
    url = up.embedding.service.url
    before = await lane_counts(client, url)
    done = asyncio.Event()

    def interactive() -> bytes:
        return http_request("POST", "/v1/embeddings", embeddings_body(next(texts), WEB))

    def classify() -> bytes:
        return http_request("POST", "/classify", orjson.dumps({"text": next(texts)}))

    pairs = ((up.embedding.port, interactive), (up.orchestrator.port, classify)) if with_callers else ()
    running_callers = [asyncio.create_task(callers(port, make, done)) for port, make in pairs]
    start = time.perf_counter()
    flooded = await flood(url, texts, seconds) if bulk else None
    if flooded is None:
        await asyncio.sleep(seconds)
    done.set()
    calls = await asyncio.gather(*running_callers)
    wall = time.perf_counter() - start
    found: dict[str, Any] = {"wall_s": wall, **lane_figures(before, await lane_counts(client, url))}
    if calls:
        found["interactive"], found["classify"] = (caller_figures(c, wall) for c in calls)
    if flooded is not None:
        found["bulk"] = flood_figures(flooded)
    return found


PHASES = (  # name, the plan's duration field, with the callers, with the flood
    ("alone", "alone_s", True, False),
    ("flood", "flood_s", True, True),
    ("bulk_alone", "bulk_s", False, True),
)


def _said(found: dict[str, Any]) -> str:
    parts = [
        f"{name} p50 {run['latency_ms']['p50'] or 0:.1f} ms, p99 {run['latency_ms']['p99'] or 0:.1f} ms, "
        f"{run['outcomes']}"
        for name in ("interactive", "classify")
        if (run := found.get(name))
    ]
    if bulk := found.get("bulk"):
        parts.append(f"bulk {bulk['texts_per_s']:.0f} texts/s, {bulk['outcomes']}")
    return "; ".join(parts) + f"; cache hits {found['cache_hits']:.0f}"


async def neighbour(policy: Policy, up: Running, texts: Iterator[str], plan: Plan) -> dict[str, Any]:
    """A warm-up (the callers and the flood, not recorded), then (a), (b) and (c)."""
    found: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30.0) as client:
        warm = await phase(client, up, texts, seconds=plan.warm_s, with_callers=True, bulk=True)
        say(f"{policy.key}, warm-up: {_said(warm)}")
        for name, duration, with_callers, bulk in PHASES:
            seconds = getattr(plan, duration)
            found[name] = await phase(client, up, texts, seconds=seconds, with_callers=with_callers, bulk=bulk)
            say(f"{policy.key}, {name}: {_said(found[name])}")
    return {**found, "summary": neighbour_summary(found)}


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return None if top is None or not bottom else top / bottom


def neighbour_summary(found: dict[str, Any]) -> dict[str, Any]:
    alone, flooded, bulk = found["alone"], found["flood"], found["bulk_alone"]
    summary: dict[str, Any] = {}
    for caller in ("interactive", "classify"):
        summary[caller] = {
            "alone_ms": alone[caller]["latency_ms"],
            "flood_ms": flooded[caller]["latency_ms"],
            "p99_ratio": _ratio(flooded[caller]["latency_ms"]["p99"], alone[caller]["latency_ms"]["p99"]),
            "errors": alone[caller]["errors"] + flooded[caller]["errors"],
        }
    summary["bulk"] = {
        "alone_texts_per_s": bulk["bulk"]["texts_per_s"],
        "flood_texts_per_s": flooded["bulk"]["texts_per_s"],
        "ratio": _ratio(flooded["bulk"]["texts_per_s"], bulk["bulk"]["texts_per_s"]),
        "refusals": flooded["bulk"]["refusals"] + bulk["bulk"]["refusals"],
        "errors": flooded["bulk"]["errors"] + bulk["bulk"]["errors"],
    }
    summary["cache_hits"] = sum(found[name]["cache_hits"] for name, *_ in PHASES)
    return summary


# --- repeats ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repeats:
    draws: list[int]  # text ranks in sending order: the first HIGH open closed_run's connections
    requests: list[bytes]  # by rank: one text per request

    @property
    def figures(self) -> dict[str, Any]:
        distinct = len(set(self.draws))
        return {
            "zipf_s": ZIPF_S,
            "texts": ZIPF_TEXTS,
            "seed": ZIPF_SEED,
            "sent": len(self.draws),
            "distinct_sent": distinct,
            # What an exact cache that kept everything, with no two misses of one text in flight, would hit.
            "ideal_hit_rate": 1 - distinct / len(self.draws),
        }


def repeats_workload(requests: int) -> Repeats:
    """`requests` measured draws and HIGH opening ones, Zipf(ZIPF_S) over ZIPF_TEXTS distinct texts
    (a sentence and its rank's number), rank 1 the most frequent."""
    weights = 1.0 / np.arange(1, ZIPF_TEXTS + 1) ** ZIPF_S
    ranks = np.random.default_rng(ZIPF_SEED).choice(ZIPF_TEXTS, size=requests + HIGH, p=weights / weights.sum())
    texts = [f"{SENTENCES[k % len(SENTENCES)]} [{k // len(SENTENCES)}]" for k in range(ZIPF_TEXTS)]
    bodies = [http_request("POST", "/v1/embeddings", embeddings_body(text, REPEATS)) for text in texts]
    return Repeats([int(k) for k in ranks], bodies)


async def repeats_run(embedding: Started, work: Repeats, plan: Plan) -> dict[str, Any]:
    """The draws in order, at c64 (closed_run; its opening requests are the first HIGH draws), with the
    cache counters read around the run."""
    url = embedding.service.url
    sequence = iter(work.draws)

    def make(_: int) -> bytes:
        return work.requests[next(sequence)]

    async with httpx.AsyncClient(timeout=30.0) as client:
        before = {key: await counter(client, url, name) for key, name in CACHE_COUNTERS.items()}
        samples, usage = await closed_run(
            embedding.port,
            make,
            pid=embedding.pid,
            concurrency=HIGH,
            requests=len(work.draws) - HIGH,
            duration_s=plan.repeats_cap_s,
        )
        cache = {key: await counter(client, url, name) - before[key] for key, name in CACHE_COUNTERS.items()}
        cache["bytes"] = await counter(client, url, "embedding_cache_bytes")
    ok = [s.service_s for s in samples if s.outcome == "200"]
    outcomes = Counter(s.outcome for s in samples)
    return {
        "requests": len(samples),
        "outcomes": dict(outcomes),
        "errors": len(samples) - len(ok),
        "wall_s": usage.wall_s,
        "throughput_per_s": len(ok) / usage.wall_s,
        "latency_ms": ms(ok),
        "cache": cache,
        "hit_rate": _ratio(cache["hits"], cache["hits"] + cache["misses"]),
    }


# --- the load client's headroom -----------------------------------------------------------------------


def headroom_phase(
    embedding: Started, work: Repeats, plan: Plan, logs: Path, records: dict[str, Any]
) -> dict[str, Any]:
    """The repeats' client at c64 against the null server (every request answered at once, with a 429)
    and against the embedding service's GET /healthz."""
    port = free_port()
    null = Service("null-server", "perf.endpoint_bench", f"http://{LOOPBACK}:{port}", "/", ("--null-server", str(port)))
    request = work.requests[0]
    found: dict[str, Any] = {}
    with started(null, logs) as server:
        found["null_server"] = asyncio.run(_headroom_run(port, lambda _: request, server.pid, plan))
    records[null.name] = server.record()
    found["healthz"] = asyncio.run(_headroom_run(embedding.port, lambda _: HEALTHZ, embedding.pid, plan))
    for name, run in found.items():
        say(f"headroom, {name}: {run['requests_per_s']:.0f}/s, client {run['client_us_per_request']:.0f} us each")
    return found


async def _headroom_run(port: int, make: Callable[[int], bytes], pid: int, plan: Plan) -> dict[str, Any]:
    samples, usage = await closed_run(
        port, make, pid=pid, concurrency=HIGH, requests=HEADROOM_REQUESTS, duration_s=plan.headroom_s
    )
    return {
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "requests_per_s": len(samples) / usage.wall_s,
        "latency_ms": ms([s.service_s for s in samples]),
        "client_us_per_request": usage.client_cpu_s / len(samples) * 1e6,
    }


# --- the weighted share ------------------------------------------------------------------------------


async def shares_run(embedding: Started, keys: Mapping[str, str], plan: Plan) -> dict[str, Any]:
    """Both keyed lanes flooding from the start to past the window's end, so that both stay backlogged
    through it: a warm-up, then the window, read from the service's per-lane counters."""
    url = embedding.service.url
    senders = {
        FAST: (Sender(workers=16, texts=16, user=FAST, key=keys[FAST]), new_texts()),
        SLOW: (Sender(workers=4, texts=64, user=SLOW, key=keys[SLOW]), slow_texts()),
    }
    duration_s = plan.share_warm_s + plan.share_s + 1.0  # the second: reading the counters
    floods = [asyncio.create_task(flood(url, texts, duration_s, sender)) for sender, texts in senders.values()]
    async with httpx.AsyncClient(timeout=30.0) as client:
        await asyncio.sleep(plan.share_warm_s)
        before = await lane_counts(client, url, SHARE_LANES)
        start = time.perf_counter()
        await asyncio.sleep(plan.share_s)
        found = lane_figures(before, await lane_counts(client, url, SHARE_LANES), SHARE_LANES)
        found["wall_s"] = time.perf_counter() - start
    for lane, flooded in zip(senders, await asyncio.gather(*floods), strict=True):
        sender = senders[lane][0]
        found["lanes"][lane] |= {
            "sender": {"workers": sender.workers, "texts_per_request": sender.texts},
            "tokens_per_text": _ratio(found["lanes"][lane]["tokens"], found["lanes"][lane]["texts"]),
            "run": flood_figures(flooded),  # the whole run, warm-up and tail included
        }
    fast, slow = (found["lanes"][lane]["tokens"] for lane in SHARE_LANES)
    found["fast_share"] = share = _ratio(fast, fast + slow)
    say(
        f"weighted share: {FAST} {'n/a' if share is None else f'{share:.3f}'} of the tokens; "
        + "; ".join(f"{lane} {f['tokens']:.0f} tokens, {f['run']['outcomes']}" for lane, f in found["lanes"].items())
    )
    return found


def shares_phase(plan: Plan, logs: Path, records: dict[str, Any]) -> dict[str, Any]:
    keys = {lane: secrets.token_urlsafe(24) for lane in SHARE_LANES}
    service = embedding_service(plan, api_keys=",".join(f"{lane}:{key}" for lane, key in keys.items()), **W.settings)
    service = replace(service, name=f"{service.name}-{W.key}")
    with started(service, logs) as up:
        found = asyncio.run(shares_run(up, keys, plan))
    records[service.name] = record(up)
    return found


# --- the report ---------------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list["Target"]:
    from perf.report import Target, at_least, at_most

    a, b = (results["stacks"][key]["summary"] for key in (A.key, B.key))
    repeats, head, share = results["repeats"], results["headroom"], results["shares"]["fast_share"]

    def info(name: str, value: float | None) -> Target:
        return Target(name, value, "-", None)

    def within(name: str, value: float | None, goal: float, tolerance: float) -> Target:
        met = None if value is None else abs(value - goal) <= tolerance
        return Target(name, value, f"{goal:g} ± {tolerance:g}", met)

    def errors(summary: dict[str, Any]) -> int:
        return int(summary["interactive"]["errors"] + summary["classify"]["errors"])

    fastest = max(repeats[A.key]["throughput_per_s"], repeats[B.key]["throughput_per_s"])
    return [
        at_most("A, under the flood: interactive p99 (ms)", a["interactive"]["flood_ms"]["p99"], 250),
        info("B (lanes off), under the flood: interactive p99 (ms)", b["interactive"]["flood_ms"]["p99"]),
        at_most("A, under the flood: /classify p99 (ms)", a["classify"]["flood_ms"]["p99"], 300),
        info("B (lanes off), under the flood: /classify p99 (ms)", b["classify"]["flood_ms"]["p99"]),
        at_least("A: bulk texts/s under the flood / alone", a["bulk"]["ratio"], 0.6),
        info("B (lanes off): bulk texts/s under the flood / alone", b["bulk"]["ratio"]),
        at_most("A: interactive and /classify errors, alone and under the flood", errors(a), 0),
        info("B (lanes off): interactive and /classify errors", errors(b)),
        at_most("A: bulk errors other than 429", a["bulk"]["errors"], 0),
        info("B (lanes off): bulk errors other than 429", b["bulk"]["errors"]),
        info("A: bulk 429s", a["bulk"]["refusals"]),
        info("B (lanes off): bulk 429s", b["bulk"]["refusals"]),
        info("A: interactive p99, under the flood / alone", a["interactive"]["p99_ratio"]),
        info("B (lanes off): interactive p99, under the flood / alone", b["interactive"]["p99_ratio"]),
        info("A: /classify p99, under the flood / alone", a["classify"]["p99_ratio"]),
        info("B (lanes off): /classify p99, under the flood / alone", b["classify"]["p99_ratio"]),
        at_least("repeats (Zipf, c64): cache on / cache off, requests/s", repeats["throughput_ratio"], 2.0),
        info("repeats: cache hit rate (A)", repeats[A.key]["hit_rate"]),
        at_least(
            f"load client: null-server c{HIGH} rate / fastest measured rate ({fastest:.0f}/s)",
            head["null_server"]["requests_per_s"] / fastest,
            3.0,
        ),
        info(
            "load client: embedding /healthz c64 rate / fastest measured rate",
            head["healthz"]["requests_per_s"] / fastest,
        ),
        within(
            f"weighted share: {FAST} (weight 4)'s share of the tokens, {SLOW} (1) beside it",
            share,
            SHARE_GOAL,
            SHARE_TOLERANCE,
        ),
    ]


def _as_target(found: dict[str, Any]) -> "Target":
    from perf.report import Target

    return Target(**found)


def _side_by_side(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    from perf.report import num

    rows: list[tuple[str, tuple[str, ...]]] = []  # a figure's name, and its path in a stack's summary
    for caller, title in (("interactive", f"interactive (/v1/embeddings, user {WEB})"), ("classify", "/classify")):
        rows += [
            (f"{title}: p50 alone (ms)", (caller, "alone_ms", "p50")),
            (f"{title}: p99 alone (ms)", (caller, "alone_ms", "p99")),
            (f"{title}: p50 under the flood (ms)", (caller, "flood_ms", "p50")),
            (f"{title}: p99 under the flood (ms)", (caller, "flood_ms", "p99")),
            (f"{title}: p99 under the flood / alone", (caller, "p99_ratio")),
            (f"{title}: errors", (caller, "errors")),
        ]
    rows += [
        ("bulk: texts/s alone", ("bulk", "alone_texts_per_s")),
        ("bulk: texts/s under the flood", ("bulk", "flood_texts_per_s")),
        ("bulk: under the flood / alone", ("bulk", "ratio")),
        ("bulk: 429s", ("bulk", "refusals")),
        ("bulk: errors other than 429", ("bulk", "errors")),
        ("cache hits over the three phases (every text new: 0)", ("cache_hits",)),
    ]

    def value(summary: dict[str, Any], path: tuple[str, ...]) -> str:
        found: Any = summary
        for key in path:
            found = found[key]
        return str(found) if isinstance(found, int) else num(found)

    return [
        f"| figure | A: {A.title} | B: {B.title} |",
        "|---|---:|---:|",
        *(f"| {name} | {value(a, path)} | {value(b, path)} |" for name, path in rows),
    ]


def _lane_rows(stacks: dict[str, Any]) -> list[str]:
    from perf.report import num

    return [
        "| stack | phase | lane | texts | refusals | mean queue wait ms |",
        "|---|---|---|---:|---:|---:|",
        *(
            f"| {key.upper()} | {name} | {lane} | {figures['texts']:.0f} | {figures['refusals']:.0f} | "
            f"{num(figures['queue_mean_ms'])} |"
            for key, stack in stacks.items()
            for name, *_ in PHASES
            for lane, figures in stack[name]["lanes"].items()
            if figures["texts"] or figures["refusals"]
        ),
    ]


def _counts(stack: dict[str, Any]) -> str:
    def requests(name: str, who: str) -> str:
        return str(stack[name][who]["requests"]) if who in stack[name] else "-"

    return ", ".join(
        f"{name}: interactive {requests(name, 'interactive')}, /classify {requests(name, 'classify')}, "
        f"bulk {requests(name, 'bulk')}"
        for name, *_ in PHASES
    )


def _shares_lines(shares: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    from perf.report import num

    return [
        f"An embedding service alone ({W.title}: EMBEDDING_LANE_WEIGHTS={SHARE_WEIGHTS}, EMBEDDING_API_KEYS "
        f"`{FAST}:<key>,{SLOW}:<key>`), both lanes flooding: closed-loop workers, each sending its next request "
        f"when its last is answered, every text new. After {plan['share_warm_s']:g} s of warm-up, the lanes' "
        f"counters over {plan['share_s']:g} s, with both still sending. `{FAST}`'s share of the tokens: "
        f"**{num(shares['fast_share'], 3)}** (its weight entitles it to {SHARE_GOAL:g}).",
        "",
        "| lane | workers | texts per request | texts | tokens | tokens per text | tokens/s | mean queue wait ms "
        "| requests (whole run) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *(
            f"| {lane} | {f['sender']['workers']} | {f['sender']['texts_per_request']} | {f['texts']:.0f} | "
            f"{f['tokens']:.0f} | {num(f['tokens_per_text'], 1)} | {f['tokens'] / shares['wall_s']:.0f} | "
            f"{num(f['queue_mean_ms'])} | {f['run']['outcomes']} |"
            for lane, f in shares["lanes"].items()
        ),
        "",
        f"Cache hits in the window (every text new: 0): {shares['cache_hits']:.0f}.",
    ]


def markdown(report: dict[str, Any]) -> str:
    from perf.report import headroom_table, num, run_line, services_table, targets_table

    results, plan = report["results"], report["settings"]["plan"]
    stacks, repeats, head = results["stacks"], results["repeats"], results["headroom"]
    work = repeats["workload"]
    lines = [
        f"# Fair lanes and the embedding cache ({plan['mode']} mode)",
        "",
        f"{run_line(report, plan['xla'])} Compare inside one run, not across runs: the machine is shared.",
        "",
        "## Targets",
        "",
        *targets_table([_as_target(t) for t in results["targets"]]),
        "",
        "## Noisy neighbour",
        "",
        f"Two pipelines, one after the other: A, {A.title}; B, {B.title} (one FIFO queue, the old policy). "
        f"On each: (a) the callers alone for {plan['alone_s']:g} s: an interactive caller (c{CALLERS}, one text "
        f"per request to /v1/embeddings, user `{WEB}`) and /classify (c{CALLERS}, one text; the orchestrator's "
        f"lane, `{ORCHESTRATOR}`, by its key); (b) the same under a bulk flood ({BULK_WORKERS} workers, each "
        f"sending its next request of {BULK_TEXTS} texts, user `{BULK}`, when its last is answered, for "
        f"{plan['flood_s']:g} s; "
        f"a 429 waits out its Retry-After, at most {RETRY_CAP_S:g} s; the callers run on until the flood's last "
        f"answer); (c) the flood alone for {plan['bulk_s']:g} s. Neither the interactive caller nor the flood "
        f"has a key: their `user`s are flows of the `{ANONYMOUS}` lane. Every text is new (a counter appended), "
        "so the cache answers none. Latencies from send, of the 200s; bulk texts/s: texts embedded over the time "
        "from the first send to the last answer.",
        "",
        *_side_by_side(stacks[A.key]["summary"], stacks[B.key]["summary"]),
        "",
        f"Requests. A: {_counts(stacks[A.key])}. B: {_counts(stacks[B.key])}.",
        "",
        f"Per lane ({', '.join(LANES)}), from the embedding service's own counters (embedding_lane_texts_total, "
        "embedding_lane_refusals_total, embedding_lane_queue_seconds), over each phase (lanes with no "
        "texts left out):",
        "",
        *_lane_rows({key: stacks[key] for key in (A.key, B.key)}),
        "",
        "## Repeats",
        "",
        f"Zipf draws (s = {work['zipf_s']:g}, seed {work['seed']}) over {work['texts']:,} distinct texts (a "
        f"sentence and a number), one text per request at c{HIGH}: {work['sent']:,} requests (the first {HIGH} "
        f"open the connections, unmeasured) holding {work['distinct_sent']:,} distinct texts, so an exact cache "
        f"keeping everything would hit {work['ideal_hit_rate']:.1%}. The same sequence against A's embedding "
        f"service (cache on) and B's ({B.title}). Cache counts: deltas of the service's counters over the run.",
        "",
        "| service | requests/s | p50 ms | p99 ms | errors | hits | misses | shared in flight | evictions | "
        "hit rate | cache bytes after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {key.upper()}: {title} | {r['throughput_per_s']:.1f} | {num(r['latency_ms']['p50'])} | "
            f"{num(r['latency_ms']['p99'])} | {r['errors']} | {r['cache']['hits']:.0f} | {r['cache']['misses']:.0f} | "
            f"{r['cache']['shared_in_flight']:.0f} | {r['cache']['evictions']:.0f} | {num(r['hit_rate'], 3)} | "
            f"{r['cache']['bytes']:.0f} |"
            for key, title in ((A.key, A.title), (B.key, B.title))
            if (r := repeats[key])
        ),
        "",
        f"Cache on / cache off, requests/s: {num(repeats['throughput_ratio'])}.",
        "",
        "## The load client's headroom",
        "",
        f"The repeats' client, closed loop c{HIGH}: against the null server (perf.endpoint_bench's: answers "
        "every request at once, with a 429) and A's embedding /healthz. Next to it, the rates measured: repeats "
        f"{repeats[A.key]['throughput_per_s']:.0f}/s (A) and {repeats[B.key]['throughput_per_s']:.0f}/s (B).",
        "",
        *headroom_table(head),
        "",
        "## Weighted share",
        "",
        *_shares_lines(results["shares"], plan),
        "",
        "## Services",
        "",
        *services_table(results["services"]),
        "",
    ]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------


def run_bench(plan: Plan, out: Path) -> dict[str, Any]:
    logs = out / "logs"
    texts = new_texts()
    work = repeats_workload(plan.repeats)
    records: dict[str, Any] = {}
    stacks: dict[str, Any] = {}
    repeats: dict[str, Any] = {"workload": work.figures}
    with tempfile.TemporaryDirectory(prefix="lanes-bench-") as folder:
        for policy in (A, B):
            with running(pipeline(policy, plan, Path(folder)), logs, records) as up:
                stacks[policy.key] = {
                    "title": policy.title,
                    "settings": dict(policy.settings),
                    **asyncio.run(neighbour(policy, up, texts, plan)),
                }
                repeats[policy.key] = asyncio.run(repeats_run(up.embedding, work, plan))
                done = repeats[policy.key]
                say(f"{policy.key}, repeats: {done['throughput_per_s']:.0f}/s, {done['outcomes']}, {done['cache']}")
                if policy is A:
                    headroom = headroom_phase(up.embedding, work, plan, logs, records)
    shares = shares_phase(plan, logs, records)
    repeats["throughput_ratio"] = repeats[A.key]["throughput_per_s"] / repeats[B.key]["throughput_per_s"]
    return {"services": records, "stacks": stacks, "repeats": repeats, "headroom": headroom, "shares": shares}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, fewer requests, no XLA: a few minutes")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    plan = QUICK if args.quick else FULL
    started_at = datetime.now(UTC)
    out: Path = args.out or ROOT / "perf" / "results" / started_at.strftime("%Y%m%d-%H%M%S")
    results = run_bench(plan, out)
    from perf.report import run_header, write_report

    report: dict[str, Any] = {
        **run_header("perf.lanes_bench", argv if argv is not None else sys.argv[1:], started_at),
        "settings": {
            "plan": asdict(plan),
            "policies": {p.key: {"title": p.title, "embedding_settings": dict(p.settings)} for p in (A, B, W)},
            "users": {"interactive": WEB, "bulk": BULK},  # flows of the anonymous lane
            "lanes": {"orchestrator": ORCHESTRATOR, "keyless": ANONYMOUS, "weighted_share": list(SHARE_LANES)},
            "callers_concurrency": CALLERS,
            "bulk": {"workers": BULK_WORKERS, "texts_per_request": BULK_TEXTS, "retry_after_cap_s": RETRY_CAP_S},
            "repeats_concurrency": HIGH,
        },
        "results": results,
    }
    results["targets"] = [asdict(t) for t in targets(results)]
    write_report(out, "lanes_bench", report, markdown(report))
    say(f"wrote {out}/lanes_bench.json and lanes_bench.md")


if __name__ == "__main__":
    main()
