"""What tracing costs, side by side in one run:

1. On against off. Two pipelines (embedding service, head stand-in, orchestrator), started one after the
   other and both kept running: OFF with no OTEL_* variable; ON exporting to a local OTLP/HTTP sink
   (OTEL_EXPORTER_OTLP_ENDPOINT; OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1;
   the batch span processor at its defaults). /classify, one text per request, every text new (a counter
   appended: the embedding cache, at its default size, answers none), closed loop c64, in rounds that
   alternate which stack goes first; only the stack measured gets load. Each run reads the three services'
   CPU (/proc/<pid>/stat). The sink answers every export 200 and counts its requests, spans and traces.
2. The off path, in this process: each tracing call a /classify makes on the three services, timed with
   tracing off (service_common.tracing imported, setup_tracing never called), times how often a /classify
   makes it, against the CPU a /classify costs the three services (OFF's runs).
3. The load client's headroom: its closed-loop c64 rate against a null server (perf.endpoint_bench's)
   and against OFF's orchestrator /healthz, next to the rates measured.

Writes perf/results/<UTC timestamp>/tracing_bench.{json,md}.

`python -m perf.tracing_bench [--quick] [--out DIR]`"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

import httpx
import orjson

from perf.endpoint_bench import HEALTHZ, Meter, Started, closed_run, counter, ms, started
from perf.heads_bench import wait_for_heads
from perf.lanes_bench import new_texts
from perf.loadgen import http_request
from service_common import tracing
from stack import services as stack_services
from stack.procs import LOOPBACK, free_port
from stack.services import DEFAULT_HEAD, DEFAULT_HEADS_ROOT, ROOT, Service

if TYPE_CHECKING:
    from perf.report import Target

# perf.report imports TensorFlow, and so do the call sites the off path times: imported once the load is over.

HIGH = 64  # every run's concurrency
ENGINES = ("orchestrator", "head", "embedding")  # the processes whose CPU each run reads
SAMPLING = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
OFF_PATH_TARGET = 0.01  # of a /classify's CPU
SAMPLED_SPAN = "orchestrator: classify"  # the sink's name for the span each sampled /classify makes (api.py)


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
    xla: bool  # the embedding services' encoder XLA-compiled (quick: off, so they start in seconds)
    rounds: int  # each runs both stacks, alternating which goes first
    warm_s: float  # per stack, before the rounds; not recorded
    run_s: float  # each measured run
    max_requests: int  # per run: runs end at their duration long before this
    headroom_s: float  # each of the load client's headroom runs
    timing_calls: int  # the off path: calls per timing of a statement
    timing_repeats: int  # timings per statement: the fastest is kept (timeit's advice)


QUICK = Plan("quick", False, 2, 1.0, 2.0, 100_000, 1.0, 20_000, 2)
FULL = Plan("full", True, 5, 8.0, 15.0, 100_000, 4.0, 200_000, 7)


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    env: Mapping[str, str]  # the OTEL_* variables each service of its stack gets


def say(message: str) -> None:
    print(f"[tracing-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the OTLP sink ------------------------------------------------------------------------------------

SINK_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"


@dataclass
class Received:
    export_requests: int = 0  # POST /v1/traces
    other_requests: int = 0  # POSTs elsewhere (another signal's exports), answered alike
    undecoded: int = 0
    body_bytes: int = 0
    spans: int = 0
    spans_by_name: Counter[str] = field(default_factory=Counter)  # "<service.name>: <span name>"
    trace_ids: set[bytes] = field(default_factory=set)

    def count(self, body: bytes) -> None:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.export_requests += 1
        self.body_bytes += len(body)
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            self.undecoded += 1
            return
        for resource in request.resource_spans:
            names = [a.value.string_value for a in resource.resource.attributes if a.key == "service.name"]
            for scope in resource.scope_spans:
                self.spans += len(scope.spans)
                self.spans_by_name.update(f"{names[0] if names else '-'}: {span.name}" for span in scope.spans)
                self.trace_ids.update(span.trace_id for span in scope.spans)

    def figures(self) -> dict[str, Any]:
        return {
            "export_requests": self.export_requests,
            "other_requests": self.other_requests,
            "undecoded": self.undecoded,
            "bytes": self.body_bytes,
            "spans": self.spans,
            "traces": len(self.trace_ids),
            "spans_by_name": dict(self.spans_by_name.most_common()),
        }


async def _otlp_sink(port: int) -> None:
    """Answers every POST 200 with an empty body (for POST /v1/traces, an OTLP/HTTP export, a valid
    ExportTraceServiceResponse), counting the exports' spans and traces; a GET answers what it counted,
    as JSON."""
    received = Received()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)]) if at >= 0 else 0
                body = await reader.readexactly(length)
                if head.startswith(b"POST /v1/traces "):
                    received.count(body)
                    writer.write(SINK_OK)
                elif head.startswith(b"POST "):
                    received.other_requests += 1
                    writer.write(SINK_OK)
                else:
                    answer = orjson.dumps(received.figures())
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, port)
    async with server:
        await server.serve_forever()


# --- services -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    variant: Variant
    up: dict[str, Started]  # ENGINES -> the running service

    @property
    def orchestrator(self) -> Started:
        return self.up["orchestrator"]


def pipeline(variant: Variant, plan: Plan, work: Path) -> list[Service]:
    """The head, the embedding service and the orchestrator on free ports, named <service>-<variant key>,
    each with the variant's OTEL_* variables; the head serves the default head."""
    config_path = work / f"heads-{variant.key}.config"
    grpc_port, rest_port = free_port(), free_port()
    head = stack_services.head(grpc_port, rest_port, DEFAULT_HEADS_ROOT, config_path, heads=(DEFAULT_HEAD,))
    embedding = stack_services.embedding(
        free_port(),
        ROOT / "build" / "encoder",
        xla_cache_dir=str(ROOT / "build" / "xla-cache"),
        xla=str(plan.xla).lower(),
        log_level="warning",
    )
    orchestrator = stack_services.orchestrator(
        free_port(), embedding.url, grpc_port, rest_port, log_level="warning", head_config_file=str(config_path)
    )
    return [
        replace(s, name=f"{s.name}-{variant.key}", env={**s.env, **variant.env})
        for s in (head, embedding, orchestrator)
    ]


