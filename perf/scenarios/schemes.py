"""The four deployment schemes side by side, under the same texts and the same load: (1) a monolith, one
process and one model call per request; (2) the whole model on the head service, the client tokenising;
(3) the split, client-chained: the embedding service, then the head; (4) the split behind the
orchestrator's POST /classify. Beside them: the embedding service alone, the head's gRPC Predict at c1,
the orchestrator's /healthz (the load client's headroom), and the ceilings: the encoder called in process
as the service loads it, and the FLOP bound (the encoder's matmul FLOPs per text over this machine's
measured fp32 matmul rate). Each round: the ceiling, a closed-loop concurrency sweep, and open-loop runs
at offered rates set from the first round's saturation, the schemes alternating which goes first."""

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedding_service.settings import EmbeddingSettings
from orchestrator.clients.head_grpc import HeadGrpcClient
from orchestrator.settings import OrchestratorSettings
from perf import chart
from perf.ceiling import InProcess, matmul_gflops
from perf.deployments import PRECISION, System, services, systems
from perf.harness.load import closed_calls, closed_run, open_run
from perf.harness.progress import say
from perf.harness.report import REPO, Column, Target, at_least, at_most, below, num, table
from perf.harness.scenario import Context, Scenario
from perf.harness.stats import Measurement, alternating, quotient
from perf.scheme_runs import Run, in_process_batch, median_of, noise, runs_of, saturation, schemes
from perf.sentences import TEXT_MIXES, texts
from service_common.deadline import Deadline
from stack.services import DEFAULT_HEAD, HEADS

OPEN_LOOP_TIMEOUT_S = 120.0  # long enough for an overloaded scheme to drain what it was sent


@dataclass(frozen=True)
class Plan:
    mode: str
    rounds: int
    levels: tuple[int, ...]  # closed-loop concurrencies; the last one saturates every scheme
    run_s: float  # time cap per closed-loop run
    run_requests: int  # request cap per closed-loop run
    open_s: float  # length of each open-loop run
    # Open-loop offered rates, as fractions of the slowest and of the fastest scheme's saturation
    # throughput (from the first round's sweep): the same rates for every scheme.
    of_slowest: tuple[float, ...]
    of_fastest: tuple[float, ...]
    ceiling_texts: int  # texts the in-process encoder runs per batch size and round
    monolith_xla: bool  # also run scheme 1 with XLA ("1x")


QUICK = Plan("quick", 1, (1, 16), 3.0, 300, 3.0, (0.5,), (), 64, False)
FULL = Plan("full", 2, (1, 4, 16, 64), 10.0, 3000, 8.0, (0.5, 0.9), (0.5, 0.8), 1024, True)


def said(m: Measurement) -> str:
    return f"{m.throughput_per_s:.0f}/s, p50 {num(m.p50_ms)} ms, p99 {num(m.p99_ms)} ms, {m.errors} errors"


def measure(system: System, mode: Literal["closed", "open"], load: float, plan: Plan, round_: int) -> Run:
    """`system` in a closed loop at concurrency `load`, or in an open loop at `load` requests/s offered after a
    few requests, not recorded (its processes sat idle through the others' runs)."""
    route = system.route
    if mode == "closed":
        done = asyncio.run(closed_run(route, concurrency=int(load), requests=plan.run_requests, duration_s=plan.run_s))
    else:
        asyncio.run(closed_run(route, concurrency=4, requests=20, duration_s=5))
        done = asyncio.run(open_run(route, rate_per_s=load, duration_s=plan.open_s, timeout_s=OPEN_LOOP_TIMEOUT_S))
    m = Measurement.of_run(done, from_due=mode == "open")
    say(f"round {round_}, {system.key} {f'c{load:g}' if mode == 'closed' else f'at {load:g}/s offered'}: {said(m)}")
    return Run(system.key, mode, load, round_, m)


