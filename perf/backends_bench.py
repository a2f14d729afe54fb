"""The embedding service's encoder backends side by side, served and in-process, in one run:

1. Served. Stacks started one after the other, each alone on the machine (the last stopped before the next
   starts), every one with the embedding cache off (EMBEDDING_CACHE_BYTES=0) and log level warning:
   `today` (EMBEDDING_BACKEND=tensorflow, XLA on with the build/xla-cache compile cache,
   EMBEDDING_GROUP_WINDOW=0: batches in arrival order, the old path); `openvino` (EMBEDDING_BACKEND=openvino,
   every other setting at its default: group window 512); `openvino-1-thread` (as openvino with
   EMBEDDING_ENCODER_THREADS=1; full mode only, on the 32-text and single c64 workloads: the thread-count
   choice); and `infinity` when `--infinity FILE` is given (see below). Each stack's time to ready (start to
   the first 200 from its ready path) and, for ours, the runtime GET /v1/models reports. On each, the
   workloads, each closed loop (perf.endpoint_bench.closed_run: keep-alive connections, each sending its
   next request when its last is answered) after an unrecorded warm-up run of the same workload:
   single_c1, single_c16 and single_c64 (one short text per request at c1, c16, c64), batch32_c16 (32 short
   texts per request at c16) and mixed_c64 (one text per request at c64, three short ones to one long one,
   in sending order). Short texts are perf.sentences.SENTENCES with a counter appended (perf.lanes_bench's
   new_texts); long ones nine consecutive sentences with a counter appended (about 130 tokens): every text
   sent in the run is new, so nothing could be cached. Every body is OpenAI's {"model": ..., "input": ...},
   the model the stack names. Per run: requests, outcomes (each HTTP status or exception), texts/s,
   latency p50/p99 from send (of the 200s), the server's CPU (/proc/<pid>/stat) and, for ours, the padding
   efficiency: the deltas of embedding_tokens_total over embedding_padded_tokens_total across the run.
2. The load client's headroom: the same client at c64 (one new text per request) against perf.endpoint_bench's
   null server, over the fastest request rate measured.
3. In-process, once the stacks have stopped: each backend's encoder from embedding_service.backend_choice.load_encoder
   (max batch size 32, every core; TensorFlow XLA-compiled), 2,048 short texts tokenised with the service's
   tokenizer, timed at batch 1 and batch 32 in arrival order, and at batch 32 sorted by length first (the
   batches the length-grouping batcher forms from a queue of them), after a warm-up; beside it the FLOP
   bound (perf.ceiling: the machine's fp32 matmul rate over the encoder's matmul FLOPs per text) at the
   texts' real lengths and at the lengths each batch was padded to.

Infinity: FILE is JSON {"command": [...], "env": {...}, "model": "<id>", "ready_path": "/models"}, the
command (with a literal `{port}`) starting Infinity from its own venv; it runs as a subprocess (its own
log), is ready when ready_path answers 200, gets the same workloads on POST /embeddings and is stopped by
PID. Its server CPU is its main process's only.

Quick mode (for the test; its figures mean nothing): short runs, no openvino-1-thread, and `today` with
EMBEDDING_MAX_BATCH_SIZE=4, so that it XLA-compiles half the shapes at its start.

Writes perf/results/<UTC timestamp>/backends_bench.{json,md}.

`python -m perf.backends_bench [--quick] [--out DIR] [--infinity FILE]`"""

import argparse
import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import orjson

from embedding_service.backend_choice import load_encoder
from embedding_service.encoder import Backend, Encoder, IntArray
from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
from embedding_service.settings import EmbeddingSettings, use_xla_cache
from perf.endpoint_bench import Started, Usage, closed_run, counter, ms, started
from perf.lanes_bench import new_texts
from perf.loadgen import http_request
from perf.openloop import Sample
from perf.sentences import SENTENCES, distinct_batches
from stack import services as stack_services
from stack.procs import LOOPBACK, free_port, rss_mb, server_env, stop, wait_until_ok
from stack.services import ROOT, Service

if TYPE_CHECKING:
    from embedding_service.tokenizer import Tokenizer
    from perf.ceiling import EncoderShape
    from perf.report import Target

# perf.report and perf.ceiling import TensorFlow, and the tokenizer transformers: imported once the load is over.