def start_stack(running: ExitStack, variant: Variant, plan: Plan, work: Path, logs: Path) -> Stack:
    services = pipeline(variant, plan, work)
    up = [running.enter_context(started(s, logs)) for s in services]
    wait_for_heads(services[2].url, (DEFAULT_HEAD,))
    return Stack(variant, dict(zip(("head", "embedding", "orchestrator"), up, strict=True)))


def check(stack: Stack, text: str) -> dict[str, Any]:
    """One /classify: answered 200, and whether with a traceresponse header (only a stack tracing makes one:
    its spans exist even when the sampler drops them)."""
    response = httpx.post(f"{stack.orchestrator.service.url}/classify", json={"text": text}, timeout=30.0)
    if response.status_code != 200:
        raise RuntimeError(f"{stack.variant.key}: /classify answered {response.status_code} {response.text[:500]}")
    return {"status": response.status_code, "traceresponse": response.headers.get(tracing.TRACERESPONSE)}


# --- on against off -----------------------------------------------------------------------------------


def classify_request(text: str) -> bytes:
    return http_request("POST", "/classify", orjson.dumps({"text": text}))


async def measured_run(
    client: httpx.AsyncClient, stack: Stack, texts: Iterator[str], duration_s: float, plan: Plan
) -> dict[str, Any]:
    """A closed-loop c64 run on the stack's orchestrator (perf.endpoint_bench.closed_run: one unmeasured
    request per connection first), every engine's CPU read around it, and the embedding cache's hits. The
    CPU window holds the opening requests too, so CPU per request divides by them as well."""
    embedding_url = stack.up["embedding"].service.url
    hits = await counter(client, embedding_url, "embedding_cache_hits_total")
    meters = {name: Meter(s.pid) for name, s in stack.up.items()}
    samples, inner = await closed_run(
        stack.orchestrator.port,
        lambda _: classify_request(next(texts)),
        pid=stack.orchestrator.pid,
        concurrency=HIGH,
        requests=plan.max_requests,
        duration_s=duration_s,
    )
    usages = {name: meter.stop() for name, meter in meters.items()}
    hits = await counter(client, embedding_url, "embedding_cache_hits_total") - hits
    ok = [s.service_s for s in samples if s.outcome == "200"]
    return {
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "errors": len(samples) - len(ok),
        "wall_s": inner.wall_s,
        "throughput_per_s": len(ok) / inner.wall_s,
        "latency_ms": ms(ok),
        "cpu_window_requests": len(samples) + HIGH,
        "cpu_s": {
            **{name: usage.service_cpu_s for name, usage in usages.items()},
            "client": usages["orchestrator"].client_cpu_s,
        },
        "cache_hits": int(hits),
    }


