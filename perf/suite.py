"""The benchmark suite: the in-process ceiling, then the four deployment schemes (and the parts earlier
targets name) under the same texts and the same load: a closed-loop concurrency sweep and open-loop
runs at fixed offered rates, in alternating rounds. Writes perf/results/<timestamp>/bench.{json,md,png}.

`python -m perf [--quick] [--texts short|mixed|long] [--rounds N] [--out DIR]`"""

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedding_service.settings import EmbeddingSettings
from orchestrator.clients.head_grpc import HeadGrpcClient
from orchestrator.settings import OrchestratorSettings
from perf import chart, summary
from perf.ceiling import InProcess, matmul_gflops
from perf.loadgen import Measurement, closed_loop, run_closed_loop
from perf.openloop import Sample, open_loop
from perf.report import REPO, machine_info, num, write_report
from perf.schemes import System, services, systems
from perf.sentences import TEXT_MIXES, texts
from perf.summary import Run
from service_common.deadline import Deadline
from stack.procs import LOOPBACK, rss_mb, server_env, start_module, stop, wait_until_ok
from stack.services import DEFAULT_HEAD, Service

OPEN_LOOP_TIMEOUT_S = 120.0  # long enough for an overloaded scheme to drain what it was sent


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
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


class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench +{elapsed:4.0f}s {self.done}/{self.total}] {message}", file=sys.stderr, flush=True)

    def step(self, message: str) -> None:
        self.done += 1
        self.say(message)


@contextmanager
def _started(found: Mapping[str, Service], logs: Path, progress: Progress) -> Iterator[dict[str, dict[str, Any]]]:
    """Starts every service at once (logs under `logs`), waits until all are ready, yields each one's PID
    and seconds from start to ready (all starting together, so each is slower than it would be alone)."""
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        procs = {}
        for name, service in found.items():
            log = stack.enter_context((logs / f"{name}.log").open("wb"))
            procs[name] = start_module(service.module, service.args, server_env(service.env), stdout=log, stderr=log)
            stack.callback(stop, procs[name])
        started = time.monotonic()
        ready: dict[str, dict[str, Any]] = {}
        for name, service in found.items():
            wait_until_ok(procs[name], service.ready_url, 600)
            ready[name] = {"pid": procs[name].pid, "ready_after_s": time.monotonic() - started}
            progress.say(f"{name} ready ({ready[name]['ready_after_s']:.0f}s after start)")
        yield ready


def _said(m: Measurement) -> str:
    return f"{m.throughput_per_s:.0f}/s, p50 {num(m.p50_ms)} ms, p99 {num(m.p99_ms)} ms, {m.errors} errors"


def _open_measurement(samples: Sequence[Sample]) -> Measurement:
    """Latency from each request's due time; throughput over the time from the first due to the last answer."""
    errors = Counter(s.outcome for s in samples if s.outcome != "200")
    ok = [s.latency_s for s in samples if s.outcome == "200"]
    elapsed = max((s.due_s + s.latency_s for s in samples), default=0.0)
    return Measurement.of(ok, errors, elapsed, 1)


def _closed(system: System, concurrency: int, plan: Plan) -> Measurement:
    return asyncio.run(
        closed_loop(LOOPBACK, system.route, concurrency=concurrency, requests=plan.run_requests, duration_s=plan.run_s)
    )


def _open(system: System, rate: float, plan: Plan) -> Measurement:
    """A few requests first, not recorded: the scheme's processes sat idle through the other schemes' runs."""
    asyncio.run(closed_loop(LOOPBACK, system.route, concurrency=4, requests=20, duration_s=5))
    samples = asyncio.run(
        open_loop(LOOPBACK, system.route, rate_per_s=rate, duration_s=plan.open_s, timeout_s=OPEN_LOOP_TIMEOUT_S)
    )
    return _open_measurement(samples)


def _head_grpc_c1(target: str, plan: Plan) -> Measurement:
    """The orchestrator's own gRPC client, one 384-float row per Predict, back to back."""

    async def run() -> Measurement:
        async with HeadGrpcClient(OrchestratorSettings(head_grpc_target=target)) as client:
            row = np.zeros((1, 384), np.float32)

            async def call(_: int) -> None:
                await client.predict(DEFAULT_HEAD, 1, row, Deadline(5.0))

            return await run_closed_loop([call], requests=plan.run_requests, duration_s=plan.run_s)

    return asyncio.run(run())


def _sweep(found: list[System], plan: Plan, round_: int, progress: Progress) -> list[Run]:
    """Each scheme at every level; the embedding service alone at c1 and the top level; /healthz at the top."""
    top = plan.levels[-1]
    loads = [(s, level) for s in found if s.is_scheme for level in plan.levels]
    loads += [(s, level) for s in found if s.key == "embedding" for level in (1, top)]
    loads += [(s, top) for s in found if s.key == "healthz"]
    runs = []
    for system, level in loads:
        m = _closed(system, level, plan)
        runs.append(Run(system.key, "closed", level, round_, m))
        progress.step(f"round {round_}, {system.key} c{level}: {_said(m)}")
    return runs