ENCODER_DIR = ROOT / "build" / "encoder"
XLA_CACHE_DIR = ROOT / "build" / "xla-cache"
OURS_PATH, INFINITY_PATH = "/v1/embeddings", "/embeddings"
MAX_REQUESTS = 100_000_000  # per run: every run ends at its duration long before this
LONG_SENTENCES = 9  # consecutive sentences in a long text: about 130 tokens (the report counts them)
MIXED_EVERY = 4  # mixed_c64: every fourth request sent holds a long text
HEADROOM_CONCURRENCY = 64
IN_PROCESS_TEXTS = 2048
# (key, batch size, texts sorted by length first): arrival order, and as the length-grouping batcher forms
# batches out of a queue of them (the run the FLOP-bound target reads).
IN_PROCESS_RUNS = (("batch_1", 1, False), ("batch_32", 32, False), ("batch_32_by_length", 32, True))
READY_TIMEOUT_S = 600.0
COMMON = {"cache_bytes": "0", "log_level": "warning"}  # every one of our stacks


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
    warm_s: float  # the unrecorded run before each workload, after its opening requests (0: those alone)
    run_s: float  # each recorded workload run
    today_max_batch_size: int | None  # quick: 4, so `today` XLA-compiles half the shapes at start-up
    thread_choice: bool  # the openvino-1-thread stack
    headroom_s: float
    in_process_warm_s: float  # per backend and batch size, after each batch shape has run once
    in_process_s: float  # each in-process timing


QUICK = Plan("quick", 0.0, 2.0, 4, False, 1.5, 0.3, 1.0)
FULL = Plan("full", 3.0, 20.0, None, True, 4.0, 2.0, 10.0)


@dataclass(frozen=True)
class Workload:
    key: str
    concurrency: int
    texts_per_request: int
    mixed: bool  # one text per request, three short to one long


SINGLE_C64 = Workload("single_c64", 64, 1, False)
WORKLOADS = (
    Workload("single_c1", 1, 1, False),
    Workload("single_c16", 16, 1, False),
    SINGLE_C64,
    Workload("batch32_c16", 16, 32, False),
    Workload("mixed_c64", 64, 1, True),
)
EVERY_WORKLOAD = tuple(w.key for w in WORKLOADS)


@dataclass(frozen=True)
class Stack:
    key: str
    title: str
    settings: Mapping[str, str]  # EMBEDDING_* overrides by lower-case name, beside COMMON (ours only)
    workloads: tuple[str, ...]


OPENVINO = Stack(
    "openvino", "OpenVINO, every core, group window 512 (the defaults)", {"backend": "openvino"}, EVERY_WORKLOAD
)
ONE_THREAD = Stack(
    "openvino-1-thread",
    "OpenVINO, one encoder thread",
    {"backend": "openvino", "encoder_threads": "1"},
    ("single_c64", "batch32_c16"),
)
INFINITY = Stack("infinity", "Infinity (--infinity FILE)", {}, EVERY_WORKLOAD)


def today(plan: Plan) -> Stack:
    settings = {"backend": "tensorflow", "xla": "true", "xla_cache_dir": str(XLA_CACHE_DIR), "group_window": "0"}
    if plan.today_max_batch_size is not None:
        settings["max_batch_size"] = str(plan.today_max_batch_size)
    return Stack("today", "TensorFlow, XLA, batches in arrival order (the old path)", settings, EVERY_WORKLOAD)


@dataclass(frozen=True)
class InfinitySpec:
    command: tuple[str, ...]  # holds `{port}`
    env: Mapping[str, str]
    model: str
    ready_path: str

    @classmethod
    def read(cls, path: Path) -> "InfinitySpec":
        found = json.loads(path.read_text(encoding="utf-8"))
        command = tuple(str(part) for part in found["command"])
        if not any("{port}" in part for part in command):
            raise ValueError(f"{path}: the command holds no literal {{port}}")
        env = {str(k): str(v) for k, v in found.get("env", {}).items()}
        return cls(command, env, str(found["model"]), str(found.get("ready_path", "/models")))