def head_grpc_c1(target: str, plan: Plan, dim: int, round_: int) -> Run:
    """The orchestrator's own gRPC client, one row of `dim` floats per Predict, back to back."""

    async def run() -> Measurement:
        async with HeadGrpcClient(OrchestratorSettings(head_grpc_target=target)) as client:
            row = np.zeros((1, dim), np.float32)

            async def call(_: int) -> tuple[str, bytes]:
                await client.predict(DEFAULT_HEAD, 1, row, Deadline(5.0))
                return "200", b""

            return Measurement.of_run(await closed_calls([call], requests=plan.run_requests, duration_s=plan.run_s))

    return Run("head gRPC", "closed", 1, round_, asyncio.run(run()))


def sweep(found: Sequence[System], plan: Plan, round_: int) -> list[Run]:
    """Each scheme at every level; the embedding service alone at c1 and the top level; /healthz at the top."""
    top = plan.levels[-1]
    loads = [(s, level) for s in found if s.is_scheme for level in plan.levels]
    loads += [(s, level) for s in found if s.key == "embedding" for level in (1, top)]
    loads += [(s, top) for s in found if s.key == "healthz"]
    return [measure(system, "closed", level, plan, round_) for system, level in loads]


def ceiling(in_process: InProcess, plan: Plan, round_: int) -> tuple[float, list[Run]]:
    """This round's matmul rate and in-process encoder, timed while the services idle."""
    gflops = matmul_gflops()
    runs = [
        Run("in-process", "closed", size, round_, in_process.time(size, plan.ceiling_texts, plan.run_s))
        for size in in_process.batch_sizes
    ]
    say(f"round {round_}, matmul {gflops:.0f} GFLOP/s, in-process batch {runs[-1].load}: {said(runs[-1].measurement)}")
    return gflops, runs


def open_rates(runs: Sequence[Run], plan: Plan) -> list[float]:
    rates = [saturation(runs, key) for key in schemes(runs)]
    offered = [f * min(rates) for f in plan.of_slowest] + [f * max(rates) for f in plan.of_fastest]
    return sorted({round(rate, 1) for rate in offered})


