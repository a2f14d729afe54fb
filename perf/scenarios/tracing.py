"""What tracing costs, side by side in one run.

- On against off: two pipelines (embedding service, head stand-in, orchestrator), both kept running: OFF
  without any OTEL_* variable (none inherited), ON exporting over OTLP/HTTP to the harness's sink, sampling
  10% (parentbased_traceidratio), the batch span processor at its defaults. /classify, a new text each (the
  embedding cache answers none), closed loop c64, in rounds alternating which stack goes first, each run
  reading the three services' CPU. The sink is read once ON's services have stopped (their last spans
  flushed); an export due after an ON run lands in the next run, which may be OFF's.
- The off path, in this process: each tracing call a /classify makes in the three services, timed with
  tracing off, times how often a /classify makes it (as if alone, so an upper bound; one head over gRPC; the
  access log at its default level, info), against the CPU a /classify costs the three services in OFF's runs.
- The load client's headroom: the null server (the same requests) and OFF's orchestrator /healthz."""

import asyncio
import os
import statistics
import tempfile
import timeit
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import orjson

from embedding_service.batcher import DynamicBatcher
from embedding_service.buckets import Buckets
from orchestrator.coalescer import _hop_span
from perf.harness.client import http_request, one_hop
from perf.harness.headroom import headroom, headroom_targets
from perf.harness.load import closed_run
from perf.harness.meters import Meters, counter
from perf.harness.progress import say
from perf.harness.report import Column, Target, at_least, at_most, dig, info, num, side_by_side, table
from perf.harness.scenario import Context, Scenario
from perf.harness.stacks import Started, helper_server, pipeline, running
from perf.harness.stats import alternating, figures, per_round, ratio, said
from perf.sentences import new_texts
from service_common import tracing
from stack.services import DEFAULT_HEAD