def say(message: str) -> None:
    print(f"[backends-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- texts --------------------------------------------------------------------------------------------


def long_text(n: int) -> str:
    return " ".join(SENTENCES[(n + k) % len(SENTENCES)] for k in range(LONG_SENTENCES)) + f" #{n}"


class Texts:
    """The run's texts, each new: short and long ones in turn from their own counters, counted as they go,
    so that those sent can be made again and tokenised once the load is over."""

    def __init__(self) -> None:
        self._short = new_texts()
        self._long = map(long_text, itertools.count())
        self.sent: Counter[str] = Counter()

    def short(self) -> str:
        self.sent["short"] += 1
        return next(self._short)

    def long(self) -> str:
        self.sent["long"] += 1
        return next(self._long)


def requests_of(workload: Workload, texts: Texts, path: str, model: str) -> Callable[[int], bytes]:
    """The workload's next request, whatever closed_run's index: the mix follows the order of sending, not
    the connection, so each connection's requests take turns at being long."""
    sent = itertools.count()

    def make(_: int) -> bytes:
        n = next(sent)
        inputs: str | list[str]
        if workload.texts_per_request > 1:
            inputs = [texts.short() for _ in range(workload.texts_per_request)]
        elif workload.mixed and n % MIXED_EVERY == MIXED_EVERY - 1:
            inputs = texts.long()
        else:
            inputs = texts.short()
        return http_request("POST", path, orjson.dumps({"model": model, "input": inputs}))

    return make


# --- stacks -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    up: Started
    path: str  # where embeddings are posted
    model: str
    runtime: dict[str, Any] | None  # GET /v1/models' data[0].runtime: ours only
    command: tuple[str, ...] | None = None  # Infinity's (ours: python -m embedding_service)

    def record(self) -> dict[str, Any]:
        found = self.up.record()
        return found if self.command is None else {**found, "command": list(self.command)}


@contextmanager
def ours(stack: Stack, logs: Path) -> Iterator[Endpoint]:
    """The embedding service with COMMON and the stack's settings, named embedding-<stack key>."""
    service = stack_services.embedding(free_port(), ENCODER_DIR, **COMMON, **stack.settings)
    with started(replace(service, name=f"embedding-{stack.key}"), logs) as up:
        card = httpx.get(f"{service.url}/v1/models", timeout=10.0).json()["data"][0]
        yield Endpoint(up, OURS_PATH, card["id"], card["runtime"])


@contextmanager
def infinity(spec: InfinitySpec, logs: Path) -> Iterator[Endpoint]:
    """Infinity on a free port (its log under `logs`), awaited until its ready path answers 200, always
    stopped by PID."""
    port = free_port()
    command = tuple(part.replace("{port}", str(port)) for part in spec.command)
    service = Service(INFINITY.key, command[0], f"http://{LOOPBACK}:{port}", spec.ready_path, command[1:], spec.env)
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{service.name}.log").open("wb") as log:
        proc = subprocess.Popen(command, env=server_env(spec.env), cwd=ROOT, stdout=log, stderr=log)
    try:
        ready_after = wait_until_ok(proc, service.ready_url, READY_TIMEOUT_S, poll_s=0.2)
        say(f"{service.name} ready after {ready_after:.1f}s (pid {proc.pid})")
        up = Started(service, proc.pid, ready_after, rss_mb(proc.pid))
        yield Endpoint(up, INFINITY_PATH, spec.model, None, command)
        up.loaded_rss_mb = rss_mb(proc.pid)
    finally:
        stop(proc)


def serving(stack: Stack, spec: InfinitySpec | None, logs: Path) -> AbstractContextManager[Endpoint]:
    if stack is INFINITY and spec is not None:
        return infinity(spec, logs)
    return ours(stack, logs)


def stacks_of(plan: Plan, spec: InfinitySpec | None) -> list[Stack]:
    return [
        today(plan),
        OPENVINO,
        *([ONE_THREAD] if plan.thread_choice else []),
        *([INFINITY] if spec is not None else []),
    ]


# --- the workloads ------------------------------------------------------------------------------------


async def token_counts(client: httpx.AsyncClient, endpoint: Endpoint) -> dict[str, float] | None:
    """Our service's counts of the tokens its encoder ran, real and padded; None for Infinity."""
    if endpoint.runtime is None:
        return None
    url = endpoint.up.service.url
    return {
        "real": await counter(client, url, "embedding_tokens_total"),
        "padded": await counter(client, url, "embedding_padded_tokens_total"),
    }


def run_figures(
    workload: Workload,
    samples: Sequence[Sample],
    usage: Usage,
    before: dict[str, float] | None,
    after: dict[str, float] | None,
) -> dict[str, Any]:
    ok = [s.service_s for s in samples if s.outcome == "200"]
    texts = len(ok) * workload.texts_per_request
    wall = usage.wall_s
    tokens = None if before is None or after is None else {key: after[key] - before[key] for key in after}
    return {
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "errors": len(samples) - len(ok),
        "wall_s": wall,
        "texts": texts,
        "texts_per_s": texts / wall,
        "requests_per_s": len(ok) / wall,
        "latency_ms": ms(ok),
        "server_cores": usage.service_cpu_s / wall,
        "server_core_ms_per_text": usage.service_cpu_s / texts * 1e3 if texts else None,
        "client_us_per_request": usage.client_cpu_s / len(samples) * 1e6 if samples else None,
        "tokens": tokens,
        "padding_efficiency": _ratio(tokens["real"], tokens["padded"]) if tokens else None,
    }


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return None if top is None or not bottom else top / bottom


async def measured(endpoint: Endpoint, workload: Workload, texts: Texts, seconds: float) -> dict[str, Any]:
    """One closed-loop run; the token counters read around it (its opening requests included)."""
    make = requests_of(workload, texts, endpoint.path, endpoint.model)
    async with httpx.AsyncClient(timeout=10.0) as client:
        before = await token_counts(client, endpoint)
        samples, usage = await closed_run(
            endpoint.up.port,
            make,
            pid=endpoint.up.pid,
            concurrency=workload.concurrency,
            requests=MAX_REQUESTS,
            duration_s=seconds,
        )
        after = await token_counts(client, endpoint)
    return run_figures(workload, samples, usage, before, after)


def _said(run: dict[str, Any]) -> str:
    latency = run["latency_ms"]
    padding = "" if run["padding_efficiency"] is None else f", padding efficiency {run['padding_efficiency']:.3f}"
    return (
        f"{run['texts_per_s']:.1f} texts/s, p50 {latency['p50'] or 0:.1f} ms, p99 {latency['p99'] or 0:.1f} ms, "
        f"{run['outcomes']}, server {run['server_cores']:.2f} cores{padding}"
    )


async def stack_runs(stack: Stack, endpoint: Endpoint, texts: Texts, plan: Plan) -> dict[str, Any]:
    """The stack's workloads in turn, each after an unrecorded warm-up run of its own."""
    runs: dict[str, Any] = {}
    for workload in (w for w in WORKLOADS if w.key in stack.workloads):
        await measured(endpoint, workload, texts, plan.warm_s)
        runs[workload.key] = await measured(endpoint, workload, texts, plan.run_s)
        say(f"{stack.key}, {workload.key}: {_said(runs[workload.key])}")
    return runs


# --- the load client's headroom -----------------------------------------------------------------------


def headroom_phase(texts: Texts, model: str, plan: Plan, logs: Path, records: dict[str, Any]) -> dict[str, Any]:
    """single_c64's requests (a new text each) at c64 against the null server, which answers every request
    at once, with a 429."""
    port = free_port()
    null = Service("null-server", "perf.endpoint_bench", f"http://{LOOPBACK}:{port}", "/", ("--null-server", str(port)))
    make = requests_of(SINGLE_C64, texts, OURS_PATH, model)
    with started(null, logs) as server:
        samples, usage = asyncio.run(
            closed_run(
                port,
                make,
                pid=server.pid,
                concurrency=HEADROOM_CONCURRENCY,
                requests=MAX_REQUESTS,
                duration_s=plan.headroom_s,
            )
        )
    records[null.name] = server.record()
    run = {
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "requests_per_s": len(samples) / usage.wall_s,
        "latency_ms": ms([s.service_s for s in samples]),
        "client_us_per_request": usage.client_cpu_s / len(samples) * 1e6,
    }
    say(f"headroom, null server: {run['requests_per_s']:.0f}/s, client {run['client_us_per_request']:.0f} us each")
    return {"null_server": run}


# --- in-process ---------------------------------------------------------------------------------------


def tokenizer() -> "Tokenizer":
    from embedding_service.tokenizer import Tokenizer

    return Tokenizer(ENCODER_DIR / TOKENIZER_DIR, EncoderManifest.read(ENCODER_DIR).max_seq_length)


def token_figures(tokens: "Tokenizer", sent: Mapping[str, int]) -> dict[str, Any]:
    """The texts the stacks were sent, made again and tokenised: their lengths, special tokens included."""
    made = {
        "short": list(itertools.islice(new_texts(), sent["short"])),
        "long": [long_text(n) for n in range(sent["long"])],
    }
    found: dict[str, Any] = {}
    for kind, texts in made.items():
        lengths = [len(t.ids) for t in tokens(texts)]
        found[kind] = {
            "texts": len(lengths),
            "mean_tokens": statistics.fmean(lengths),
            "min_tokens": min(lengths),
            "max_tokens": max(lengths),
        }
    return found


def time_batches(encoder: Encoder, batches: list[list[IntArray]], size: int, plan: Plan) -> dict[str, Any]:
    """One call of each batch shape the batches pad to (XLA compiles each), a warm-up, then the timing."""
    from perf.ceiling import time_calls

    buckets = encoder.buckets
    shapes = {(buckets.batch_size(len(b)), buckets.seq_length(max(len(ids) for ids in b))): b for b in batches}
    for batch in shapes.values():
        encoder(batch)
    cycled = itertools.cycle(batches)

    def call() -> object:
        return encoder(next(cycled))

    time_calls(call, MAX_REQUESTS, plan.in_process_warm_s, size)
    timed = time_calls(call, MAX_REQUESTS, plan.in_process_s, size)
    return {
        "shapes": len(shapes),
        "calls": timed.completed,
        "texts_per_s": timed.throughput_per_s,
        "call_ms": {"p50": timed.p50_ms, "p99": timed.p99_ms},
    }


def in_process_backend(backend: Backend, ids: list[IntArray], plan: Plan) -> dict[str, Any]:
    """The backend's encoder as the service loads it (every core), timed in each of IN_PROCESS_RUNS."""
    loading = time.perf_counter()
    encoder = load_encoder(backend, ENCODER_DIR, max_batch_size=32, threads=0, xla=True, mixed_precision=False)
    found: dict[str, Any] = {
        "device": encoder.device,
        "threads": encoder.threads,
        "xla": backend == "tensorflow",
        "load_s": time.perf_counter() - loading,
        "buckets": encoder.buckets,
    }
    for key, size, by_length in IN_PROCESS_RUNS:
        ordered = sorted(ids, key=len) if by_length else ids
        found[key] = time_batches(encoder, distinct_batches(ordered, size), size, plan)
    return found


def bounded(backend: Backend, found: dict[str, Any], ids: list[IntArray], shape: "EncoderShape", gflops: float) -> None:
    """Adds the FLOP bound at the texts' real lengths, and at the lengths each batch was padded to."""
    from perf.ceiling import flop_bounds

    buckets = found.pop("buckets")
    for key, size, by_length in IN_PROCESS_RUNS:
        lengths = [len(i) for i in (sorted(ids, key=len) if by_length else ids)]
        bounds = flop_bounds(shape, gflops, lengths, size, buckets)
        real, padded = bounds["unpadded"], bounds[f"padded as batch {size} ran"]
        done = found[key]
        done |= {
            "mean_tokens": real["mean_tokens"],
            "padded_mean_tokens": padded["mean_tokens"],
            "bound_texts_per_s": real["bound_texts_per_s"],
            "fraction_of_bound": done["texts_per_s"] / real["bound_texts_per_s"],
            "padded_bound_texts_per_s": padded["bound_texts_per_s"],
            "fraction_of_padded_bound": done["texts_per_s"] / padded["bound_texts_per_s"],
        }
        say(
            f"in-process {backend}, {key}: {done['texts_per_s']:.1f} texts/s, "
            f"{done['fraction_of_bound']:.3f} of the FLOP bound ({done['bound_texts_per_s']:.0f}/s), "
            f"padded to {done['padded_mean_tokens']:.1f} tokens on average"
        )


def in_process_phase(tokens: "Tokenizer", plan: Plan) -> dict[str, Any]:
    """Each backend in turn on the same tokenised short texts (OpenVINO before TensorFlow runs anything in
    this process), the matmul rate between them, and the FLOP bounds."""
    from perf.ceiling import EncoderShape, matmul_gflops

    ids = [t.ids for t in tokens(list(itertools.islice(new_texts(), IN_PROCESS_TEXTS)))]
    backends: dict[Backend, dict[str, Any]] = {"openvino": in_process_backend("openvino", ids, plan)}
    gflops = matmul_gflops()
    say(f"in-process: fp32 matmul {gflops:.0f} GFLOP/s")
    backends["tensorflow"] = in_process_backend("tensorflow", ids, plan)
    shape = EncoderShape.read(EncoderManifest.read(ENCODER_DIR))
    for backend, found in backends.items():
        bounded(backend, found, ids, shape, gflops)
    return {
        "texts": len(ids),
        "mean_tokens": statistics.fmean(len(i) for i in ids),
        "matmul_gflops": gflops,
        "model": asdict(shape),
        "backends": backends,
    }


# --- the report ---------------------------------------------------------------------------------------


def _fastest(stacks: dict[str, Any]) -> float:
    return float(max(run["requests_per_s"] for stack in stacks.values() for run in stack["runs"].values()))


def targets(results: dict[str, Any]) -> list["Target"]:
    from perf.report import Target, at_least, at_most

    stacks, backends = results["stacks"], results["in_process"]["backends"]
    ov, old = stacks[OPENVINO.key]["runs"], stacks["today"]["runs"]

    def info(name: str, value: float | None) -> Target:
        return Target(name, value, "-", None)

    def over(top: dict[str, Any], bottom: dict[str, Any], key: str) -> float | None:
        return _ratio(top[key]["texts_per_s"], bottom[key]["texts_per_s"])

    found = [
        at_least(
            "mixed_c64: padding efficiency, openvino (real / padded tokens)",
            ov["mixed_c64"]["padding_efficiency"],
            0.75,
        ),
        info("mixed_c64: padding efficiency, today", old["mixed_c64"]["padding_efficiency"]),
        at_least("mixed_c64: texts/s, openvino / today", over(ov, old, "mixed_c64"), 2.0),
        at_least(
            "batch32_c16: texts/s served (openvino) / in-process openvino at batch 32 (by length)",
            _ratio(ov["batch32_c16"]["texts_per_s"], backends["openvino"]["batch_32_by_length"]["texts_per_s"]),
            0.95,
        ),
    ]
    if INFINITY.key in stacks:
        other = stacks[INFINITY.key]["runs"]
        found += [
            at_least(f"{key}: texts/s, openvino / infinity", over(ov, other, key), goal)
            for key, goal in (("batch32_c16", 1.5), ("mixed_c64", 1.5), ("single_c64", 1.3))
        ]
    if ONE_THREAD.key in stacks:
        one = stacks[ONE_THREAD.key]["runs"]
        found += [info(f"{key}: texts/s, openvino 1 thread / every core", over(one, ov, key)) for key in one]
    found += [
        at_least(
            "in-process openvino, batch 32 by length: fraction of the FLOP bound (real lengths)",
            backends["openvino"]["batch_32_by_length"]["fraction_of_bound"],
            0.70,
        ),
        info(
            "in-process tensorflow (XLA), batch 32 in arrival order: fraction of the FLOP bound (real lengths)",
            backends["tensorflow"]["batch_32"]["fraction_of_bound"],
        ),
        at_most("openvino: time to ready (s)", stacks[OPENVINO.key]["ready_after_s"], 10.0),
        info("today: time to ready (s)", stacks["today"]["ready_after_s"]),
        at_least(
            f"load client: null-server c{HEADROOM_CONCURRENCY} rate / fastest measured rate "
            f"({_fastest(stacks):.0f} requests/s)",
            results["headroom"]["null_server"]["requests_per_s"] / _fastest(stacks),
            3.0,
        ),
        info(
            "non-200 answers, every recorded run of every stack",
            sum(run["errors"] for stack in stacks.values() for run in stack["runs"].values()),
        ),
    ]
    return found


def _as_target(found: dict[str, Any]) -> "Target":
    from perf.report import Target

    return Target(**found)


FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (  # a row's name, and its figure's path in a run
    ("texts/s", ("texts_per_s",)),
    ("p50 ms", ("latency_ms", "p50")),
    ("p99 ms", ("latency_ms", "p99")),
    ("requests", ("requests",)),
    ("outcomes", ("outcomes",)),
    ("server cores", ("server_cores",)),
    ("server core-ms per text", ("server_core_ms_per_text",)),
    ("padding efficiency", ("padding_efficiency",)),
)


def _cell(run: dict[str, Any] | None, path: tuple[str, ...]) -> str:
    from perf.report import num

    if run is None:
        return "-"
    found: Any = run
    for key in path:
        found = found[key]
    if isinstance(found, dict):
        return ", ".join(f"{outcome}: {n}" for outcome, n in sorted(found.items()))
    return str(found) if isinstance(found, int) else num(found, 3 if path[0] == "padding_efficiency" else 2)


def _side_by_side(stacks: dict[str, Any]) -> list[str]:
    return [
        "| workload | figure | " + " | ".join(stacks) + " |",
        "|---|---|" + "---:|" * len(stacks),
        *(
            f"| {workload.key} | {name} | "
            + " | ".join(_cell(stack["runs"].get(workload.key), path) for stack in stacks.values())
            + " |"
            for workload in WORKLOADS
            for name, path in FIGURES
        ),
    ]


def _in_process_rows(in_process: dict[str, Any]) -> list[str]:
    from perf.report import num

    return [
        "| backend | batches | texts/s | call p50 ms | call p99 ms | real tokens | padded tokens | bound texts/s | "
        "fraction of bound | padded bound texts/s | fraction of padded bound |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {backend} | {key} | {b['texts_per_s']:.1f} | {num(b['call_ms']['p50'])} | "
            f"{num(b['call_ms']['p99'])} | {b['mean_tokens']:.1f} | {b['padded_mean_tokens']:.1f} | "
            f"{b['bound_texts_per_s']:.0f} | {b['fraction_of_bound']:.3f} | {b['padded_bound_texts_per_s']:.0f} | "
            f"{b['fraction_of_padded_bound']:.3f} |"
            for backend, found in in_process["backends"].items()
            for key, _, _ in IN_PROCESS_RUNS
            if (b := found[key])
        ),
    ]