def _said(run: dict[str, Any]) -> str:
    latency = run["latency_ms"]
    cpu = ", ".join(f"{name} {run['cpu_s'][name] / run['cpu_window_requests'] * 1e3:.2f}" for name in ENGINES)
    return (
        f"{run['throughput_per_s']:.1f}/s, p50 {latency['p50'] or 0:.1f} ms, p99 {latency['p99'] or 0:.1f} ms, "
        f"{run['outcomes']}; core-ms per /classify: {cpu}; cache hits {run['cache_hits']:.0f}"
    )


async def rounds_phase(
    stacks: dict[str, Stack], texts: Iterator[str], plan: Plan
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A warm-up run on each stack (unrecorded), then the rounds: odd ones run OFF then ON, even ones ON
    then OFF."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        warm: dict[str, Any] = {}
        for key, stack in stacks.items():
            warm[key] = await measured_run(client, stack, texts, plan.warm_s, plan)
            say(f"warm-up, {key}: {_said(warm[key])}")
        runs: list[dict[str, Any]] = []
        keys = list(stacks)
        for round_ in range(1, plan.rounds + 1):
            for key in keys if round_ % 2 else keys[::-1]:
                run = await measured_run(client, stacks[key], texts, plan.run_s, plan)
                runs.append({"round": round_, "variant": key, **run})
                say(f"round {round_}, {key}: {_said(run)}")
    return warm, runs


def variant_figures(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Throughput, p50 and p99: the median over rounds, and per round; CPU per /classify pooled over rounds."""
    mine = [r for r in runs if r["variant"] == key]
    window = sum(r["cpu_window_requests"] for r in mine)
    cpu = {name: sum(r["cpu_s"][name] for r in mine) / window * 1e3 for name in (*ENGINES, "client")}
    cpu["three_services"] = sum(cpu[name] for name in ENGINES)
    found: dict[str, Any] = {
        "runs": len(mine),
        "requests": sum(r["requests"] for r in mine),
        "errors": sum(r["errors"] for r in mine),
        "cache_hits": sum(r["cache_hits"] for r in mine),
        "core_ms_per_request": cpu,
    }
    for name, values in (
        ("throughput_per_s", [r["throughput_per_s"] for r in mine]),
        ("p50_ms", [r["latency_ms"]["p50"] for r in mine]),
        ("p99_ms", [r["latency_ms"]["p99"] for r in mine]),
    ):
        found[name] = float(statistics.median(values))
        found[f"{name}_per_round"] = values
    return found


# --- the off path -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    key: str
    statement: str  # timed in a namespace with `tracing` and what `off_path_namespace` gives
    sites: str
    per_classify: Mapping[str, int]  # by ENGINES: how often one /classify makes it, with no coalescing


# Each tracing call on a /classify's way through the three services, as its call site makes it (the
# attribute dicts are built even when tracing is off), counted as if every /classify were alone (its own
# embedding call, encoder batch and head call: coalescing at c64 shares those, so this is an upper bound),
# one head over gRPC (the orchestrator's default), and the access log at its default level, info (this
# bench runs the services at warning: no access log line, no ids() call).
OFF_PATH = (
    Call(
        "span",
        'with tracing.span("classify", attributes={"classify.texts": 1, "classify.heads": ",".join(HEADS)}):\n    pass',
        "orchestrator: classify (api.py); embedding: tokenize (embedder.py)",
        {"orchestrator": 1, "embedding": 1},
    ),
    Call(
        "hop_span",
        'with _hop_span("embed_call", JOBS, texts=1):\n    pass',
        "orchestrator: embed_call, head_call (coalescer.py's _hop_span)",
        {"orchestrator": 2},
    ),
    Call(
        "infer_span",
        "with _infer_span(BATCHER, BATCH):\n    pass",
        "embedding: infer, per encoder batch (batcher.py's _infer_span; a batch of one text)",
        {"embedding": 1},
    ),
    Call(
        "served",
        'with tracing.served("predict", dict(METADATA), {"model.name": "sentiment", "rpc.system": "grpc"}):\n    pass',
        "head: Predict (grpc_api.py: the metadata dict, the attributes)",
        {"head": 1},
    ),
    Call(
        "enabled",
        "tracing.enabled()",
        "the middleware (orchestrator, embedding); embedding: batcher.embed, embedder.embed",
        {"orchestrator": 1, "embedding": 3},
    ),
    Call("current", "tracing.current()", "orchestrator: the coalescer's job", {"orchestrator": 1}),
    Call("inject", "tracing.inject({})", "orchestrator: the embedding call, the head call", {"orchestrator": 2}),
    Call(
        "traceresponse",
        "tracing.traceresponse()",
        "the middleware, on the answer's start",
        {"orchestrator": 1, "embedding": 1},
    ),
    Call("ids", "tracing.ids()", "a log line: the access log's, at info", {"orchestrator": 1, "embedding": 1}),
    Call(
        "caller_headers",
        '{n: HEADERS[n.encode()].decode("latin-1") for n in ("traceparent", "tracestate") if n.encode() in HEADERS}',
        "the middleware: the caller's traceparent and tracestate looked up",
        {"orchestrator": 1, "embedding": 1},
    ),
)


def off_path_namespace() -> dict[str, Any]:
    """What the statements run with: the real call sites' helpers, and stand-ins for their arguments."""
    import numpy as np

    from embedding_service.batcher import DynamicBatcher
    from embedding_service.buckets import Buckets
    from orchestrator.coalescer import _hop_span

    if tracing.enabled():
        raise RuntimeError("tracing is on in the bench's own process")
    pending = SimpleNamespace(ids=np.zeros(16, dtype=np.int32), trace=None, lane=SimpleNamespace(name="orchestrator"))
    headers = {b"host": b"bench", b"content-length": b"60", b"content-type": b"application/json"}
    headers |= {b"x-request-id": b"0" * 32, b"x-request-timeout-ms": b"30000", b"user-agent": b"python-httpx/0.28"}
    return {
        "tracing": tracing,
        "HEADS": [DEFAULT_HEAD],
        "_hop_span": _hop_span,
        "JOBS": [SimpleNamespace(trace=tracing.current())],
        "_infer_span": DynamicBatcher._infer_span,
        "BATCHER": SimpleNamespace(_buckets=Buckets.default(32, 256)),
        "BATCH": [pending],
        "METADATA": (("x-request-id", "0" * 32), ("user-agent", "grpc-python/1.7")),
        "HEADERS": headers,
    }


def off_path_phase(plan: Plan) -> dict[str, Any]:
    """Each OFF_PATH statement's ns per call: the fastest of `timing_repeats` timings of `timing_calls`
    calls, less an empty statement's."""
    namespace = off_path_namespace()

    def best(statement: str) -> float:
        timer = timeit.Timer(statement, globals=namespace)
        return min(timer.repeat(repeat=plan.timing_repeats, number=plan.timing_calls)) / plan.timing_calls * 1e9

    empty = best("pass")
    calls: dict[str, Any] = {}
    for call in OFF_PATH:
        ns = max(0.0, best(call.statement) - empty)
        count = sum(call.per_classify.values())
        calls[call.key] = {
            "statement": call.statement,
            "sites": call.sites,
            "ns_per_call": ns,
            "per_classify": dict(call.per_classify),
            "us_per_classify": ns * count / 1e3,
        }
        say(f"off path, {call.key}: {ns:.0f} ns per call, x{count} per /classify")
    us = {
        name: sum(c["ns_per_call"] * c["per_classify"].get(name, 0) for c in calls.values()) / 1e3 for name in ENGINES
    }
    return {"empty_statement_ns": empty, "calls": calls, "us_per_classify": sum(us.values()), "us_by_service": us}


# --- the load client's headroom -----------------------------------------------------------------------


def headroom_phase(off: Stack, texts: Iterator[str], plan: Plan, logs: Path, records: dict[str, Any]) -> dict[str, Any]:
    """The load client at c64, with the same requests (a new text each), against the null server (every
    request answered at once, with a 429), and against OFF's orchestrator GET /healthz."""
    port = free_port()
    null = Service("null-server", "perf.endpoint_bench", f"http://{LOOPBACK}:{port}", "/", ("--null-server", str(port)))
    found: dict[str, Any] = {}
    with started(null, logs) as server:
        found["null_server"] = asyncio.run(
            _headroom_run(port, lambda _: classify_request(next(texts)), server.pid, plan)
        )
    records[null.name] = server.record()
    found["healthz"] = asyncio.run(_headroom_run(off.orchestrator.port, lambda _: HEALTHZ, off.orchestrator.pid, plan))
    for name, run in found.items():
        say(f"headroom, {name}: {run['requests_per_s']:.0f}/s, client {run['client_us_per_request']:.0f} us each")
    return found


async def _headroom_run(port: int, make: Callable[[int], bytes], pid: int, plan: Plan) -> dict[str, Any]:
    samples, usage = await closed_run(
        port, make, pid=pid, concurrency=HIGH, requests=plan.max_requests, duration_s=plan.headroom_s
    )
    return {
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "requests_per_s": len(samples) / usage.wall_s,
        "latency_ms": ms([s.service_s for s in samples]),
        "client_us_per_request": usage.client_cpu_s / len(samples) * 1e6,
    }


# --- the report ---------------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list["Target"]:
    from perf.report import Target, at_least, at_most

    off, on = results["variants"]["off"], results["variants"]["on"]
    sink, path, head, checks = results["sink"], results["off_path"], results["headroom"], results["checks"]

    def info(name: str, value: float | None) -> Target:
        return Target(name, value, "-", None)

    fastest = max(off["throughput_per_s"], on["throughput_per_s"])
    return [
        at_least("ON/OFF: /classify c64 throughput (medians over rounds)", results["throughput_ratio"], 0.95),
        info("ON/OFF: the lowest round's throughput ratio", min(results["throughput_ratio_per_round"])),
        at_most("errors, OFF and ON", off["errors"] + on["errors"], 0),
        at_least("sink: export requests received (from ON)", sink["export_requests"], 1),
        at_most("sink: export requests it could not decode", sink["undecoded"], 0),
        info(f"sink: {SAMPLED_SPAN} spans / ON's /classify requests (ratio 0.1)", results["sampled_share"]),
        at_least("ON: answer has traceresponse (1: yes)", int(bool(checks["on"]["traceresponse"])), 1),
        at_most("OFF: answer has traceresponse (1: yes)", int(bool(checks["off"]["traceresponse"])), 0),
        info("OFF: c64 requests/s", off["throughput_per_s"]),
        info("ON: c64 requests/s", on["throughput_per_s"]),
        info("OFF: c64 p50 (ms)", off["p50_ms"]),
        info("ON: c64 p50 (ms)", on["p50_ms"]),
        info("OFF: c64 p99 (ms)", off["p99_ms"]),
        info("ON: c64 p99 (ms)", on["p99_ms"]),
        info("OFF: core-ms per /classify, the three services", off["core_ms_per_request"]["three_services"]),
        info("ON: core-ms per /classify, the three services", on["core_ms_per_request"]["three_services"]),
        info("off path: us per /classify (no coalescing: an upper bound)", path["us_per_classify"]),
        at_most("off path / OFF's CPU per /classify (%)", results["off_path_share"] * 100, OFF_PATH_TARGET * 100),
        at_least(
            f"load client: null-server c{HIGH} rate / fastest measured rate ({fastest:.0f}/s)",
            head["null_server"]["requests_per_s"] / fastest,
            3.0,
        ),
        info(
            "load client: orchestrator /healthz c64 rate / fastest measured rate",
            head["healthz"]["requests_per_s"] / fastest,
        ),
    ]


def _as_target(found: dict[str, Any]) -> "Target":
    from perf.report import Target

    return Target(**found)


def _rounds(values: Sequence[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _side_by_side(off: dict[str, Any], on: dict[str, Any]) -> list[str]:
    from perf.report import num

    rows: list[tuple[str, tuple[str, ...]]] = [  # a figure's name, and its path in a variant's figures
        ("requests/s (median)", ("throughput_per_s",)),
        ("requests/s per round", ("throughput_per_s_per_round",)),
        ("p50 ms (median)", ("p50_ms",)),
        ("p50 ms per round", ("p50_ms_per_round",)),
        ("p99 ms (median)", ("p99_ms",)),
        ("p99 ms per round", ("p99_ms_per_round",)),
        ("requests", ("requests",)),
        ("errors", ("errors",)),
        ("embedding cache hits", ("cache_hits",)),
        *(
            (f"{name} core-ms per /classify", ("core_ms_per_request", name))
            for name in (*ENGINES, "three_services", "client")
        ),
    ]

    def value(figures: dict[str, Any], path: tuple[str, ...]) -> str:
        found: Any = figures
        for key in path:
            found = found[key]
        if isinstance(found, list):
            return _rounds(found)
        return str(found) if isinstance(found, int) else num(found, 3 if path[0] == "core_ms_per_request" else 2)

    return [
        "| figure | OFF | ON |",
        "|---|---:|---:|",
        *(f"| {name} | {value(off, path)} | {value(on, path)} |" for name, path in rows),
    ]


def markdown(report: dict[str, Any]) -> str:
    from perf.report import headroom_table, run_line, services_table, targets_table

    results, plan = report["results"], report["settings"]["plan"]
    variants, sink, path, head = results["variants"], results["sink"], results["off_path"], results["headroom"]
    off_cpu = variants["off"]["core_ms_per_request"]["three_services"]
    lines = [
        f"# What tracing costs ({plan['mode']} mode)",
        "",
        f"{run_line(report, plan['xla'])} Compare inside one run, not across runs: the machine is shared.",
        "",
        "## Targets",
        "",
        *targets_table([_as_target(t) for t in results["targets"]]),
        "",
        "## On against off",
        "",
        f"Two pipelines (embedding service, head stand-in, orchestrator), both kept running: OFF, "
        f"{variants['off']['title']}; ON, {variants['on']['title']}. /classify, one text per request, every text "
        f"new (a counter appended), so the embedding cache (its default size) answers none; closed loop "
        f"c{HIGH}, {plan['rounds']} round(s) of {plan['run_s']:g} s per stack, odd rounds OFF first, even ones "
        "ON first; only the stack measured gets load. Throughput and latencies (from send, of the 200s): the "
        "median over rounds, then each round. CPU: utime + stime from /proc/<pid>/stat (all threads) over each "
        f"run, divided by its requests ({HIGH} opening requests included), pooled over rounds. ON's span "
        "processor exports in the background: an export due after an ON run lands in the next run, which may "
        "be OFF's.",
        "",
        *_side_by_side(variants["off"], variants["on"]),
        "",
        f"ON/OFF throughput: {results['throughput_ratio']:.3f} (medians); per round "
        f"{_rounds(results['throughput_ratio_per_round'], 3)}.",
        "",
        "## The sink",
        "",
        "An asyncio server (`python -m perf.tracing_bench --otlp-sink PORT`) answering every POST 200 with an "
        "empty body, read at the end, once ON's services had stopped (flushing their last spans). It received "
        f"{sink['export_requests']} export requests to /v1/traces ({sink['bytes']:,} bytes, {sink['undecoded']} "
        f"undecodable; {sink['other_requests']} POSTs elsewhere) holding {sink['spans']:,} spans of "
        f"{sink['traces']:,} traces. ON answered {results['on_requests_sent']:,} /classify requests; "
        f"{results['sampled_share']:.3f} of them made a sampled `{SAMPLED_SPAN}` span. OFF has no endpoint, "
        f"so it exports nothing; its /classify answer carried traceresponse "
        f"`{results['checks']['off']['traceresponse']}`, ON's `{results['checks']['on']['traceresponse']}`.",
        "",
        "| service: span | spans |",
        "|---|---:|",
        *(f"| {name} | {n:,} |" for name, n in sink["spans_by_name"].items()),
        "",
        "## The off path",
        "",
        "With tracing off (service_common.tracing imported, setup_tracing never called), each statement "
        f"timed {plan['timing_calls']:,} times, the fastest of {plan['timing_repeats']} timings, less an empty "
        f"statement's {path['empty_statement_ns']:.1f} ns. Counted per /classify as if every request were "
        "alone (its own embedding call, encoder batch and head call: at c64 coalescing shares them, so this is "
        "an upper bound), one head over gRPC, and one access-log line per HTTP service at the default level, "
        "info (the services here run at warning).",
        "",
        f"| call | where | ns per call | per /classify ({', '.join(ENGINES)}) | us per /classify |",
        "|---|---|---:|---|---:|",
        *(
            f"| {key} | {c['sites']} | {c['ns_per_call']:.0f} | "
            + ", ".join(str(c["per_classify"].get(name, 0)) for name in ENGINES)
            + f" | {c['us_per_classify']:.2f} |"
            for key, c in path["calls"].items()
        ),
        "",
        f"Together {path['us_per_classify']:.2f} us per /classify ("
        + ", ".join(f"{name} {us:.2f}" for name, us in path["us_by_service"].items())
        + f"), against OFF's {off_cpu:.2f} core-ms per /classify over the three services: "
        f"{results['off_path_share']:.4%}.",
        "",
        "## The load client's headroom",
        "",
        f"The same client, closed loop c{HIGH}, against the null server (perf.endpoint_bench's: answers every "
        "request at once, with a 429; the same /classify requests, a new text each) and OFF's orchestrator "
        "/healthz.",
        "",
        *headroom_table(head),
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
    records: dict[str, Any] = {}
    port = free_port()
    sink_service = Service(
        "otlp-sink", "perf.tracing_bench", f"http://{LOOPBACK}:{port}", "/", ("--otlp-sink", str(port))
    )
    with tempfile.TemporaryDirectory(prefix="tracing-bench-") as folder, started(sink_service, logs) as sink:
        on_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_service.url, **SAMPLING}
        variants = (
            Variant("off", "no OTEL_* variable", {}),
            Variant("on", "OTLP/HTTP to the sink, " + ", ".join(f"{k}={v}" for k, v in SAMPLING.items()), on_env),
        )
        with ExitStack() as running:
            stacks = {v.key: start_stack(running, v, plan, Path(folder), logs) for v in variants}
            checks = {key: check(stack, next(texts)) for key, stack in stacks.items()}
            say(f"both stacks answer: {checks}")
            warm, runs = asyncio.run(rounds_phase(stacks, texts, plan))
            headroom = headroom_phase(stacks["off"], texts, plan, logs, records)
        # Stopped: ON's services have flushed their last spans to the sink.
        records.update({s.service.name: s.record() for stack in stacks.values() for s in stack.up.values()})
        received = httpx.get(sink_service.url, timeout=10.0).json()
    records[sink_service.name] = sink.record()
    say(f"sink: {received}")
    off_path = off_path_phase(plan)
    found = {v.key: {"title": v.title, "env": dict(v.env), **variant_figures(runs, v.key)} for v in variants}
    # Every /classify ON answered: the runs', their opening requests, the warm-up's, the check.
    on_runs = [r for r in runs if r["variant"] == "on"]
    on_sent = sum(r["cpu_window_requests"] for r in (*on_runs, warm["on"])) + 1
    return {
        "services": records,
        "checks": checks,
        "warm_up": warm,
        "runs": runs,
        "variants": found,
        "throughput_ratio": found["on"]["throughput_per_s"] / found["off"]["throughput_per_s"],
        "throughput_ratio_per_round": [
            on / off
            for on, off in zip(
                found["on"]["throughput_per_s_per_round"], found["off"]["throughput_per_s_per_round"], strict=True
            )
        ],
        "sink": received,
        "on_requests_sent": on_sent,
        "sampled_share": received["spans_by_name"].get(SAMPLED_SPAN, 0) / on_sent,
        "off_path": off_path,
        "off_path_share": off_path["us_per_classify"] / (found["off"]["core_ms_per_request"]["three_services"] * 1e3),
        "headroom": headroom,
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, two rounds, no XLA: about a minute")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    parser.add_argument("--otlp-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.otlp_sink:
        asyncio.run(_otlp_sink(args.otlp_sink))
        return
    # OFF gets no OTEL_* variable and ON only its own: none is inherited from this environment.
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        say(f"ignoring {name} from the environment")
        del os.environ[name]
    plan = QUICK if args.quick else FULL
    started_at = datetime.now(UTC)
    out: Path = args.out or ROOT / "perf" / "results" / started_at.strftime("%Y%m%d-%H%M%S")
    results = run_bench(plan, out)
    from perf.report import run_header, write_report

    report: dict[str, Any] = {
        **run_header("perf.tracing_bench", argv if argv is not None else sys.argv[1:], started_at),
        "settings": {
            "plan": asdict(plan),
            "concurrency": HIGH,
            "texts": "perf.sentences.SENTENCES in turn, each with a counter appended: every text new",
        },
        "results": results,
    }
    results["targets"] = [asdict(t) for t in targets(results)]
    write_report(out, "tracing_bench", report, markdown(report))
    say(f"wrote {out}/tracing_bench.json and tracing_bench.md")


if __name__ == "__main__":
    main()