def measured(
    ctx: Context,
    plan: Plan,
    build: Path,
    sample: Sequence[str],
    heads: Sequence[str] = HEADS,
    kept: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Every round of `plan` on the systems built from the models under `build` (those of `kept`, by key,
    if given): what this scenario and the write-up's table both run."""
    settings = EmbeddingSettings(model_dir=build / "encoder", log_level="warning", precision=PRECISION)
    say(f"loading the encoder in process as the service does (backend {settings.encoder_backend})")
    in_process = InProcess(settings, sample)
    configs = ctx.out / "tfserving"
    configs.mkdir(parents=True, exist_ok=True)
    found_services = services(build, configs, monolith_xla=plan.monolith_xla, heads=heads)
    runs: list[Run] = []
    rates: list[float] = []
    gflops: list[float] = []
    with ctx.stacks.together(list(found_services.values())):
        found = [s for s in systems(found_services, sample, settings.model_dir) if kept is None or s.key in kept]
        head_target = found_services["orchestrator"].env["ORCHESTRATOR_HEAD_GRPC_TARGET"]
        for round_ in range(1, plan.rounds + 1):
            ordered = alternating(found, round_)
            rate, ceiling_runs = ceiling(in_process, plan, round_)
            gflops.append(rate)
            runs += ceiling_runs + sweep(ordered, plan, round_)
            runs.append(head_grpc_c1(head_target, plan, in_process.manifest.embedding_dim, round_))
            rates = rates or open_rates(runs, plan)
            runs += [measure(s, "open", rate, plan, round_) for s in ordered if s.is_scheme for rate in rates]
    return {
        "systems": {s.key: {"title": s.title, "uses": s.uses, "hops": len(s.route)} for s in found},
        "ceiling": {
            "device": in_process.device,
            "backend": in_process.backend,
            "precision": PRECISION,
            "matmul_gflops_per_round": gflops,
            "flops": in_process.flop_bounds(max(gflops)),  # the best rate seen: a ceiling, not a typical figure
        },
        "levels": list(plan.levels),
        "open_loop_rates": rates,
        "runs": [asdict(r) for r in runs],
    }


def run(ctx: Context) -> dict[str, Any]:
    ctx.settings["texts"] = ctx.args.texts
    return measured(ctx, ctx.plan, REPO / "build", texts(ctx.args.texts))


def targets(results: dict[str, Any]) -> list[Target]:
    runs = runs_of(results)
    top = results["levels"][-1]
    batch = in_process_batch(runs)
    s1, s3, s4 = (saturation(runs, key) for key in ("1", "3", "4"))
    split_noise = noise(runs, ("3", "4"))
    split_gap = abs(s3 - s4) / ((s3 + s4) / 2)
    fastest = max(saturation(runs, key) for key in schemes(runs))
    rates = results["open_loop_rates"]

    def median(system: str, load: float, field: str = "throughput_per_s", mode: str = "closed") -> float | None:
        return median_of(runs, system, mode, load, field)

    def over(system: str, other: str, load: float, *field_and_mode: str) -> float | None:
        return quotient(median(system, load, *field_and_mode), median(other, load, *field_and_mode))

    def c1_p50_gap(system: str, other: str) -> float | None:
        mine, theirs = median(system, 1, "p50_ms"), median(other, 1, "p50_ms")
        return None if mine is None or theirs is None else mine - theirs

    return [
        at_least("scheme 4 / scheme 1 throughput at saturation", quotient(s4, s1), 2.5),
        *(
            below(f"scheme 4 p99 / scheme 1 p99 at {r:g} req/s offered", over("4", "1", r, "p99_ms", "open"), 1)
            for r in rates
        ),
        Target(
            "gap between schemes 3 and 4 (difference / mean), throughput at saturation",
            split_gap,
            f"< noise ({num(split_noise, 3)})",
            None if split_noise is None else split_gap < split_noise,
        ),
        at_least(
            f"embedding service c{top} / in-process batch throughput",
            quotient(median("embedding", top), median("in-process", batch)),
            0.85,
        ),
        at_most("embedding service c1 p50 - in-process batch 1 p50 (ms)", c1_p50_gap("embedding", "in-process"), 2.0),
        at_most("scheme 4 c1 p50 - embedding service c1 p50 (ms)", c1_p50_gap("4", "embedding"), 3.0),
        at_least(f"scheme 4 c{top} / embedding service c{top} throughput", over("4", "embedding", top), 0.9),
        at_most("head gRPC Predict c1 p50 (ms)", median("head gRPC", 1, "p50_ms"), 2.0),
        Target(
            f"load client: /healthz c{top} / fastest scheme's saturation (its headroom)",
            quotient(median("healthz", top), fastest),
            "several x",
            None,
        ),
    ]


def schemes_table(results: dict[str, Any]) -> list[str]:
    """Per scheme: saturation throughput, its share of the FLOP bound, c1 latency and memory."""
    runs = runs_of(results)
    bound = results["ceiling"]["flops"]["unpadded"]["bound_texts_per_s"]

    def memory(key: str) -> float:
        return sum(float(results["services"][name]["loaded_rss_mb"]) for name in results["systems"][key]["uses"])

    columns: list[Column] = [
        ("scheme", lambda k: k, None),
        ("what", lambda k: results["systems"][k]["title"], None),
        ("texts/s at saturation", lambda k: saturation(runs, k), 1),
        ("of the FLOP bound", lambda k: saturation(runs, k) / bound, 3),
        ("c1 p50 ms", lambda k: median_of(runs, k, "closed", 1, "p50_ms"), 2),
        ("c1 p99 ms", lambda k: median_of(runs, k, "closed", 1, "p99_ms"), 2),
        ("memory MB (loaded RSS of its processes)", memory, 0),
    ]
    return table(columns, schemes(runs))


def ceiling_lines(results: dict[str, Any]) -> list[str]:
    runs = runs_of(results)
    found, flops = results["ceiling"], results["ceiling"]["flops"]
    batch = in_process_batch(runs)
    bounds = [(kind, row) for kind, row in flops.items() if isinstance(row, dict) and "bound_texts_per_s" in row]
    columns: list[Column] = [
        ("token length", lambda b: b[0], None),
        ("mean tokens", lambda b: b[1]["mean_tokens"], 1),
        ("GFLOP/text", lambda b: b[1]["gflop_per_text"], 4),
        ("bound texts/s", lambda b: b[1]["bound_texts_per_s"], 0),
    ]
    return [
        f"In-process encoder on {found['device']} (medians over rounds): batch 1 p50 "
        f"{num(median_of(runs, 'in-process', 'closed', 1, 'p50_ms'))} ms per call; batch {batch:g}: "
        f"{num(median_of(runs, 'in-process', 'closed', batch, 'throughput_per_s'), 0)} texts/s. FLOP bound: the "
        f"best fp32 matmul rate of the rounds ({flops['matmul_gflops']:.0f} GFLOP/s; per round: "
        f"{', '.join(f'{g:.0f}' for g in found['matmul_gflops_per_round'])}) over the encoder's matmul FLOPs per "
        f"text ({flops['model']['layers']} layers, hidden {flops['model']['hidden']}).\n",
        *table(columns, bounds),
    ]


def runs_table(runs: Sequence[Run], mode: str) -> list[str]:
    columns: list[Column] = [
        ("system", lambda r: r.system, None),
        ("concurrency" if mode == "closed" else "offered /s", lambda r: f"{r.load:g}", None),
        ("round", lambda r: r.round, 0),
        ("throughput /s", lambda r: r.measurement.throughput_per_s, 1),
        *((f"{p} ms", lambda r, p=p: getattr(r.measurement, f"{p}_ms"), 2) for p in ("p50", "p90", "p99", "max")),
        ("errors", lambda r: r.measurement.errors, 0),
    ]
    return table(columns, sorted((r for r in runs if r.mode == mode), key=lambda r: (r.system, r.load, r.round)))


def tables(report: dict[str, Any]) -> list[str]:
    results = report["results"]
    runs = runs_of(results)
    return [
        f"## Schemes (medians over rounds; {report['settings']['texts']} texts, one per request)\n",
        *schemes_table(results),
        "\n![latency and throughput per scheme](schemes.png)\n",
        "## Closed loop: concurrency sweep\n",
        *runs_table(runs, "closed"),
        "\n`in-process`: the load is the batch size, throughput is texts/s and latency is per encoder call.\n",
        "## Open loop: fixed offered rates (latency from each request's due time)\n",
        *runs_table(runs, "open"),
        "\n## Ceiling\n",
        *ceiling_lines(results),
    ]


def checks(results: dict[str, Any]) -> list[str]:
    """Every system measured; every scheme closed-loop, and open-loop where the plan has rates; no request failed."""
    runs = runs_of(results)
    problems = [
        f"{r.system} at {r.mode} load {r.load:g}, round {r.round}: {r.measurement.error_kinds}"
        for r in runs
        if r.measurement.errors or not r.measurement.throughput_per_s
    ]
    wanted = set(results["systems"]) | {"in-process", "head gRPC"}
    problems += [f"{key} was not measured" for key in wanted - {r.system for r in runs}]
    problems += [
        f"scheme {key} lacks a {mode}-loop run"
        for key in schemes(runs)
        for mode in (("closed", "open") if results["open_loop_rates"] else ("closed",))
        if not any(r.system == key and r.mode == mode for r in runs)
    ]
    return problems


def options(parser: Any) -> None:
    parser.add_argument("--texts", choices=TEXT_MIXES, default="short", help="text lengths (default short)")


FIGURES = (
    "ceiling.flops.unpadded.bound_texts_per_s",
    "ceiling.matmul_gflops_per_round.0",
    "open_loop_rates.0",
    "runs.0.measurement.throughput_per_s",
    "systems.4.title",
)
TITLE = "The four deployment schemes"
PLANS = {"quick": QUICK, "full": FULL}
SCENARIO = Scenario("schemes", TITLE, PLANS, run, targets, tables, FIGURES, checks, options, chart.write)