RUNTIME_FIELDS = ("backend", "device", "encoder_threads", "tokenizer_threads", "group_window", "ready_s")


def _ready_rows(stacks: dict[str, Any]) -> list[str]:
    return [
        "| stack | ready after s | " + " | ".join(f"runtime: {name}" for name in RUNTIME_FIELDS) + " |",
        "|---|---:|" + "---|" * len(RUNTIME_FIELDS),
        *(
            f"| {key} | {stack['ready_after_s']:.1f} | "
            + " | ".join(str(stack["runtime"][name]) if stack["runtime"] else "-" for name in RUNTIME_FIELDS)
            + " |"
            for key, stack in stacks.items()
        ),
    ]


INFINITY_EXAMPLE = {
    "command": [
        "/tmp/infinity-venv/bin/infinity_emb",
        *("v2", "--model-id", "sentence-transformers/all-MiniLM-L6-v2", "--port", "{port}"),
        *("--engine", "torch", "--device", "cpu"),
    ],
    "env": {"HF_HUB_OFFLINE": "1"},
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "ready_path": "/models",
}


def _infinity_line(spec: dict[str, Any] | None) -> str:
    if spec is None:
        return "Infinity was not measured (no `--infinity FILE`): its column and its targets are left out."
    return (
        f"Infinity: `{' '.join(spec['command'])}` with "
        f"{', '.join(f'{k}={v}' for k, v in spec['env'].items()) or 'no extra environment'}, model "
        f"`{spec['model']}`, ready when {spec['ready_path']} answers 200; its server CPU is its main process's only."
    )


