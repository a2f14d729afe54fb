"""What the encoder identity check costs /classify, side by side in one run.

Two orchestrators share the default embedding service and head: *checked* (`python -m orchestrator`) and
*unchecked* (perf/unchecked_orchestrator.py: no route by encoder, no version chosen by stamp, no identity
read from the embedding answers). /classify, a new text per request (the cache answers none), closed loop
c64, in rounds that alternate which goes first (only the one measured loaded): checked's throughput over
unchecked's per round, its median, and the rounds' spread (the noise). That noise cannot resolve a 1% cost,
so the check's own calls are also timed in process (timeit, the fastest of several repeats): what one
/classify of one head adds (reading the answer's identity, routing the head, choosing its version), against
the machine's CPU per /classify (its cores over checked's throughput: at c64 the three services keep every
core busy). The target: at most 1%.
"""

import asyncio
import os
import statistics
import tempfile
import timeit
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import orjson

from orchestrator.clients.embedding import EmbeddingClient
from orchestrator.encoders import EmbeddingEndpoints
from orchestrator.heads import Head, HeadRegistry
from orchestrator.settings import OrchestratorSettings
from orchestrator.versions import HeadVersion
from perf.harness.client import MakeRequest, http_request, one_hop
from perf.harness.headroom import headroom
from perf.harness.load import closed_run
from perf.harness.progress import say
from perf.harness.report import Target, at_most, info, num
from perf.harness.scenario import Context, Scenario
from perf.harness.stacks import Started, pipeline, wait_for_heads
from perf.harness.stats import alternating, figures, ratio, said
from perf.sentences import new_texts
from stack.procs import LOOPBACK, free_port
from stack.services import DEFAULT_HEAD

CONCURRENCY = 64
VARIANTS = ("checked", "unchecked")
CALLS = ("read_identity", "served_encoders", "route", "version_for")  # the check's parts, timed in process


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
    rounds: int  # each runs both orchestrators, alternating which goes first
    warm_s: float  # per orchestrator, before the rounds; not recorded
    run_s: float  # each measured run
    headroom_s: float
    timing_calls: int  # the in-process timing: calls per repeat


QUICK = Plan("quick", 2, 1.0, 2.0, 1.0, 10_000)
FULL = Plan("full", 8, 5.0, 12.0, 4.0, 200_000)


def classify_requests() -> MakeRequest:
    texts = new_texts()
    return lambda _: http_request("POST", "/classify", orjson.dumps({"text": next(texts)}))  # a new text each time


async def _rounds(up: dict[str, Started], plan: Plan) -> list[dict[str, Any]]:
    """Round 0 warms each orchestrator up, unrecorded; then the rounds, alternating which goes first."""
    classify, runs = classify_requests(), list[dict[str, Any]]()
    for round_ in range(plan.rounds + 1):
        for key in alternating(VARIANTS, round_ or 1):
            route, seconds = one_hop(up[key].port, classify), plan.run_s if round_ else plan.warm_s
            load = closed_run(route, concurrency=CONCURRENCY, requests=10**6, duration_s=seconds, pids=(up[key].pid,))
            runs.append({"round": round_, "variant": key, **figures(await load)})
            say(f"{f'round {round_}' if round_ else 'warm-up'}, {key}: {said(runs[-1])}")
    return [r for r in runs if r["round"]]


def in_process(plan: Plan, checked_per_s: float) -> dict[str, Any]:
    """The check's parts, us per call (a head as served: two versions, the newer on the served encoder)."""
    identity, n = "c049cf5514832722", plan.timing_calls
    registry = HeadRegistry(Path("models.config"), DEFAULT_HEAD)
    versions = [HeadVersion(v, 384, ["negative", "positive"], by) for v, by in ((1, "0123456789abcdef"), (2, identity))]
    registry._heads = {DEFAULT_HEAD: Head(DEFAULT_HEAD, versions)}
    client, encoders = EmbeddingClient(OrchestratorSettings(), "http://127.0.0.1:1"), {identity}
    client.identity = identity
    calls = (
        lambda: client._learn(identity),
        EmbeddingEndpoints([client], 1.0).encoders,
        lambda: registry.route(DEFAULT_HEAD, "head", encoders),
        lambda: registry.version_for(DEFAULT_HEAD, identity),
    )
    timed = {name: min(timeit.repeat(c, number=n, repeat=5)) / n * 1e6 for name, c in zip(CALLS, calls, strict=True)}
    us, machine = sum(timed.values()), (os.cpu_count() or 1) / checked_per_s * 1e6
    return {"calls_us": timed, "check_us": us, "machine_core_us_per_request": machine, "cost": us / machine}


