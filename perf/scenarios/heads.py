"""Several heads on one /classify (issue 14), beside the embedding service alone (issue 24), in one run.

- One pipeline whose head serves three heads: `sentiment`, `topic` and `sentiment2` (sentiment's version 1
  copied under a temporary heads root). The embedding cache is off: the load repeats its 64 texts, and heads
  are measured here, not the cache.
- The variants, one text per request: `/classify` asking (a) one head, (b) two, (c) three; and (e)
  `/v1/embeddings` straight to the embedding service, with the body the orchestrator sends it, so that
  (a) - (e) is what the orchestrator and the head add to a request. Each at c1 (latency) and c64
  (throughput), in rounds that rotate which variant goes first, so drift on a shared machine falls on all.
- Each run reads the CPU of the orchestrator, the head, the embedding service and the load client (/proc,
  all threads), the orchestrator's and head's by thread name, and the orchestrator's embedding and head
  calls (how much it coalesced).
- The orchestrator profiled: a second one with the same settings under cProfile (perf.harness.profiled), at
  c64 with one head, once on its main thread's CPU clock and once on the wall clock: the top functions, and
  the own time by package and by area (HTTP server, framework, embedding client, gRPC, event loop).
- The load client's headroom: the null server and the orchestrator's /healthz, beside /classify's rate."""

import asyncio
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from perf.harness.client import MakeRequest, http_request, one_hop
from perf.harness.headroom import headroom, headroom_targets
from perf.harness.load import closed_run
from perf.harness.meters import Meter, Meters, counter, thread_cpu_s, thread_delta
from perf.harness.profiled import CLOCKS, TOP, analysed, profiled
from perf.harness.profiled import tables as profile_tables
from perf.harness.progress import say
from perf.harness.report import Target, at_least, at_most, dig, info, num
from perf.harness.scenario import Context, Scenario
from perf.harness.stacks import Stacks, Started, pipeline, port_of, running, wait_for_heads
from perf.harness.stats import figures, ms, per_round, ratio, rotated, said
from perf.sentences import SENTENCES
from stack import services as stack_services
from stack.services import DEFAULT_HEADS_ROOT, Service

TITLE = "Several heads on one /classify, and /v1/embeddings alone"
EXTRA_HEAD = "sentiment2"  # sentiment's version 1, copied under a temporary heads root
HIGH = 64  # the throughput runs' concurrency
MAX_REQUESTS = 1_000_000  # per run: runs end at their duration long before this
ENGINES = ("orchestrator", "head", "embedding")  # the processes whose CPU each run reads
THREADED = ("orchestrator", "head")  # and whose CPU it also reads by thread


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    heads: tuple[str, ...]  # none: /v1/embeddings on the embedding service

    @property
    def path(self) -> str:
        return "/classify" if self.heads else "/v1/embeddings"

    @property
    def server(self) -> str:
        return "orchestrator" if self.heads else "embedding"

    def body(self, text: str) -> dict[str, Any]:
        """One head as `head` (the one-head answer); more as `heads`; none: the orchestrator's embedding call."""
        if not self.heads:
            return {"input": [text], "encoding_format": "base64"}
        return {"text": text, "head": self.heads[0]} if len(self.heads) == 1 else {"text": text, "heads": [*self.heads]}

    def requests(self) -> MakeRequest:
        """Request i: the variant's body for SENTENCES[i % 64]."""
        found = [http_request("POST", self.path, orjson.dumps(self.body(text))) for text in SENTENCES]
        return lambda index: found[index % len(found)]