def _quick_line(plan: dict[str, Any]) -> str:
    if plan["mode"] != "quick":
        return ""
    return (
        f" Quick mode: {plan['run_s']:g} s runs, `today` with EMBEDDING_MAX_BATCH_SIZE="
        f"{plan['today_max_batch_size']} (so that XLA compiles fewer shapes at its start: its batches are smaller "
        "than the other stacks'), no openvino-1-thread. It exists for the test: its figures mean nothing."
    )


def markdown(report: dict[str, Any]) -> str:
    from perf.report import headroom_table, num, run_line, services_table, targets_table

    results, settings = report["results"], report["settings"]
    plan, stacks, tokens = settings["plan"], results["stacks"], results["tokens"]
    in_process, head = results["in_process"], results["headroom"]
    short, long = tokens["short"], tokens["long"]
    lines = [
        f"# Encoder backends, served and in-process ({plan['mode']} mode)",
        "",
        f"{run_line(report, True)} XLA: the `today` stack's and the in-process TensorFlow encoder's only. "
        f"Compare inside one run, not across runs: the machine is shared.{_quick_line(plan)}",
        "",
        "## Targets",
        "",
        *targets_table([_as_target(t) for t in results["targets"]]),
        "",
        "## Served",
        "",
        "Stacks one after the other, each alone on the machine, every one of ours with the embedding cache off: "
        + "; ".join(f"`{key}`, {stack['title']}" for key, stack in stacks.items())
        + ". "
        + _infinity_line(results["infinity"]),
        "",
        f"Each workload closed loop for {plan['run_s']:g} s, after an unrecorded warm-up run of its own (its "
        f"opening requests, then {plan['warm_s']:g} s): keep-alive connections, each sending its next request "
        "when its last is answered (one opening request per connection first, unmeasured). single_cN: one "
        "short text per request at cN; batch32_c16: 32 short texts per request at c16; mixed_c64: one text per "
        "request at c64, every fourth request sent a long text. Every text sent is new: short ones "
        f"{short['texts']:,} texts of {short['mean_tokens']:.1f} tokens on average ({short['min_tokens']}-"
        f"{short['max_tokens']}), long ones {long['texts']:,} of {long['mean_tokens']:.1f} ({long['min_tokens']}-"
        f"{long['max_tokens']}), special tokens included (the service's tokenizer). Latencies from send, of the "
        "200s; texts/s: texts answered 200 over the measured time; server CPU from /proc/<pid>/stat; padding "
        "efficiency (ours): the deltas of embedding_tokens_total over embedding_padded_tokens_total across the "
        "run, opening requests included. A dash: not run on that stack.",
        "",
        *_side_by_side(stacks),
        "",
        "## In-process",
        "",
        f"Each backend's encoder from load_encoder (max batch size 32, every core; TensorFlow XLA-compiled, the "
        f"build/xla-cache compile cache), {in_process['texts']:,} short texts of the same form "
        f"({in_process['mean_tokens']:.1f} tokens on average) in consecutive batches of 1 and 32, and of 32 "
        "after sorting them by length (`_by_length`: the batches length grouping forms), each batch shape run once, "
        f"{plan['in_process_warm_s']:g} s warm-up, then timed {plan['in_process_s']:g} s; no "
        f"HTTP, no queue. The FLOP bound: the fp32 matmul rate ({in_process['matmul_gflops']:.0f} GFLOP/s, "
        "TensorFlow, perf.ceiling) over the encoder's matmul FLOPs per text at the texts' real lengths, and at "
        "the lengths each batch was padded to (TensorFlow: its buckets; OpenVINO: the batch's longest text).",
        "",
        *_in_process_rows(in_process),
        "",
        "## Time to ready and runtime",
        "",
        "*ready after*: from the start of the process to the first 200 from its ready path (/readyz; "
        "Infinity's from its file). *runtime*: what GET /v1/models reports (`data[0].runtime`; ready_s is the "
        "service's own, from the start of loading).",
        "",
        *_ready_rows(stacks),
        "",
        "## The load client's headroom",
        "",
        f"single_c64's client (a new text each), closed loop c{HEADROOM_CONCURRENCY}, against the null server "
        "(perf.endpoint_bench's: answers every request at once, with a 429). The fastest request rate measured: "
        f"{_fastest(stacks):.0f}/s; the null server's over it: "
        f"{num(head['null_server']['requests_per_s'] / _fastest(stacks))}.",
        "",
        *headroom_table(head),
        "",
        "## Services",
        "",
        *services_table(results["services"]),
        "",
        "## Reproduce",
        "",
        "After `make models`: `make bench-backends` (the full run), or `.venv/bin/python -m perf.backends_bench "
        "[--quick] [--out DIR] [--infinity FILE]`. For Infinity, a venv of its own "
        "(`python3.11 -m venv /tmp/infinity-venv && /tmp/infinity-venv/bin/pip install 'infinity-emb[all]'`, "
        "the model in its Hugging Face cache) and a FILE such as:",
        "",
        "```json",
        json.dumps(INFINITY_EXAMPLE, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------


def run_bench(plan: Plan, out: Path, spec: InfinitySpec | None) -> dict[str, Any]:
    logs = out / "logs"
    texts = Texts()
    records: dict[str, Any] = {}
    stacks: dict[str, Any] = {}
    for stack in stacks_of(plan, spec):
        with serving(stack, spec, logs) as endpoint:
            runs = asyncio.run(stack_runs(stack, endpoint, texts, plan))
        records[endpoint.up.service.name] = endpoint.record()
        stacks[stack.key] = {
            "title": stack.title,
            "settings": {**COMMON, **stack.settings} if stack is not INFINITY else {},
            "model": endpoint.model,
            "ready_after_s": endpoint.up.ready_after_s,
            "runtime": endpoint.runtime,
            "runs": runs,
        }
    sent = dict(texts.sent)
    headroom = headroom_phase(texts, stacks[OPENVINO.key]["model"], plan, logs, records)
    # TensorFlow reads its XLA flags when it is first imported: from here on.
    use_xla_cache(EmbeddingSettings(xla=True, xla_cache_dir=str(XLA_CACHE_DIR)))
    tokens = tokenizer()
    return {
        "services": records,
        "infinity": None if spec is None else asdict(spec),
        "stacks": stacks,
        "tokens": token_figures(tokens, sent),
        "headroom": headroom,
        "in_process": in_process_phase(tokens, plan),
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, `today` at batch size 4: about 90 s")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    parser.add_argument("--infinity", type=Path, metavar="FILE", help="JSON: how to start Infinity (see above)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    plan = QUICK if args.quick else FULL
    spec = InfinitySpec.read(args.infinity) if args.infinity else None
    started_at = datetime.now(UTC)
    out: Path = args.out or ROOT / "perf" / "results" / started_at.strftime("%Y%m%d-%H%M%S")
    results = run_bench(plan, out, spec)
    from perf.report import run_header, write_report

    report: dict[str, Any] = {
        **run_header("perf.backends_bench", argv if argv is not None else sys.argv[1:], started_at),
        "settings": {
            "plan": asdict(plan),
            "stacks": {s.key: {"title": s.title, "workloads": list(s.workloads)} for s in stacks_of(plan, spec)},
            "workloads": {w.key: asdict(w) for w in WORKLOADS},
            "texts": {
                "short": "perf.sentences.SENTENCES in turn, each with a counter appended",
                "long": f"{LONG_SENTENCES} consecutive sentences, with a counter appended",
                "mixed": f"one long text in every {MIXED_EVERY} requests sent",
                "in_process": f"the first {IN_PROCESS_TEXTS} short texts",
            },
        },
        "results": results,
    }
    results["targets"] = [asdict(t) for t in targets(results)]
    write_report(out, "backends_bench", report, markdown(report))
    say(f"wrote {out}/backends_bench.json and backends_bench.md")


if __name__ == "__main__":
    main()