TITLE = "What tracing costs"
HIGH, MAX_REQUESTS = 64, 1_000_000  # every run's concurrency; requests per run, which ends at its duration first
ENGINES = ("orchestrator", "head", "embedding")  # the processes whose CPU each run reads
SAMPLING = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
OFF_PATH_TARGET = 0.01  # of a /classify's CPU
SAMPLED_SPAN = "orchestrator: classify"  # the sink's name for the span each sampled /classify makes (api.py)
HITS = "embedding_cache_hits_total"
TITLES = {"off": "no OTEL_* variable", "on": "OTLP/HTTP to the sink, " + ", ".join(map("=".join, SAMPLING.items()))}
TRACE, QS = tracing.TRACERESPONSE, ("p50", "p99")
# Figures by round: the name, a run's, the table's name and digits.
MEDIANS = [("throughput_per_s", "throughput_per_s", "requests/s", 1)]
MEDIANS += [(f"{q}_ms", f"latency_ms.{q}", f"{q} ms", 2) for q in QS]
# Each tracing call on a /classify's way, as its call site makes it (the attribute dicts are built even when
# tracing is off): key -> the statement, timed in NAMESPACE; then how often one /classify makes it in each of
# ENGINES (orchestrator, head, embedding), and where.
STATEMENTS = {
    "span": 'with tracing.span("classify", attributes={"classify.texts": 1, "classify.heads": ",".join(HEADS)}): pass',
    "hop_span": 'with _hop_span("embed_call", JOBS, texts=1): pass',
    "infer_span": "with _infer_span(BATCHER, BATCH): pass",
    "served": 'with tracing.served("predict", dict(METADATA), {"model.name": "sentiment", "rpc.system": "grpc"}): pass',
    "enabled": "tracing.enabled()",
    "current": "tracing.current()",
    "inject": "tracing.inject({})",
    "traceresponse": "tracing.traceresponse()",
    "ids": "tracing.ids()",
    "caller_headers": (
        '{n: HEADERS[n.encode()].decode("latin-1") for n in ("traceparent", "tracestate") if n.encode() in HEADERS}'
    ),
}
OFF_PATH = {
    "span": ((1, 0, 1), "orchestrator: classify (api.py); embedding: tokenize (embedder.py)"),
    "hop_span": ((2, 0, 0), "orchestrator: embed_call, head_call (coalescer.py's _hop_span)"),
    "infer_span": ((0, 0, 1), "embedding: infer, per encoder batch (batcher.py's _infer_span; a batch of one text)"),
    "served": ((0, 1, 0), "head: Predict (grpc_api.py: the metadata dict, the attributes)"),
    "enabled": ((1, 0, 3), "the middleware (orchestrator, embedding); embedding: batcher.embed, embedder.embed"),
    "current": ((1, 0, 0), "orchestrator: the coalescer's job"),
    "inject": ((2, 0, 0), "orchestrator: the embedding call, the head call"),
    "traceresponse": ((1, 0, 1), "the middleware, on the answer's start"),
    "ids": ((1, 0, 1), "a log line: the access log's, at info"),
    "caller_headers": ((1, 0, 1), "the middleware: the caller's traceparent and tracestate looked up"),
}
# What the statements run with: the real call sites' helpers, and stand-ins for their arguments.
NAMESPACE: dict[str, Any] = {"tracing": tracing, "HEADS": [DEFAULT_HEAD], "_hop_span": _hop_span}
NAMESPACE |= {"_infer_span": DynamicBatcher._infer_span, "JOBS": [SimpleNamespace(trace=tracing.current())]}
NAMESPACE["BATCHER"] = SimpleNamespace(_buckets=Buckets.default(32, 256))
NAMESPACE["BATCH"] = [
    SimpleNamespace(ids=np.zeros(16, np.int32), trace=None, lane=SimpleNamespace(name="orchestrator"))
]
NAMESPACE["METADATA"] = (("x-request-id", "0" * 32), ("user-agent", "grpc-python/1.7"))
NAMESPACE["HEADERS"] = {b"host": b"bench", b"content-length": b"60", b"content-type": b"application/json"}
NAMESPACE["HEADERS"] |= {b"x-request-id": b"0" * 32, b"x-request-timeout-ms": b"30000", b"user-agent": b"httpx"}
VARIANT_INFO = [("c64 requests/s", "throughput_per_s"), ("c64 p50 (ms)", "p50_ms"), ("c64 p99 (ms)", "p99_ms")]
VARIANT_INFO += [("core-ms per /classify, the three services", "core_ms_per_request.three_services")]
SIDE_BY_SIDE = (  # a figure's name, its path in a variant's figures, its digits
    *((f"{name} (median)", key, d) for key, _, name, d in MEDIANS),
    *((f"{name} per round", f"{key}_per_round", d) for key, _, name, d in MEDIANS),
    *(("requests", "requests", 0), ("errors", "errors", 0), ("embedding cache hits", "cache_hits", 0)),
    *((f"{n} core-ms per /classify", f"core_ms_per_request.{n}", 3) for n in (*ENGINES, "three_services", "client")),
)
OFF_PATH_COLUMNS: list[Column] = [
    *(("call", lambda c: c[0], None), ("where", lambda c: c[1]["sites"], None)),
    ("ns per call", lambda c: c[1]["ns_per_call"], 0),
    *((f"per /classify: {n}", lambda c, n=n: c[1]["per_classify"].get(n, 0), 0) for n in ENGINES),
    ("us per /classify", lambda c: c[1]["us_per_classify"], 2),
]


@dataclass(frozen=True)
class Plan:
    mode: str
    xla: bool  # the encoders XLA-compiled (quick: off, so they start in seconds)
    rounds: int  # each runs both stacks, alternating which goes first
    warm_s: float  # per stack, before the rounds; not recorded
    run_s: float  # each measured run
    headroom_s: float  # each of the load client's headroom runs
    timing_calls: int  # the off path: calls per timing of a statement
    timing_repeats: int  # timings per statement: the fastest is kept (timeit's advice)


QUICK = Plan("quick", False, 2, 1.0, 2.0, 1.0, 20_000, 2)
FULL = Plan("full", True, 5, 8.0, 15.0, 4.0, 200_000, 7)


def classify(text: str) -> bytes:
    return http_request("POST", "/classify", orjson.dumps({"text": text}))


async def measured(client: httpx.AsyncClient, up: dict[str, Started], texts: Iterator[str], s: float) -> dict[str, Any]:
    """A closed-loop c64 run on the orchestrator, every engine's CPU read around it (its opening requests too)."""
    up = {name.rsplit("-", 1)[0]: engine for name, engine in up.items()}  # "embedding-on": "embedding"
    hits, meters = await counter(client, up["embedding"].url, HITS), Meters({n: e.pid for n, e in up.items()})
    route, pids = one_hop(up["orchestrator"].port, lambda _: classify(next(texts))), [e.pid for e in up.values()]
    run = await closed_run(route, concurrency=HIGH, requests=MAX_REQUESTS, duration_s=s, pids=pids)
    found = figures(run) | {"cpu_s": meters.stop()[1], "cpu_window_requests": len(run.samples) + HIGH}
    found["cache_hits"] = int(await counter(client, up["embedding"].url, HITS) - hits)
    found["errors"] = len(run.samples) - len(run.ok())
    cpu = ", ".join(f"{name} {found['cpu_s'][name] / found['cpu_window_requests'] * 1e3:.2f}" for name in ENGINES)
    say(f"{said(found)}; core-ms per /classify: {cpu}; cache hits {found['cache_hits']}")
    return found