def _ceiling(in_process: InProcess, plan: Plan, round_: int, progress: Progress) -> tuple[float, list[Run]]:
    """This round's matmul rate and in-process encoder, timed while the services idle."""
    gflops = matmul_gflops()
    runs = [
        Run("in-process", "closed", size, round_, in_process.time(size, plan.ceiling_texts, plan.run_s))
        for size in in_process.batch_sizes
    ]
    top = runs[-1]
    progress.step(f"round {round_}, matmul {gflops:.0f} GFLOP/s, in-process batch {top.load}: {_said(top.measurement)}")
    return gflops, runs


def open_rates(runs: Sequence[Run], plan: Plan) -> list[float]:
    saturation = [summary.saturation(runs, key) for key in summary.schemes(runs)]
    rates = [f * min(saturation) for f in plan.of_slowest] + [f * max(saturation) for f in plan.of_fastest]
    return sorted({round(rate, 1) for rate in rates})


def run_suite(plan: Plan, mix: str, out: Path) -> dict[str, Any]:
    sample = texts(mix)  # type: ignore[arg-type]
    configs = out / "tfserving"
    configs.mkdir(parents=True, exist_ok=True)
    found_services = services(REPO / "build", configs, monolith_xla=plan.monolith_xla)
    schemes_per_round = 5 if plan.monolith_xla else 4
    open_count = len(plan.of_slowest) + len(plan.of_fastest)
    per_round = schemes_per_round * (len(plan.levels) + open_count) + 5
    progress = Progress(1 + plan.rounds * per_round)
    settings = EmbeddingSettings(log_level="warning")
    progress.say(f"loading the encoder in-process as the service does (backend {settings.encoder_backend})")
    in_process = InProcess(settings, sample)
    progress.step("in-process encoder ready")
    runs: list[Run] = []
    rates: list[float] = []
    gflops: list[float] = []
    with _started(found_services, out / "logs", progress) as ready:
        idle_rss = {name: rss_mb(r["pid"]) for name, r in ready.items()}
        found = systems(found_services, sample, settings.model_dir)
        head_target = found_services["orchestrator"].env["ORCHESTRATOR_HEAD_GRPC_TARGET"]
        for round_ in range(1, plan.rounds + 1):
            ordered = found if round_ % 2 else found[::-1]
            rate, ceiling_runs = _ceiling(in_process, plan, round_, progress)
            gflops.append(rate)
            runs += ceiling_runs
            runs += _sweep(ordered, plan, round_, progress)
            m = _head_grpc_c1(head_target, plan)
            runs.append(Run("head gRPC", "closed", 1, round_, m))
            progress.step(f"round {round_}, head gRPC Predict c1: {_said(m)}")
            rates = rates or open_rates(runs, plan)
            for system in (s for s in ordered if s.is_scheme):
                for rate in rates:
                    m = _open(system, rate, plan)
                    runs.append(Run(system.key, "open", rate, round_, m))
                    progress.step(f"round {round_}, {system.key} at {rate:g}/s offered: {_said(m)}")
        loaded_rss = {name: rss_mb(r["pid"]) for name, r in ready.items()}
    started_services = {
        name: {
            "command": ["python", "-m", service.module, *service.args],
            "env": dict(service.env),
            "ready_after_s": ready[name]["ready_after_s"],
            "idle_rss_mb": idle_rss[name],
            "loaded_rss_mb": loaded_rss[name],
        }
        for name, service in found_services.items()
    }
    return {
        "systems": {s.key: {"title": s.title, "uses": s.uses, "hops": len(s.route)} for s in found},
        "services": started_services,
        "ceiling": {
            "device": in_process.device,
            "backend": in_process.backend,
            "matmul_gflops_per_round": gflops,
            # The best rate seen: a ceiling, not a typical figure.
            "flops": in_process.flop_bounds(max(gflops)),
        },
        "open_loop_rates": rates,
        "runs": [asdict(r) for r in runs],
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds per run, one round: under 3 minutes")
    parser.add_argument("--texts", choices=TEXT_MIXES, default="short", help="text lengths (default short)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default: 1 quick, 2 full)")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    started = datetime.now(UTC)
    out: Path = args.out or REPO / "perf" / "results" / started.strftime("%Y%m%d-%H%M%S")
    results = run_suite(plan, args.texts, out)
    report: dict[str, Any] = {
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine_info(results["ceiling"]["device"]),
        "settings": {"plan": asdict(plan), "texts": args.texts},
        "results": results,
    }
    report["results"]["targets"] = [asdict(t) for t in summary.targets(report)]
    write_report(out, "bench", report, summary.markdown(report))
    chart.write(out / "bench.png", report)
    print(f"wrote {out}/bench.json, bench.md and bench.png", file=sys.stderr)