def run(ctx: Context) -> dict[str, Any]:
    plan: Plan = ctx.plan
    with tempfile.TemporaryDirectory() as work:
        stack = pipeline(Path(work))
        checked, port = stack.orchestrator, free_port()
        env = {**checked.env, "ORCHESTRATOR_PORT": str(port)}
        unchecked = replace(checked, module="perf.unchecked_orchestrator", url=f"http://{LOOPBACK}:{port}", env=env)
        pair = zip(VARIANTS, (checked, unchecked), strict=True)
        orchestrators = {key: replace(service, name=f"orchestrator-{key}") for key, service in pair}
        with ctx.stacks.together([stack.head, stack.embedding, *orchestrators.values()]) as started:
            up = {key: started[service.name] for key, service in orchestrators.items()}
            for service in up.values():
                wait_for_heads(service.url, (DEFAULT_HEAD,))
            runs = asyncio.run(_rounds(up, plan))
            healthz = {"orchestrator": up["checked"]}
            room = headroom(ctx.stacks, classify_requests(), healthz, duration_s=plan.headroom_s)
    found = ratio(runs, *VARIANTS, lambda r: float(r["throughput_per_s"]))
    summed: dict[str, Any] = {"ratio_per_round": found["per_round"], "ratio_median": found["median"]}
    summed |= {"side_by_side_cost": 1 - (found["median"] or 0.0), "ratio_spread": found["spread"]}
    for key in VARIANTS:
        mine = [r for r in runs if r["variant"] == key]
        summed[key] = {
            "throughput_per_s": statistics.median(r["throughput_per_s"] for r in mine),
            "p50_ms": statistics.median(r["latency_ms"]["p50"] or 0.0 for r in mine),
            "p99_ms": statistics.median(r["latency_ms"]["p99"] or 0.0 for r in mine),
            "orchestrator_core_ms_per_request": statistics.median(r["service_core_ms_per_request"] for r in mine),
            "errors": sum(r["requests"] - r["outcomes"].get("200", 0) for r in mine),
        }
    timed = in_process(plan, summed["checked"]["throughput_per_s"])
    return {"runs": runs, "figures": summed, "in_process": timed, "headroom": room}


def targets(results: dict[str, Any]) -> list[Target]:
    summed, timed = results["figures"], results["in_process"]
    return [
        at_most("in process: the check, % of the machine's CPU per /classify", timed["cost"] * 100, 1.0),
        info("in process: the check's CPU per one-head /classify (us)", timed["check_us"]),
        info(f"side by side: checked / unchecked /classify per s at c{CONCURRENCY}, median", summed["ratio_median"]),
        info("side by side: the rounds' spread of that ratio (noise)", summed["ratio_spread"]),
    ]


def tables(report: dict[str, Any]) -> list[str]:
    summed, timed = report["results"]["figures"], report["results"]["in_process"]
    return [
        f"## /classify at c{CONCURRENCY}, checked against unchecked",
        "",
        "| orchestrator | /classify per s (median) | p50 ms | p99 ms | orchestrator core-ms per request | errors |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {key} | {v['throughput_per_s']:.1f} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | "
            f"{v['orchestrator_core_ms_per_request']:.3f} | {v['errors']} |"
            for key, v in ((key, summed[key]) for key in VARIANTS)
        ),
        "",
        f"Checked / unchecked throughput per round: {', '.join(f'{r:.3f}' for r in summed['ratio_per_round'])}; "
        f"median **{num(summed['ratio_median'], 3)}**, spread {num(summed['ratio_spread'], 3)}.",
        f"In process: {', '.join(f'{name} {us:.2f} us' for name, us in timed['calls_us'].items())}; "
        f"**{timed['check_us']:.2f} us** per one-head /classify against {timed['machine_core_us_per_request']:.0f} "
        f"core-us per /classify on this machine: **{timed['cost'] * 100:.2f}%**.",
    ]


def checks(results: dict[str, Any]) -> list[str]:
    runs, timed, order = results["runs"], results["in_process"], [r["variant"] for r in results["runs"]]
    bad = [r for r in runs if r["requests"] == 0 or r["outcomes"] != {"200": r["requests"]}]
    problems = [f"round {r['round']}, {r['variant']}: answered {r['outcomes']}, not only 200s" for r in bad]
    if order != [key for round_ in sorted({r["round"] for r in runs}) for key in alternating(VARIANTS, round_)]:
        problems.append(f"the runs did not alternate which orchestrator goes first: {order}")
    if not all(us > 0 for us in timed["calls_us"].values()) or not 0 < timed["cost"] < 1:
        problems.append(f"the in-process timing is implausible: {timed}")
    room = results["headroom"]
    return problems + [f"headroom: nothing answered on {name}" for name, v in room.items() if not v["requests"]]


FIGURES = (
    *(f"runs.0.{name}" for name in ("throughput_per_s", "service_core_ms_per_request")),
    *(f"figures.{name}" for name in ("ratio_median", "ratio_spread", "ratio_per_round.1", "side_by_side_cost")),
    *(f"figures.{key}.{name}" for key in VARIANTS for name in ("throughput_per_s", "p50_ms", "p99_ms", "errors")),
    *(f"in_process.{name}" for name in (*(f"calls_us.{c}" for c in CALLS), "check_us", "cost")),
    *(f"headroom.{name}.requests_per_s" for name in ("null_server", "orchestrator_healthz")),
)
TITLE = "Encoder identity check: /classify, checked against unchecked"
SCENARIO = Scenario("identity", TITLE, {"quick": QUICK, "full": FULL}, run, targets, tables, FIGURES, checks)