VARIANTS = (
    Variant("a", "one head", ("sentiment",)),
    Variant("b", "two heads", ("sentiment", "topic")),
    Variant("c", "three heads", ("sentiment", "topic", EXTRA_HEAD)),
    Variant("e", "/v1/embeddings alone", ()),
)
ONE, TWO, THREE, EMBEDDINGS = VARIANTS
PAIRS = (("b", "a"), ("c", "a"), ("a", "e"))  # compared: top over bottom
# The orchestrator's profile: its own time by area, each area's packages (others: "other: <package>"); a
# standard-library module named here does a job of its own, the others (re, typing...) are helpers.
AREAS = {
    "HTTP server: connections, request parsing (uvicorn, httptools)": "uvicorn httptools",
    "web framework: routing, middleware, dependencies, body validation (starlette, fastapi, pydantic)": (
        "starlette fastapi pydantic pydantic_core typing_extensions opentelemetry typing_inspection annotated_types"
    ),
    "embedding HTTP client (httpx, httpcore, h11, anyio)": "httpx httpcore h11 anyio sniffio certifi idna",
    "gRPC client (grpc.aio, protobuf)": "grpc google",
    "event loop: tasks, futures, sockets (asyncio, uvloop)": "asyncio _asyncio uvloop socket _socket select selectors",
    "JSON (stdlib json: request bodies; orjson: answers, embedding calls)": "json _json orjson",
    "orchestrator's own code (coalescer, pipeline, clients, routes)": "orchestrator",
    "service_common: middleware, deadlines, errors, logging context": "service_common",
    "logging": "logging",
    "metrics (prometheus_client)": "prometheus_client",
    "numpy": "numpy",
    "base64": "base64 binascii",
    "TLS set-up (ssl)": "ssl _ssl",
}
AREA_OF = {package: area for area, packages in AREAS.items() for package in packages.split()}
Latencies = dict[tuple[str, int], list[float]]  # (variant, concurrency) -> its successes' latencies (s), every round


@dataclass(frozen=True)
class Plan:
    mode: str
    xla: bool  # the encoder XLA-compiled (quick: off, so it starts in seconds)
    rounds: int  # each rotates which variant goes first
    idle_s: float  # the services' CPU with no load, for the net figures
    warm_s: float  # per variant, at c64, before the rounds (and a third of it at c1); not recorded
    c1_s: float
    c64_s: float
    profile_s: float  # the profiled orchestrator's c64 run
    headroom_s: float  # each of the load client's headroom runs


QUICK = Plan("quick", False, 1, 1.5, 1.5, 3.0, 4.0, 4.0, 2.0)
FULL = Plan("full", True, 3, 4.0, 3.0, 6.0, 10.0, 10.0, 4.0)


def answered(up: dict[str, Started], variant: Variant) -> dict[str, Any]:
    """One request of the variant: its status, and each head's label (or the number of vectors)."""
    response = httpx.post(up[variant.server].url + variant.path, json=variant.body(SENTENCES[0]), timeout=30.0)
    body = response.json()
    if not variant.heads:
        return {"status": response.status_code, "vectors": len(body.get("data", []))}
    answers = {variant.heads[0]: body} if len(variant.heads) == 1 else body.get("heads", {})
    labels = {name: found["predictions"][0]["label"] for name, found in answers.items() if "predictions" in found}
    return {"status": response.status_code, "labels": labels}


