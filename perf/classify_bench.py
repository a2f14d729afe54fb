"""Pipeline benchmark: POST /classify beside the embedding service alone, one text per request, at
concurrency 1 and 64, in alternating rounds (so drift hits both alike); plus the orchestrator's start-up
time and idle memory, the load client driving the orchestrator's /healthz (its headroom), and the head
called back to back and after 8 ms of idleness (what an idle process's wake-up adds to each hop).

`python -m perf.classify_bench [--rounds N] [--requests N] [--out DIR]`: JSON and markdown reports."""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.clients.head_grpc import HeadGrpcClient
from orchestrator.settings import OrchestratorSettings
from perf.loadgen import MakeRequest, Measurement, closed_loop, http_request
from perf.report import REPO, Row, Target, at_most, machine_info, num, runs_table, targets_table, write_report
from perf.sentences import SENTENCES
from service_common.deadline import Deadline
from stack import services
from stack.procs import LOOPBACK, free_port, server_env, start_module, stop, wait_until_ok
from stack.services import Service

LEVELS = (1, 64)
HEALTHZ_CONCURRENCY = 64
EMBED = tuple(http_request("POST", "/v1/embeddings", json.dumps({"input": s}).encode()) for s in SENTENCES)
CLASSIFY = tuple(http_request("POST", "/classify", json.dumps({"text": s}).encode()) for s in SENTENCES)
HEALTHZ = http_request("GET", "/healthz")
HEALTHZ_ROW = f"orchestrator /healthz c{HEALTHZ_CONCURRENCY}"


def _cycling(requests: Sequence[bytes]) -> MakeRequest:
    return lambda index: requests[index % len(requests)]


