"""What the encoder identity check costs /classify, side by side in one run.

One embedding service (the default encoder) and one head stand-in (the default head), shared by two
orchestrators: CHECKED (`python -m orchestrator`, as shipped) and UNCHECKED (perf.unchecked_orchestrator:
no route by encoder, no version chosen by stamp, no identity read from the embedding answers). /classify,
one new text per request (a counter appended: the cache answers none), closed loop c64, in rounds that
alternate which orchestrator goes first; only the one measured gets load. The figure is the ratio of
CHECKED's throughput to UNCHECKED's in each round, and its median; the spread of the rounds is the noise.

A round-to-round noise of a few percent cannot resolve a 1% cost, so the check's own calls are also timed
in this process (timeit, the fastest of several repeats): what one /classify of one head adds (reading
the answer's identity, routing the head, choosing its version), against the machine's CPU per /classify
(its cores over CHECKED's throughput: at c64 the three services keep every core busy).

The load client's headroom: its closed-loop c64 rate against a null server, next to the rates measured.

Writes perf/results/<UTC timestamp>/identity_bench.{json,md}.

`python -m perf.identity_bench [--quick] [--out DIR]`"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from perf.endpoint_bench import HEALTHZ, Started, closed_run, ms, started
from perf.heads_bench import wait_for_heads
from perf.lanes_bench import new_texts
from perf.loadgen import http_request
from stack import services as stack_services
from stack.procs import LOOPBACK, free_port
from stack.services import DEFAULT_HEAD, DEFAULT_HEADS_ROOT, ROOT, Service

HIGH = 64
TARGET_COST = 0.01  # of CHECKED's /classify throughput


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


def say(message: str) -> None:
    print(f"[identity-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def services(work: Path) -> tuple[Service, Service, dict[str, Service]]:
    """The head, the embedding service, and the two orchestrators over them."""
    config_path = work / "heads.config"
    grpc_port, rest_port = free_port(), free_port()
    head = stack_services.head(grpc_port, rest_port, DEFAULT_HEADS_ROOT, config_path, heads=(DEFAULT_HEAD,))
    embedding = stack_services.embedding(free_port(), ROOT / "build" / "encoder", xla="false", log_level="warning")
    orchestrators = {}
    for key, module in (("checked", "orchestrator"), ("unchecked", "perf.unchecked_orchestrator")):
        service = stack_services.orchestrator(
            free_port(), embedding.url, grpc_port, rest_port, log_level="warning", head_config_file=str(config_path)
        )
        orchestrators[key] = replace(service, name=f"orchestrator-{key}", module=module)
    return head, embedding, orchestrators


def classify_request(text: str) -> bytes:
    return http_request("POST", "/classify", orjson.dumps({"text": text}))


async def measured_run(orchestrator: Started, texts: Iterator[str], duration_s: float) -> dict[str, Any]:
    samples, usage = await closed_run(
        orchestrator.port,
        lambda _: classify_request(next(texts)),
        pid=orchestrator.pid,
        concurrency=HIGH,
        requests=1_000_000,
        duration_s=duration_s,
    )
    ok = [s.service_s for s in samples if s.outcome == "200"]
    return {
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "throughput_per_s": len(ok) / usage.wall_s,
        "latency_ms": ms(ok),
        "orchestrator_core_ms_per_request": usage.service_cpu_s / (len(samples) + HIGH) * 1e3,
    }


def _said(run: dict[str, Any]) -> str:
    latency = run["latency_ms"]
    return (
        f"{run['throughput_per_s']:.1f}/s, p50 {latency['p50'] or 0:.1f} ms, p99 {latency['p99'] or 0:.1f} ms, "
        f"orchestrator {run['orchestrator_core_ms_per_request']:.3f} core-ms per request, {run['outcomes']}"
    )


async def rounds(up: dict[str, Started], plan: Plan) -> list[dict[str, Any]]:
    texts = new_texts()
    for key, orchestrator in up.items():
        say(f"warm-up, {key}: {_said(await measured_run(orchestrator, texts, plan.warm_s))}")
    runs = []
    keys = list(up)
    for round_ in range(1, plan.rounds + 1):
        for key in keys if round_ % 2 else keys[::-1]:
            run = await measured_run(up[key], texts, plan.run_s)
            runs.append({"round": round_, "variant": key, **run})
            say(f"round {round_}, {key}: {_said(run)}")
    return runs


def headroom(plan: Plan, logs: Path, checked: Started) -> dict[str, float]:
    """The load client's closed-loop c64 rate against a null server and against CHECKED's /healthz."""
    port = free_port()
    null = Service("null-server", "perf.endpoint_bench", f"http://{LOOPBACK}:{port}", "/", ("--null-server", str(port)))
    found = {}
    with started(null, logs) as server:
        for key, target in (("null_server", server), ("orchestrator_healthz", checked)):
            samples, usage = asyncio.run(
                closed_run(
                    target.port,
                    lambda _: HEALTHZ,
                    pid=target.pid,
                    concurrency=HIGH,
                    requests=1_000_000,
                    duration_s=plan.headroom_s,
                )
            )
            found[key] = sum(s.outcome == "200" for s in samples) / usage.wall_s
            say(f"headroom, {key}: {found[key]:.0f}/s")
    return found


def check_us(plan: Plan) -> dict[str, float]:
    """Microseconds per call of each part of the check, on a registry and a client as a served head has
    them (two versions, the newer one on the served encoder)."""
    from orchestrator.clients.embedding import EmbeddingClient
    from orchestrator.encoders import EmbeddingEndpoints
    from orchestrator.heads import Head, HeadRegistry
    from orchestrator.settings import OrchestratorSettings
    from orchestrator.versions import HeadVersion

    identity, old = "c049cf5514832722", "0123456789abcdef"
    registry = HeadRegistry(Path("models.config"), DEFAULT_HEAD)
    versions = [
        HeadVersion(1, 384, ["negative", "positive"], old),
        HeadVersion(2, 384, ["negative", "positive"], identity),
    ]
    registry._heads = {DEFAULT_HEAD: Head(DEFAULT_HEAD, versions)}
    client = EmbeddingClient(OrchestratorSettings(), "http://127.0.0.1:1")
    client.identity = identity
    endpoints = EmbeddingEndpoints([client], 1.0)
    encoders = {identity}
    calls = {
        "read_identity": lambda: client._learn(identity),
        "served_encoders": endpoints.encoders,
        "route": lambda: registry.route(DEFAULT_HEAD, "head", encoders),
        "version_for": lambda: registry.version_for(DEFAULT_HEAD, identity),
    }
    return {
        name: min(timeit.repeat(call, number=plan.timing_calls, repeat=5)) / plan.timing_calls * 1e6
        for name, call in calls.items()
    }


def figures(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    per_round = []
    for round_ in sorted({r["round"] for r in runs}):
        by_key = {r["variant"]: r for r in runs if r["round"] == round_}
        per_round.append(by_key["checked"]["throughput_per_s"] / by_key["unchecked"]["throughput_per_s"])
    found: dict[str, Any] = {"ratio_per_round": per_round, "ratio_median": statistics.median(per_round)}
    found["side_by_side_cost"] = 1 - found["ratio_median"]
    found["ratio_spread"] = max(per_round) - min(per_round)
    for key in ("checked", "unchecked"):
        mine = [r for r in runs if r["variant"] == key]
        found[key] = {
            "throughput_per_s": statistics.median(r["throughput_per_s"] for r in mine),
            "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in mine),
            "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in mine),
            "orchestrator_core_ms_per_request": statistics.median(r["orchestrator_core_ms_per_request"] for r in mine),
            "errors": sum(r["requests"] - r["outcomes"].get("200", 0) for r in mine),
        }
    return found


def in_process(found: dict[str, Any], timed: dict[str, float]) -> dict[str, Any]:
    """The check's CPU per one-head /classify against the machine's CPU per /classify."""
    cores = os.cpu_count() or 1
    per_request_us = cores / found["checked"]["throughput_per_s"] * 1e6
    check = sum(timed.values())
    return {
        "calls_us": timed,
        "check_us": check,
        "machine_core_us_per_request": per_request_us,
        "cost": check / per_request_us,
    }


def markdown(report: dict[str, Any]) -> str:
    found, head, timed = report["figures"], report["headroom"], report["in_process"]
    lines = [
        f"# Encoder identity check: /classify c{HIGH}, checked against unchecked ({report['plan']['mode']})",
        "",
        f"{report['started']}, {report['cpu']}, `{report['command']}`",
        "",
        "| orchestrator | /classify per s (median) | p50 ms | p99 ms | orchestrator core-ms per request | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in ("checked", "unchecked"):
        v = found[key]
        lines.append(
            f"| {key} | {v['throughput_per_s']:.1f} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | "
            f"{v['orchestrator_core_ms_per_request']:.3f} | {v['errors']} |"
        )
    rounds_ = ", ".join(f"{r:.3f}" for r in found["ratio_per_round"])
    calls = ", ".join(f"{name} {us:.2f} µs" for name, us in timed["calls_us"].items())
    verdict = "met" if timed["cost"] <= TARGET_COST else "missed"
    lines += [
        "",
        f"Checked / unchecked throughput per round: {rounds_}; median **{found['ratio_median']:.3f}** "
        f"(spread {found['ratio_spread']:.3f}: the rounds' noise is larger than the cost sought).",
        "",
        f"In process: {calls}; **{timed['check_us']:.2f} µs** per one-head /classify against "
        f"{timed['machine_core_us_per_request']:.0f} core-µs per /classify on this machine: cost "
        f"**{timed['cost'] * 100:.2f}%** against a target of at most {TARGET_COST * 100:.0f}%: **{verdict}**.",
        "",
        f"Load client headroom (closed loop c{HIGH}): null server {head['null_server']:.0f}/s, the checked "
        f"orchestrator's /healthz {head['orchestrator_healthz']:.0f}/s.",
        "",
    ]
    return "\n".join(lines)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def run_bench(plan: Plan, out: Path) -> dict[str, Any]:
    logs = out / "logs"
    with tempfile.TemporaryDirectory() as work, ExitStack() as running:
        head, embedding, orchestrators = services(Path(work))
        running.enter_context(started(head, logs))
        running.enter_context(started(embedding, logs))
        up = {key: running.enter_context(started(service, logs)) for key, service in orchestrators.items()}
        for orchestrator in orchestrators.values():
            wait_for_heads(orchestrator.url, (DEFAULT_HEAD,))
        runs = asyncio.run(rounds(up, plan))
        room = headroom(plan, logs, up["checked"])
    found = figures(runs)
    report = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "command": "python -m perf.identity_bench" + (" --quick" if plan.mode == "quick" else ""),
        "plan": asdict(plan),
        "runs": runs,
        "figures": found,
        "in_process": in_process(found, check_us(plan)),
        "headroom": room,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "identity_bench.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out / "identity_bench.md").write_text(markdown(report), encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two short rounds: a smoke run, not a figure")
    parser.add_argument("--out", type=Path, help="results directory (default: perf/results/<UTC timestamp>)")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "perf" / "results" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    report = run_bench(QUICK if args.quick else FULL, out)
    figures_ = report["figures"]
    say(
        f"checked/unchecked {figures_['ratio_median']:.3f} (spread {figures_['ratio_spread']:.3f}); in process "
        f"{report['in_process']['cost'] * 100:.2f}% of a /classify; written to {out}"
    )


if __name__ == "__main__":
    main()