async def hop_calls(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The orchestrator's own counts: embedding calls, the requests they carried, and head calls."""
    return {
        "embedding_calls": await counter(client, url, "orchestrator_requests_per_call_count"),
        "coalesced_requests": await counter(client, url, "orchestrator_requests_per_call_sum"),
        "head_calls": await counter(client, url, "orchestrator_stage_duration_seconds_count", 'stage="head_call"'),
    }


async def measured(
    client: httpx.AsyncClient, up: dict[str, Started], variant: Variant, concurrency: int, seconds: float
) -> tuple[dict[str, Any], list[float]]:
    """A closed-loop run with every engine's CPU (its CPU window holds the run's opening requests too, one
    per connection), the threads', and the orchestrator's hop calls; and its successes' latencies."""
    url, pids = up["orchestrator"].url, {name: up[name].pid for name in ENGINES}
    calls, threads = await hop_calls(client, url), {name: thread_cpu_s(pids[name]) for name in THREADED}
    meters, route = Meters(pids), one_hop(up[variant.server].port, variant.requests())
    load = closed_run(route, concurrency=concurrency, requests=MAX_REQUESTS, duration_s=seconds, pids=[*pids.values()])
    run = await load
    window_s, cpu_s = meters.stop()
    found = {"variant": variant.key, "concurrency": concurrency, **figures(run)}  # service_*: the three engines
    found |= {"cpu_window_requests": len(run.samples) + concurrency, "cpu_window_s": window_s, "cpu_s": cpu_s}
    found["threads_cpu_s"] = {name: thread_delta(threads[name], thread_cpu_s(pids[name])) for name in THREADED}
    found["hop_calls"] = {name: count - calls[name] for name, count in (await hop_calls(client, url)).items()}
    return found, [s.service_s for s in run.ok()]


async def rounds(up: dict[str, Started], plan: Plan) -> tuple[list[dict[str, Any]], Latencies]:
    """Round 0, the warm-up (each variant at c64, then at c1 for a third as long), unrecorded; then the rounds:
    all variants at c1, then all at c64, in an order that rotates by round."""
    runs: list[dict[str, Any]] = []
    latencies: Latencies = {}
    async with httpx.AsyncClient(timeout=10.0) as client:
        for round_ in range(plan.rounds + 1):
            levels = ((1, plan.c1_s), (HIGH, plan.c64_s)) if round_ else ((HIGH, plan.warm_s), (1, plan.warm_s / 3))
            for concurrency, seconds in levels:
                for variant in rotated(VARIANTS, round_ or 1):
                    run, ok = await measured(client, up, variant, concurrency, seconds)
                    cpu = ", ".join(f"{k} {v / run['cpu_window_requests'] * 1e3:.2f}" for k, v in run["cpu_s"].items())
                    at = f"round {round_}" if round_ else "warm-up"
                    say(f"{at}, ({variant.key}) {variant.title} c{concurrency}: {said(run)}; core-ms each: {cpu}")
                    if round_:
                        runs.append({"round": round_, **run})
                        latencies.setdefault((variant.key, concurrency), []).extend(ok)
    return runs, latencies


def pooled_cpu(runs: Sequence[dict[str, Any]], idle: dict[str, float]) -> dict[str, Any]:
    """Core-ms per request over `runs` pooled: each engine's, orchestrator + head, net of idle; by thread;
    and the orchestrator's hop calls (none for /v1/embeddings)."""
    count, window_s = sum(r["cpu_window_requests"] for r in runs), sum(r["cpu_window_s"] for r in runs)
    total = {name: sum(r["cpu_s"][name] for r in runs) for name in (*ENGINES, "client")}
    raw = {name: seconds / count * 1e3 for name, seconds in total.items()}
    net = {name: (total[name] - idle[name] * window_s) / count * 1e3 for name in ENGINES}
    for found in (raw, net):
        found["orchestrator_plus_head"] = found["orchestrator"] + found["head"]
    threads: dict[str, dict[str, float]] = {}
    for engine in THREADED:
        seconds: Counter[str] = Counter()
        for r in runs:
            seconds.update(r["threads_cpu_s"][engine])
        threads[engine] = {name: s / count * 1e3 for name, s in seconds.most_common()}
    calls = {name: sum(r["hop_calls"][name] for r in runs) for name in runs[0]["hop_calls"]}
    per_call = {"requests_per_embedding_call": "coalesced_requests", "head_calls_per_embedding_call": "head_calls"}
    hops = {k: calls[v] / calls["embedding_calls"] if calls["embedding_calls"] else None for k, v in per_call.items()}
    found = {"requests": count, "core_ms_per_request": raw, "net_of_idle": net, "by_thread": threads}
    return found | {"hop_calls": hops | calls}


def variant_figures(runs: Sequence[dict[str, Any]], latencies: Latencies, idle: dict[str, float]) -> dict[str, Any]:
    """Each variant at c1 and c64: throughput (median over rounds), latency pooled over rounds, CPU."""
    found: dict[str, Any] = {}
    for variant in VARIANTS:
        found[variant.key] = {"title": variant.title, "path": variant.path, "heads": list(variant.heads)}
        for concurrency in (1, HIGH):
            mine = [r for r in runs if r["variant"] == variant.key and r["concurrency"] == concurrency]
            throughput = [r["throughput_per_s"] for r in mine]
            found[variant.key][f"c{concurrency}"] = {
                "runs": len(mine),
                "requests": sum(r["requests"] for r in mine),
                "errors": sum(n for r in mine for outcome, n in r["outcomes"].items() if outcome != "200"),
                "throughput_per_s": float(statistics.median(throughput)),
                "throughput_per_round": throughput,
                "latency_ms": ms(latencies.get((variant.key, concurrency), [])),
                "p50_ms_per_round": [r["latency_ms"]["p50"] for r in mine],
                "cpu": pooled_cpu(mine, idle),
            }
    return found


def compared(runs: Sequence[dict[str, Any]], variants: dict[str, Any], top: str, bottom: str) -> dict[str, Any]:
    """`top` against `bottom`: the c64 throughput ratio per round (its median and spread), c1 p50 deltas
    of the pooled latencies and per round."""
    at = {level: [r for r in runs if r["concurrency"] == level] for level in (1, HIGH)}
    throughput = ratio(at[HIGH], top, bottom, lambda r: r["throughput_per_s"])
    over, under = (per_round(at[1], key, lambda r: r["latency_ms"]["p50"]) for key in (top, bottom))

    def delta(level: str, percentile: str) -> float:
        return float(variants[top][level]["latency_ms"][percentile] - variants[bottom][level]["latency_ms"][percentile])

    return {
        "c64_throughput_ratio": throughput["median"],
        "c64_throughput_ratio_per_round": throughput["per_round"],
        "c64_throughput_ratio_spread": throughput["spread"],
        "c1_p50_delta_ms": delta("c1", "p50"),
        "c1_p50_delta_ms_per_round": [over[r] - under[r] for r in over if r in under],
        "c1_p99_delta_ms": delta("c1", "p99"),
        "c64_p50_delta_ms": delta("c64", "p50"),
    }


def profile(stacks: Stacks, base: Service, clock: str, plan: Plan) -> dict[str, Any]:
    """A second orchestrator (same settings, its own port) under perf.harness.profiled with `clock`: warmed
    up at c64 with one head, then profiled over a c64 run."""
    service = profiled(base, clock, stacks.logs / f"orchestrator-{clock}.prof", "ORCHESTRATOR_PORT")
    profile_file, route = Path(service.args[0]), one_hop(port_of(service), ONE.requests())
    with stacks.started(service) as up:
        wait_for_heads(service.url, ONE.heads)
        asyncio.run(closed_run(route, concurrency=HIGH, requests=MAX_REQUESTS, duration_s=plan.warm_s))
        os.kill(up.pid, signal.SIGUSR1)
        time.sleep(0.2)
        meter = Meter(up.pid)  # around the opening requests too: the profiler sees them
        load = closed_run(route, concurrency=HIGH, requests=MAX_REQUESTS, duration_s=plan.profile_s, pids=[up.pid])
        run, usage = asyncio.run(load), meter.stop()
        os.kill(up.pid, signal.SIGUSR2)
        for _ in range(300):  # up to 30 s
            if profile_file.is_file():
                break
            time.sleep(0.1)
    requests = len(run.samples) + HIGH
    cpu = {"profiled_requests": requests, "process_core_ms_per_request": usage.service_cpu_s / requests * 1e3}
    found: dict[str, Any] = {"run": {"concurrency": HIGH, **figures(run), **cpu}}
    if not profile_file.is_file():
        say(f"{service.name} wrote no profile: skipped")
        return {**found, "skipped": "no profile was written"}
    found |= {**analysed(profile_file, requests, clock, AREA_OF), "profile_file": str(profile_file)}
    say(f"{clock}-clock profile: {found['us_per_request']:.0f} us per request; top: {found['by_area'][0]['name']}")
    return found


def run(ctx: Context) -> dict[str, Any]:
    plan: Plan = ctx.plan
    ctx.settings.update(
        variants={v.key: {"title": v.title, "path": v.path, "body": v.body("<text>")} for v in VARIANTS},
        texts=f"perf.sentences.SENTENCES ({len(SENTENCES)}), request i sends text i mod {len(SENTENCES)}",
        high_concurrency=HIGH,
    )
    with tempfile.TemporaryDirectory(prefix="heads-") as work:
        found = pipeline(Path(work), xla=plan.xla, heads=TWO.heads, embedding_settings={"cache_bytes": "0"})
        copied = Path(work) / "heads" / EXTRA_HEAD
        shutil.copytree(DEFAULT_HEADS_ROOT / "sentiment" / "1", copied / "1")
        heads = {**stack_services.read_heads(found.config_path), EXTRA_HEAD: copied}
        stack_services.write_heads(found.config_path, heads)
        with running(ctx.stacks, found) as up:
            listed = httpx.get(f"{found.orchestrator.url}/v1/heads", timeout=5.0).json()["heads"]
            answers = {variant.key: answered(up, variant) for variant in VARIANTS}
            say(f"every variant answers: {answers}")
            meters = Meters({name: up[name].pid for name in ENGINES})
            time.sleep(plan.idle_s)
            idle_s, idle_cpu = meters.stop()
            idle = {name: idle_cpu[name] / idle_s for name in ENGINES}
            runs, latencies = asyncio.run(rounds(up, plan))
            profiles = {clock: profile(ctx.stacks, found.orchestrator, clock, plan) for clock in CLOCKS}
            healthz = {"orchestrator": up["orchestrator"]}
            room = headroom(ctx.stacks, ONE.requests(), healthz, duration_s=plan.headroom_s)
            config = found.config_path.read_text(encoding="utf-8")
    variants = variant_figures(runs, latencies, idle)
    comparisons = {f"{top}_over_{bottom}": compared(runs, variants, top, bottom) for top, bottom in PAIRS}
    return {
        "heads_config_path": str(found.config_path),
        "heads_config": config,
        "heads_listed": listed,
        "checks": answers,
        "idle": {"wall_s": idle_s, "cores": idle},
        "runs": runs,
        "variants": variants,
        "comparisons": {**comparisons, "rounds": plan.rounds},
        "profile": profiles,
        "headroom": room,
    }


def targets(results: dict[str, Any]) -> list[Target]:
    v, cmp = results["variants"], results["comparisons"]
    ab, ca, ae = (cmp[f"{top}_over_{bottom}"] for top, bottom in PAIRS)
    cpu, net = ({k: v[k]["c64"]["cpu"][part] for k in "abc"} for part in ("core_ms_per_request", "net_of_idle"))
    both = {k: cpu[k]["orchestrator_plus_head"] for k in "abc"}  # orchestrator + head
    fastest = max(v[variant.key]["c64"]["throughput_per_s"] for variant in (ONE, TWO, THREE))
    return [
        at_least("(b)/(a): two heads / one head, c64 throughput", ab["c64_throughput_ratio"], 0.90),
        info("(c)/(a): three heads / one head, c64 throughput", ca["c64_throughput_ratio"]),
        at_most("(b)-(a): two heads - one head, c1 p50 (ms)", ab["c1_p50_delta_ms"], 1.0),
        info("(c)-(a): three heads - one head, c1 p50 (ms)", ca["c1_p50_delta_ms"]),
        at_most("(a)-(e): /classify - /v1/embeddings, c1 p50 (ms)", ae["c1_p50_delta_ms"], 3.0),
        at_least("(a)/(e): /classify / /v1/embeddings, c64 throughput", ae["c64_throughput_ratio"], 0.95),
        at_most("(a) one head, c64: orchestrator + head core-ms per /classify", both["a"], 0.5),
        at_most("(a) one head, c64: orchestrator core-ms per /classify", cpu["a"]["orchestrator"], 0.4),
        info("(a) one head, c64: head core-ms per /classify", cpu["a"]["head"]),
        info("(a) one head, c64: orchestrator + head, net of idle", net["a"]["orchestrator_plus_head"]),
        info("(b) two heads, c64: orchestrator + head core-ms per /classify", both["b"]),
        info("(c) three heads, c64: orchestrator + head core-ms per /classify", both["c"]),
        *headroom_targets(results["headroom"], fastest, "/classify c64"),
        *(info(f"({key}) {x['title']}: {name}", dig(x, path)) for key, x in v.items() for name, path in REPORTED),
    ]


def checks(results: dict[str, Any]) -> list[str]:
    found = []
    listed = {head["name"] for head in results["heads_listed"] if head["ready"]}
    if not set(THREE.heads) <= listed:
        found.append(f"the orchestrator lists {sorted(listed)} ready, not all of {THREE.heads}")
    for variant in VARIANTS:
        answer, figures_ = results["checks"][variant.key], results["variants"][variant.key]
        got = list(answer.get("labels", {})) if variant.heads else answer.get("vectors")
        if answer["status"] != 200 or got != (list(variant.heads) if variant.heads else 1):
            found.append(f"({variant.key}) {variant.title} answered {answer}")
        for level in ("c1", "c64"):
            x = figures_[level]
            if x["errors"] or not x["requests"] or x["runs"] != results["comparisons"]["rounds"]:
                found.append(f"({variant.key}) {level}: {x['errors']} errors in {x['requests']}, {x['runs']} runs")
        cpu, hops = figures_["c64"]["cpu"]["core_ms_per_request"], figures_["c64"]["cpu"]["hop_calls"]
        if variant.heads and not (cpu["orchestrator"] > 0 and cpu["head"] > 0):
            found.append(f"({variant.key}) c64: no orchestrator or head CPU read: {cpu}")
        # One Predict per head asked, per embedding call (a few more: the readiness checks' label reads).
        per_call, coalesced = hops["head_calls_per_embedding_call"] or 0, hops["requests_per_embedding_call"] or 0
        if variant.heads and (per_call < len(variant.heads) * 0.9 or coalesced < 1):
            found.append(f"({variant.key}) c64, per embedding call: {per_call:.2f} Predicts, {coalesced:.1f} requests")
    for clock, profile in results["profile"].items():
        if "skipped" in profile:
            found.append(f"the {clock}-clock profile was skipped: {profile['skipped']}")
        elif abs(sum(area["share"] for area in profile["by_area"]) - 1) > 1e-6:
            found.append(f"the {clock}-clock profile's areas do not add up to the whole")
    for name, outcome in (("null_server", "429"), ("orchestrator_healthz", "200")):
        if set(results["headroom"][name]["outcomes"]) != {outcome}:
            found.append(f"headroom, {name}: answered {results['headroom'][name]['outcomes']}, not only {outcome}")
    return found


def tables(report: dict[str, Any]) -> list[str]:
    results = report["results"]
    v, cmp = results["variants"], results["comparisons"]
    idle = ", ".join(f"{name} {cores:.3f}" for name, cores in results["idle"]["cores"].items()) + " cores"

    def cpu(x: dict[str, Any], part: str, digits: int = 3, level: str = "c64") -> str:
        return num(x[level]["cpu"]["core_ms_per_request"][part], digits)

    def threads(x: dict[str, Any], engine: str) -> str:  # the top five
        top = list(x["c64"]["cpu"]["by_thread"][engine].items())[:5]
        return ", ".join(f"{name} {value:.3f}" for name, value in top if value > 0) or "-"

    at_c1 = "; ".join(
        f"({k}) orchestrator {cpu(x, 'orchestrator', 2, 'c1')}, head {cpu(x, 'head', 2, 'c1')}"
        for k, x in v.items()
        if x["heads"]
    )
    return [
        "## The variants",
        "",
        "Latencies from send, over every round's requests; throughput: the median over rounds. CPU over each "
        f"c64 run (its {HIGH} opening requests included), pooled over rounds, in core-ms per request; idle: {idle}.",
        "",
        "| variant | heads | c1 p50 ms | c1 p99 ms | c64 req/s | c64 p50 ms | c64 p99 ms | orchestrator | head | "
        "orch + head | embedding | client | requests per embedding call | head calls per embedding call | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| ({key}) {x['title']} | {', '.join(x['heads']) or '-'} | {num(x['c1']['latency_ms']['p50'])} | "
            f"{num(x['c1']['latency_ms']['p99'])} | {x['c64']['throughput_per_s']:.1f} | "
            f"{num(x['c64']['latency_ms']['p50'])} | {num(x['c64']['latency_ms']['p99'])} | {cpu(x, 'orchestrator')} | "
            f"{cpu(x, 'head')} | {cpu(x, 'orchestrator_plus_head')} | {cpu(x, 'embedding', 2)} | {cpu(x, 'client')} | "
            f"{num(x['c64']['cpu']['hop_calls']['requests_per_embedding_call'], 1)} | "
            f"{num(x['c64']['cpu']['hop_calls']['head_calls_per_embedding_call'], 2)} | "
            f"{x['c1']['errors'] + x['c64']['errors']} |"
            for key, x in v.items()
        ),
        "",
        "Compared, round by round (c64 throughput ratio; c1 p50 delta in ms):",
        "",
        "| | ratio, median | spread | per round | c1 p50 delta ms | per round | c1 p99 delta ms |",
        "|---|---:|---:|---|---:|---|---:|",
        *(
            f"| ({top})/({bottom}) | {num(c['c64_throughput_ratio'], 3)} | {num(c['c64_throughput_ratio_spread'], 3)} "
            f"| {', '.join(f'{r:.3f}' for r in c['c64_throughput_ratio_per_round'])} | {c['c1_p50_delta_ms']:+.2f} | "
            f"{', '.join(f'{d:+.2f}' for d in c['c1_p50_delta_ms_per_round'])} | {c['c1_p99_delta_ms']:+.2f} |"
            for top, bottom in PAIRS
            for c in [cmp[f"{top}_over_{bottom}"]]
        ),
        "",
        "CPU by thread name at c64, core-ms per request (the top five; *python* is the main thread, the event "
        "loop, and any thread Python started; *event_engine* and the like are gRPC's C threads):",
        "",
        "| variant | orchestrator | head |",
        "|---|---|---|",
        *(f"| ({key}) | {threads(x, 'orchestrator')} | {threads(x, 'head')} |" for key, x in v.items()),
        "",
        f"At c1 (no coalescing: every request its own embedding call and Predicts), core-ms per /classify: {at_c1}.",
        "",
        "## Profile of the orchestrator (c64, one head)",
        "",
        *profile_tables(results["profile"], v["a"]["c64"]["cpu"]["core_ms_per_request"]["orchestrator"]),
        "",
        f"## The heads config (`{results['heads_config_path']}`), read by the head and the orchestrator",
        "",
        "```",
        results["heads_config"].rstrip(),
        "```",
    ]