def _progress(message: str) -> None:
    print(f"[classify bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def _started(service: Service, startup: dict[str, float]) -> Iterator[subprocess.Popen[bytes]]:
    """Starts the service and records the seconds to /healthz and to readiness."""
    started = time.perf_counter()
    proc = start_module(service.module, service.args, server_env(service.env))
    try:
        if service.ready_path == "/readyz":
            wait_until_ok(proc, f"{service.url}/healthz", 600, poll_s=0.02)
            startup[f"{service.name} start to /healthz s"] = time.perf_counter() - started
        wait_until_ok(proc, service.ready_url, 600, poll_s=0.02)
        startup[f"{service.name} start to ready s"] = time.perf_counter() - started
        yield proc
    finally:
        stop(proc)


def _load(name: str, port: int, make: MakeRequest, concurrency: int, args: argparse.Namespace) -> Row:
    requests = args.requests if concurrency > 1 else args.requests // 4
    measurement = asyncio.run(
        closed_loop(LOOPBACK, port, make, concurrency=concurrency, requests=requests, duration_s=args.duration_s)
    )
    row = Row(name, measurement)
    m = row.measurement
    _progress(f"{name}: {m.throughput_per_s:.1f}/s, p50 {num(m.p50_ms)} ms, p99 {num(m.p99_ms)} ms, {m.errors} errors")
    return row


async def _head_calls(target: str, idle_s: float, calls: int) -> Measurement:
    """The orchestrator's own gRPC client calling the head at concurrency 1, with `idle_s` of idleness
    before each call (as between /classify's two hops), to show what waking idle processes costs."""
    client = HeadGrpcClient(OrchestratorSettings(head_grpc_target=target))
    row = np.zeros((1, 384), np.float32)
    latencies = []
    async with client:
        for index in range(calls + 20):
            time.sleep(idle_s)  # noqa: ASYNC251 - blocking on purpose: the whole process idles, as between hops
            started = time.perf_counter()
            await client.predict(row, Deadline(5.0))
            if index >= 20:
                latencies.append(time.perf_counter() - started)
    return Measurement.of(latencies, Counter(), sum(latencies) + calls * idle_s, 1)


def _runs(rows: list[Row], prefix: str) -> list[Measurement]:
    """The measurements of `prefix` ("classify c64"), one per round, in round order."""
    return [r.measurement for r in rows if r.name.startswith(prefix + " (round")]


def goals(rows: list[Row]) -> list[Target]:
    """Medians over the rounds of figures taken side by side within each round."""
    extra_c1 = [
        c.p50_ms - e.p50_ms
        for c, e in zip(_runs(rows, "classify c1"), _runs(rows, "embedding c1"), strict=True)
        if c.p50_ms is not None and e.p50_ms is not None
    ]
    ratios = [
        c.throughput_per_s / e.throughput_per_s
        for c, e in zip(_runs(rows, "classify c64"), _runs(rows, "embedding c64"), strict=True)
        if e.throughput_per_s > 0
    ]
    headroom = [
        h.throughput_per_s / c.throughput_per_s
        for h, c in zip(_runs(rows, HEALTHZ_ROW), _runs(rows, "classify c64"), strict=True)
        if c.throughput_per_s > 0
    ]
    ratio = statistics.median(ratios) if ratios else None
    return [
        at_most("classify c1 p50 - embedding c1 p50 (ms)", statistics.median(extra_c1) if extra_c1 else None, 3.0),
        Target("classify c64 / embedding c64 throughput", ratio, ">= 0.9", None if ratio is None else ratio >= 0.9),
        Target(
            "orchestrator /healthz c64 / classify c64 (load-client headroom)",
            statistics.median(headroom) if headroom else None,
            "several x",
            None,
        ),
    ]


def _markdown(report: dict[str, Any], rows: list[Row], targets: list[Target]) -> str:
    machine = report["machine"]
    startup = report["results"]["startup"]
    lines = [
        f"# Pipeline benchmark, {report['started_utc']}",
        "",
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, commit {machine['git_commit'][:12]}"
        f"{' (with uncommitted changes)' if machine['git_dirty'] else ''}. One text per request, on loopback; "
        f"{report['settings']['rounds']} alternating rounds.",
        "",
        *runs_table(rows, "Throughput: requests/s, one text each. `(round k)` marks the alternating rounds."),
        "",
        "## Targets (medians over rounds)",
        "",
        *targets_table(targets),
        "",
        "## Start-up and memory",
        "",
        "| measure | value |",
        "|---|---:|",
        *(f"| {name} | {value:.2f} |" for name, value in startup.items()),
    ]
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every measurement")
    parser.add_argument("--requests", type=int, default=3000, help="requests per run at c64 (a quarter at c1)")
    parser.add_argument("--duration-s", type=float, default=60.0, help="time cap per run")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    out: Path = args.out or REPO / "perf" / "results" / started.strftime("%Y%m%d-%H%M%S")
    embedding = services.embedding(free_port(), REPO / "build" / "encoder", log_level="warning")
    grpc_port, rest_port = free_port(), free_port()
    head = services.head(grpc_port, rest_port, REPO / "build" / "head")
    orchestrator = services.orchestrator(free_port(), embedding.url, grpc_port, rest_port, log_level="warning")
    startup: dict[str, float] = {}
    rows: list[Row] = []
    _progress("starting the embedding service, the head and the orchestrator")
    with ExitStack() as stack:
        procs = {s.name: stack.enter_context(_started(s, startup)) for s in (embedding, head, orchestrator)}
        time.sleep(2.0)  # idle: the orchestrator's readiness checks only
        for name, proc in procs.items():
            startup[f"{name} idle RSS MB"] = _rss_mb(proc.pid)
        _progress(f"start-up: {json.dumps({k: round(v, 2) for k, v in startup.items()})}")
        ports = {s.name: int(s.url.rsplit(":", 1)[1]) for s in (embedding, orchestrator)}
        for round_ in range(1, args.rounds + 1):
            for level in LEVELS:
                rows.append(
                    _load(f"embedding c{level} (round {round_})", ports["embedding"], _cycling(EMBED), level, args)
                )
                rows.append(
                    _load(f"classify c{level} (round {round_})", ports["orchestrator"], _cycling(CLASSIFY), level, args)
                )
            healthz = _cycling([HEALTHZ])
            rows.append(
                _load(f"{HEALTHZ_ROW} (round {round_})", ports["orchestrator"], healthz, HEALTHZ_CONCURRENCY, args)
            )
        for idle_ms in (0, 8):
            measurement = asyncio.run(_head_calls(f"{LOOPBACK}:{grpc_port}", idle_ms / 1e3, args.requests // 6))
            rows.append(Row(f"head Predict c1 after {idle_ms} ms idle", measurement))
            _progress(f"{rows[-1].name}: p50 {num(measurement.p50_ms)} ms")
        for name, proc in procs.items():
            startup[f"{name} RSS after load MB"] = _rss_mb(proc.pid)
    targets = goals(rows)
    report = {
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine_info("see embedding_bench"),
        "settings": {"rounds": args.rounds, "requests": args.requests, "duration_s": args.duration_s, "levels": LEVELS},
        "results": {
            "rows": [asdict(r) for r in rows],
            "startup": startup,
            "targets": [asdict(t) for t in targets],
        },
    }
    write_report(out, "classify_bench", report, _markdown(report, rows, targets))
    _progress(f"wrote {out}/classify_bench.json and classify_bench.md")


if __name__ == "__main__":
    main()