async def rounds(stacks: dict[str, dict[str, Started]], texts: Iterator[str], plan: Plan) -> tuple[Any, Any, list[Any]]:
    """One /classify on each stack (its status and traceresponse), a warm-up run on each, then the rounds."""
    async with httpx.AsyncClient(timeout=30.0) as client:
        urls = {k: f"{up[f'orchestrator-{k}'].url}/classify" for k, up in stacks.items()}
        posted = {k: await client.post(url, json={"text": next(texts)}) for k, url in urls.items()}
        answers = {k: {"status": a.status_code, "traceresponse": a.headers.get(TRACE)} for k, a in posted.items()}
        say(f"both stacks answer: {answers}; warm-up, then rounds of {', '.join(stacks)}")
        warm = {k: await measured(client, up, texts, plan.warm_s) for k, up in stacks.items()}
        runs = []
        for r in range(1, plan.rounds + 1):
            for k in alternating(list(stacks), r):
                runs.append({"round": r, "variant": k, **await measured(client, stacks[k], texts, plan.run_s)})
    return answers, warm, runs


def variant_figures(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Throughput, p50 and p99: the median over rounds, and per round; CPU per /classify pooled over rounds."""
    mine = [r for r in runs if r["variant"] == key]
    window = sum(r["cpu_window_requests"] for r in mine)
    cpu = {name: sum(r["cpu_s"][name] for r in mine) / window * 1e3 for name in (*ENGINES, "client")}
    cpu["three_services"] = sum(cpu[name] for name in ENGINES)
    found = {"runs": len(mine), "core_ms_per_request": cpu}
    found |= {k: sum(r[k] for r in mine) for k in ("requests", "errors", "cache_hits")}
    for name, path, *_ in MEDIANS:
        found[f"{name}_per_round"] = values = list(per_round(mine, key, partial(dig, path=path)).values())
        found[name] = float(statistics.median(values))
    return found


def off_path(plan: Plan) -> dict[str, Any]:
    """Each STATEMENTS' statement's ns per call: the fastest of its timings, less an empty statement's."""
    if tracing.enabled():
        raise RuntimeError("tracing is on in the scenario's own process")

    def best(statement: str) -> float:
        timer = timeit.Timer(statement, globals=NAMESPACE)
        return min(timer.repeat(repeat=plan.timing_repeats, number=plan.timing_calls)) / plan.timing_calls * 1e9

    empty, calls = best("pass"), dict[str, dict[str, Any]]()
    for key, statement in STATEMENTS.items():
        (counts, sites), ns, count = OFF_PATH[key], max(0.0, best(statement) - empty), sum(OFF_PATH[key][0])
        per_classify = {e: n for e, n in zip(ENGINES, counts, strict=True) if n}
        calls[key] = {"statement": statement, "sites": sites, "ns_per_call": ns, "per_classify": per_classify}
        calls[key]["us_per_classify"] = ns * count / 1e3
        say(f"off path, {key}: {ns:.0f} ns per call, x{count} per /classify")
    us = {e: sum(c["ns_per_call"] * c["per_classify"].get(e, 0) for c in calls.values()) / 1e3 for e in ENGINES}
    return {"empty_statement_ns": empty, "calls": calls, "us_per_classify": sum(us.values()), "us_by_service": us}


def run(ctx: Context) -> dict[str, Any]:
    plan: Plan = ctx.plan
    for name in [n for n in os.environ if n.startswith("OTEL_")]:  # OFF gets none, ON only its own
        say(f"ignoring {name} from the environment")
        del os.environ[name]
    ctx.settings.update(concurrency=HIGH, texts="perf.sentences.new_texts(): every text new")
    texts = new_texts()
    with tempfile.TemporaryDirectory(prefix="tracing-") as work, ctx.stacks.started(helper_server("otlp")) as sink:
        envs = {"off": {}, "on": {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, **SAMPLING}}
        with ExitStack() as up:
            pipes = {k: pipeline(Path(work), k, xla=plan.xla, env=env) for k, env in envs.items()}
            stacks = {k: up.enter_context(running(ctx.stacks, pipe)) for k, pipe in pipes.items()}
            answers, warm, runs = asyncio.run(rounds(stacks, texts, plan))
            off = {"orchestrator": stacks["off"]["orchestrator-off"]}
            room = headroom(ctx.stacks, lambda _: classify(next(texts)), off, duration_s=plan.headroom_s)
        received = httpx.get(sink.url, timeout=10.0).json()  # ON's services have stopped: every span flushed
    say(f"sink: {received}")
    path, t = off_path(plan), ratio(runs, "on", "off", lambda r: r["throughput_per_s"])
    variants = {key: {"title": TITLES[key], "env": env, **variant_figures(runs, key)} for key, env in envs.items()}
    # Every /classify ON answered: the runs', their opening requests, the warm-up's, the check.
    on_sent = sum(r["cpu_window_requests"] for r in (*(r for r in runs if r["variant"] == "on"), warm["on"])) + 1
    found = {"checks": answers, "warm_up": warm, "runs": runs, "variants": variants, "sink": received, "headroom": room}
    found |= {"throughput_ratio": t["median"], "throughput_ratio_per_round": t["per_round"]}
    found |= {"throughput_ratio_spread": t["spread"], "on_requests_sent": on_sent, "off_path": path}
    found["sampled_share"] = received["spans_by_name"].get(SAMPLED_SPAN, 0) / on_sent
    found["off_path_share"] = path["us_per_classify"] / (variants["off"]["core_ms_per_request"]["three_services"] * 1e3)
    return found


def targets(results: dict[str, Any]) -> list[Target]:
    variants, sink, answers = results["variants"], results["sink"], results["checks"]
    fastest = max(v["throughput_per_s"] for v in variants.values())
    return [
        at_least("ON/OFF: /classify c64 throughput (median of rounds)", results["throughput_ratio"], 0.95),
        info("ON/OFF: the lowest round's throughput ratio", min(results["throughput_ratio_per_round"])),
        at_most("errors, OFF and ON", sum(v["errors"] for v in variants.values()), 0),
        at_least("sink: export requests received (from ON)", sink["export_requests"], 1),
        at_most("sink: export requests it could not decode", sink["undecoded"], 0),
        info(f"sink: {SAMPLED_SPAN} spans / ON's /classify requests (ratio 0.1)", results["sampled_share"]),
        at_least("ON: answer has traceresponse (1: yes)", int(bool(answers["on"]["traceresponse"])), 1),
        at_most("OFF: answer has traceresponse (1: yes)", int(bool(answers["off"]["traceresponse"])), 0),
        *(info(f"{k.upper()}: {name}", dig(variants[k], path)) for name, path in VARIANT_INFO for k in ("off", "on")),
        info("off path: us per /classify (no coalescing: an upper bound)", results["off_path"]["us_per_classify"]),
        at_most("off path / OFF's CPU per /classify (%)", results["off_path_share"] * 100, OFF_PATH_TARGET * 100),
        *headroom_targets(results["headroom"], fastest),
    ]


def checks(results: dict[str, Any]) -> list[str]:
    (off, on), sink, share = results["checks"].values(), results["sink"], results["sampled_share"]
    rounds_, span_ns = len({r["round"] for r in results["runs"]}), results["off_path"]["calls"]["span"]["ns_per_call"]
    found = []
    if off != {"status": 200, "traceresponse": None}:
        found.append(f"OFF's /classify answered {off}, not 200 without a traceresponse")
    if on["status"] != 200 or not str(on["traceresponse"]).startswith("00-"):
        found.append(f"ON's /classify answered {on}, not 200 with a traceresponse")
    if [r["variant"] for r in results["runs"][:4]] != ["off", "on", "on", "off"][: 2 * rounds_]:
        found.append("the rounds did not alternate which stack went first")
    for key, x in results["variants"].items():
        if x["runs"] != rounds_ or not x["requests"] or x["errors"] or x["cache_hits"]:
            found.append(f"{key}: {x['runs']} runs, {x['errors']} errors, {x['cache_hits']} hits, {x['requests']} sent")
        if not all(x["core_ms_per_request"][name] > 0 for name in ENGINES):
            found.append(f"{key}: a service's CPU read nothing: {x['core_ms_per_request']}")
    if not (sink["export_requests"] and sink["spans"] and sink["traces"]) or sink["undecoded"]:
        found.append(f"the sink got {sink['export_requests']} exports ({sink['undecoded']} bad), {sink['spans']} spans")
    if not 0 < share < 0.5:
        found.append(f"{share:.3f} of ON's requests were sampled, not about 0.1")
    if span_ns <= 0 or not 0 < results["off_path_share"] < 1:
        found.append(f"the off path's timings are off: span {span_ns} ns")
    for name, outcome in (("null_server", "429"), ("orchestrator_healthz", "200")):
        if set(outcomes := results["headroom"][name]["outcomes"]) != {outcome}:
            found.append(f"headroom, {name}: answered {outcomes}, not only {outcome}")
    return found


def tables(report: dict[str, Any]) -> list[str]:
    results, plan = report["results"], report["settings"]["plan"]
    (off, on), sink, path = results["variants"].values(), results["sink"], results["off_path"]
    per_round = ", ".join(f"{r:.3f}" for r in results["throughput_ratio_per_round"])
    by_service = ", ".join(f"{name} {us:.2f}" for name, us in path["us_by_service"].items())
    return [
        "## On against off\n",
        f"OFF: {off['title']}; ON: {on['title']}. {plan['rounds']} round(s) of {plan['run_s']:g} s per stack; "
        f"latencies from send, of the 200s; CPU per request ({HIGH} opening requests included), pooled over rounds.\n",
        *side_by_side(SIDE_BY_SIDE, {"OFF": off, "ON": on}),
        f"\nON/OFF throughput, the median of the rounds' ratios: {num(results['throughput_ratio'], 3)} (spread "
        f"{num(results['throughput_ratio_spread'], 3)}); per round {per_round}.",
        "\n## The sink\n",
        f"{sink['export_requests']} export requests to /v1/traces ({sink['bytes']:,} bytes, {sink['undecoded']} "
        f"undecodable; {sink['other_requests']} POSTs elsewhere) holding {sink['spans']:,} spans of "
        f"{sink['traces']:,} traces. ON answered {results['on_requests_sent']:,} /classify requests; "
        f"{results['sampled_share']:.3f} of them made a sampled `{SAMPLED_SPAN}` span. The answers' traceresponse: "
        f"OFF `{results['checks']['off']['traceresponse']}`, ON `{results['checks']['on']['traceresponse']}`.\n",
        *table([("service: span", lambda r: r[0], None), ("spans", lambda r: r[1], 0)], sink["spans_by_name"].items()),
        "\n## The off path\n",
        f"Each statement timed {plan['timing_calls']:,} times, the fastest of {plan['timing_repeats']} timings, "
        f"less an empty statement's {path['empty_statement_ns']:.1f} ns; counted per /classify as if alone.\n",
        *table(OFF_PATH_COLUMNS, path["calls"].items()),
        f"\nTogether {path['us_per_classify']:.2f} us per /classify ({by_service}), against OFF's "
        f"{off['core_ms_per_request']['three_services']:.2f} core-ms per /classify over the three services: "
        f"{results['off_path_share']:.4%}.",
    ]


FIGURES = (
    *("checks.on.traceresponse", "runs.0.variant", "warm_up.on.requests", "on_requests_sent", "sampled_share"),
    *("throughput_ratio", "throughput_ratio_spread", "off_path.us_per_classify", "off_path_share"),
    *(f"variants.{k}.{name}" for k in ("off", "on") for name in ("throughput_per_s", "p50_ms", "p99_ms", "requests")),
    *(f"variants.{k}.{name}_per_round" for k in ("off", "on") for name in ("throughput_per_s", "p50_ms")),
    *(f"variants.{k}.core_ms_per_request.{e}" for k in ("off", "on") for e in (*ENGINES, "three_services", "client")),
    *(f"sink.{name}" for name in ("export_requests", "spans", "traces", "bytes", f"spans_by_name.{SAMPLED_SPAN}")),
    *(f"off_path.calls.{key}.ns_per_call" for key in OFF_PATH),
    *(f"off_path.us_by_service.{e}" for e in ENGINES),
    *(f"headroom.{name}.requests_per_s" for name in ("null_server", "orchestrator_healthz")),
)
SCENARIO = Scenario("tracing", TITLE, {"quick": QUICK, "full": FULL}, run, targets, tables, FIGURES, checks)