# Each variant's figures reported as targets too: a name and a path.
REPORTED = (
    *((f"c1 {p} (ms)", f"c1.latency_ms.{p}") for p in ("p50", "p99")),
    ("c64 requests/s", "c64.throughput_per_s"),
    *((f"c64 {p} (ms)", f"c64.latency_ms.{p}") for p in ("p50", "p99")),
)
_LEVEL_FIGURES = (
    *(f"c{c}.latency_ms.{p}" for c in (1, HIGH) for p in ("p50", "p99")),
    *(f"c{c}.throughput_per_s" for c in (1, HIGH)),
    *(f"c{c}.cpu.core_ms_per_request.{e}" for c in (1, HIGH) for e in (*ENGINES, "client", "orchestrator_plus_head")),
    f"c{HIGH}.cpu.net_of_idle.orchestrator_plus_head",
    f"c{HIGH}.cpu.by_thread.orchestrator",
)
_COMPARED = ("c64_throughput_ratio", "c64_throughput_ratio_spread", "c1_p50_delta_ms", "c64_p50_delta_ms")
_PROFILED = ("us_per_request", "run.process_core_ms_per_request", "by_area.0.share", "by_package.0.name")
FIGURES = (
    *("checks.a.labels.sentiment", "checks.e.vectors", "heads_listed.2.name", "heads_config"),
    *("idle.cores.orchestrator", "runs.0.variant"),
    *(f"variants.{v.key}.{path}" for v in VARIANTS for path in _LEVEL_FIGURES),
    *(f"variants.{v.key}.c{HIGH}.cpu.hop_calls.requests_per_embedding_call" for v in (ONE, TWO, THREE)),
    *(f"comparisons.{top}_over_{bottom}.{name}" for top, bottom in PAIRS for name in _COMPARED),
    *(f"profile.{clock}.{path}" for clock in CLOCKS for path in _PROFILED),
    *(f"profile.{clock}.{kind}.{TOP - 1}.function" for clock in CLOCKS for kind in ("top_cumulative", "top_own")),
    *(f"profile.{clock}.profile_file" for clock in CLOCKS),
    *(f"headroom.{name}" for name in ("null_server.requests_per_s", "null_server.service_core_ms_per_request")),
    "headroom.orchestrator_healthz.requests_per_s",
)
SCENARIO = Scenario("heads", TITLE, {"quick": QUICK, "full": FULL}, run, targets, tables, FIGURES, checks)
