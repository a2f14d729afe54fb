"""Reliability drill: the whole pipeline held at load, overloaded, broken and given new models, each
phase with its pass criteria. Loopback only, bounded in time; it stops everything it started.

`python -m perf.reliability [--quick] [--out DIR]` (`make reliability`); a JSON and a markdown summary.
--quick (about 4 minutes, run by the test suite) shortens every phase and runs the encoder without XLA
so that its restarts take seconds; the full drill soaks for 5 minutes."""

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from perf.loadgen import closed_loop, http_request, one_hop
from perf.openloop import Sample, Summary, open_loop, windows
from perf.report import REPO, machine_info, write_report
from perf.sentences import SENTENCES
from stack import services
from stack.procs import LOOPBACK, free_port, rss_mb
from stack.restartable import Restartable

BUDGET_MS = 5000  # every drill request carries X-Request-Timeout-Ms: nothing may take longer
GRACE_S = 10.0  # the services' graceful-shutdown time in the drill
REQUESTS = tuple(
    http_request("POST", "/classify", json.dumps({"text": s}).encode()).replace(
        b"\r\n\r\n", f"\r\nX-Request-Timeout-Ms: {BUDGET_MS}\r\n\r\n".encode(), 1
    )
    for s in SENTENCES
)
# A phase that restarts a service runs until AFTER_RESTART_S after the restart is done (the checks look
# for recovery within it), or MAX_RESTART_PHASE_S at most: a restart's length varies with the machine.
AFTER_RESTART_S = 6.0
MAX_RESTART_PHASE_S = 240.0
LOST = ("TimeoutError", "IncompleteReadError", "ConnectionResetError", "BrokenPipeError", "LimitOverrunError")


def _progress(message: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Drill:
    embedding: Restartable
    head: Restartable
    orchestrator: Restartable
    head_base: Path
    work: Path
    xla: str
    port: int = 0
    events: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds into the current phase)


@dataclass(frozen=True)
class Phase:
    name: str
    load: str
    fault: str
    summary: Summary
    lost: int  # requests with no complete answer: client timeout, reset, cut-off response
    checks: dict[str, bool]
    details: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.lost == 0 and all(self.checks.values())


def _phase(
    name: str,
    load: str,
    fault: str,
    samples: Sequence[Sample],
    checks: dict[str, bool],
    details: dict[str, Any],
    refused: Callable[[Sample], bool] = lambda _: False,
) -> Phase:
    """`refused`: failures that are refusals, not losses, although they look alike to the client."""
    non_200 = sorted({f"{s.outcome} {s.body[:300].decode(errors='replace')}" for s in samples if s.outcome != "200"})
    lost = _lost([s for s in samples if not refused(s)])
    return Phase(name, load, fault, Summary.of(samples), lost, checks, {**details, "non_200": non_200[:6]})


def _error_code(sample: Sample) -> str:
    try:
        return str(json.loads(sample.body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _version(sample: Sample) -> str:
    return str(json.loads(sample.body)["model"]["version"]) if sample.outcome == "200" else ""


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=2).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def _under_load(
    drill: Drill,
    rate: float,
    duration_s: float,
    actions: Callable[[Callable[[str], None]], None] | None = None,
    *,
    after_s: float | None = None,
) -> list[Sample]:
    """Open-loop /classify at `rate` for `duration_s`, while `actions` (given a note-taking function)
    breaks things in another thread; the notes land in `drill.events` with their time into the phase.
    With `after_s`, the load ends that long after `actions` return (a restart's length varies with the
    machine, so `duration_s` is then only an upper bound)."""
    drill.events = []

    async def run() -> list[Sample]:
        started = asyncio.get_running_loop().time()
        stop = asyncio.Event()

        def note(what: str) -> None:
            drill.events.append((what, time.monotonic() - started))
            _progress(f"  {what} at {drill.events[-1][1]:.1f}s")

        load = asyncio.create_task(
            open_loop(
                LOOPBACK,
                one_hop(drill.port, lambda i: REQUESTS[i % len(REQUESTS)]),
                rate_per_s=rate,
                duration_s=duration_s,
                timeout_s=BUDGET_MS / 1e3 + 5,
                stop=stop,
            )
        )
        if actions is not None:
            await asyncio.to_thread(actions, note)
            if after_s is not None:
                await asyncio.sleep(after_s)
                stop.set()
        return await load

    return asyncio.run(run())


def _lost(samples: Sequence[Sample]) -> int:
    return sum(s.outcome in LOST for s in samples)


def capacity(drill: Drill, quick: bool) -> float:
    measurement = asyncio.run(
        closed_loop(
            LOOPBACK,
            one_hop(drill.port, lambda i: REQUESTS[i % len(REQUESTS)]),
            concurrency=64,
            requests=1500 if quick else 4000,
            duration_s=20,
        )
    )
    _progress(f"capacity: {measurement.throughput_per_s:.0f} req/s at concurrency 64")
    return measurement.throughput_per_s


def soak(drill: Drill, rate: float, duration_s: float) -> Phase:
    rss: dict[str, list[float]] = {name: [] for name in ("embedding", "head", "orchestrator")}
    done = threading.Event()

    def sample_rss() -> None:
        while not done.wait(duration_s / 20):
            for name in rss:
                process = getattr(drill, name).process
                rss[name].append(rss_mb(process.pid))

    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    try:
        samples = _under_load(drill, rate, duration_s)
    finally:
        done.set()
        sampler.join()
    parts = windows(samples, duration_s / 5)
    first, last = Summary.of(parts[0]), Summary.of(parts[-1])
    growth = {name: (values[-1] / values[3] - 1) if len(values) > 4 else 0.0 for name, values in rss.items()}
    summary = Summary.of(samples)
    return _phase(
        "soak",
        f"open loop {rate:.0f} req/s (70% of capacity), {duration_s:.0f} s",
        "none",
        samples,
        {
            "zero errors": summary.outcomes.get("200", 0) == summary.requests,
            "p99 of the last fifth within 20% of the first's": (last.ok_p99_ms or 0) <= 1.2 * (first.ok_p99_ms or 0),
            "RSS of each service grew < 5% after warm-up": all(g < 0.05 for g in growth.values()),
        },
        {
            "p99_ms_by_fifth": [Summary.of(w).ok_p99_ms for w in parts],
            "rss_growth": growth,
            "rss_mb_end": {n: v[-1] for n, v in rss.items() if v},
        },
    )


def overload(drill: Drill, capacity_per_s: float, normal_p50_ms: float, quick: bool) -> Phase:
    queue_peak = {"orchestrator_queue_texts": 0.0, "embedding_queue_texts": 0.0}
    done = threading.Event()

    def watch_queues() -> None:
        while not done.wait(0.25):
            for name, url in (
                ("orchestrator_queue_texts", drill.orchestrator.url),
                ("embedding_queue_texts", drill.embedding.url),
            ):
                with contextlib.suppress(httpx.HTTPError):
                    queue_peak[name] = max(queue_peak[name], _metric(url, name))

    watcher = threading.Thread(target=watch_queues)
    watcher.start()
    try:
        high = _under_load(drill, 3 * capacity_per_s, 8 if quick else 30)
    finally:
        done.set()
        watcher.join()
    low = _under_load(drill, 0.5 * capacity_per_s, 6 if quick else 20)
    # Refusals are timed from when they were sent: on 2 shared cores the client itself falls behind at 3x,
    # which due-time latency would charge to the server.
    refused = [s.service_s * 1e3 for s in high if s.outcome in ("429", "503")]
    accepted = Summary.of(high)
    refused_p50, refused_p99 = (float(v) for v in np.percentile(refused, [50, 99])) if refused else (0.0, 0.0)
    settled = [s for s in low if s.due_s >= 1.0]
    recovery = Summary.of(low)
    return _phase(
        "overload",
        f"open loop {3 * capacity_per_s:.0f} req/s (3x capacity) for {8 if quick else 30} s, "
        f"then {0.5 * capacity_per_s:.0f} req/s",
        "none",
        [*high, *low],
        {
            "only 200, 429 or 503 under overload": set(accepted.outcomes) <= {"200", "429", "503"},
            "some requests refused": bool(refused),
            "refusals answered (p50) in under half the normal p50": refused_p50 < normal_p50_ms / 2,
            f"accepted p99 within the {BUDGET_MS} ms budget": (accepted.ok_p99_ms or 0) <= BUDGET_MS,
            "queues bounded (orchestrator <= 256 texts)": queue_peak["orchestrator_queue_texts"] <= 256,
            "all 200 one second after load drops": all(s.outcome == "200" for s in settled),
        },
        {
            "refused": len(refused),
            "refused_p50_ms": refused_p50,
            "refused_p99_ms": refused_p99,
            "normal_p50_ms": normal_p50_ms,
            "accepted_under_overload": asdict(accepted),
            "recovery": asdict(recovery),
            "queue_peaks": queue_peak,
        },
    )


def _failures_named(samples: Sequence[Sample], windows_by_hop: dict[str, tuple[float, float]]) -> dict[str, bool]:
    """Every failure is a 503/504 whose code names the hop that was down when the request was due."""
    named, inside = True, True
    for sample in samples:
        if sample.outcome == "200":
            continue
        code = _error_code(sample)
        hop = code.split("_", 1)[0]
        named &= sample.outcome in ("503", "504") and hop in windows_by_hop
        if hop in windows_by_hop:
            start, end = windows_by_hop[hop]
            inside &= start - BUDGET_MS / 1e3 <= sample.due_s <= end
    return {"every failure is a 503/504 naming the hop": named, "failures only while a hop was down": inside}


def _window(drill: Drill, down: str, up: str, slack_s: float = 2.0) -> tuple[float, float]:
    at = dict(drill.events)
    return at[down], at[up] + slack_s


def faults(drill: Drill, rate: float) -> Phase:
    def break_things(note: Callable[[str], None]) -> None:
        time.sleep(3)
        drill.head.signal(signal.SIGKILL)
        note("head killed")
        time.sleep(3)
        drill.head.start()
        note("head ready")
        time.sleep(3)
        drill.embedding.signal(signal.SIGKILL)
        note("embedding killed")
        time.sleep(2)
        drill.embedding.start()
        note("embedding ready")

    samples = _under_load(drill, rate, MAX_RESTART_PHASE_S, break_things, after_s=AFTER_RESTART_S)
    down = {
        "head": _window(drill, "head killed", "head ready"),
        "embedding": _window(drill, "embedding killed", "embedding ready"),
    }
    last_fault = max(end for _, end in down.values())
    summary = Summary.of(samples)
    return _phase(
        "faults",
        f"open loop {rate:.0f} req/s",
        "kill -9 the head, restart it; then kill -9 the embedding service, restart it",
        samples,
        {
            **_failures_named(samples, down),
            f"none took longer than its {BUDGET_MS} ms budget (+1 s)": summary.max_ms <= BUDGET_MS + 1000,
            "recovered: all 200 after the last restart": _recovered(samples, last_fault),
        },
        {"events": drill.events},
    )


def _recovered(samples: Sequence[Sample], after_s: float) -> bool:
    """At least a second of load came after `after_s`, and all of it was answered 200."""
    later = [s for s in samples if s.due_s > after_s]
    return bool(later) and later[-1].due_s - later[0].due_s >= 1.0 and all(s.outcome == "200" for s in later)


def _sigterm(drill: Drill, name: str, rate: float) -> Phase:
    part: Restartable = getattr(drill, name)

    def stop_it(note: Callable[[str], None]) -> None:
        time.sleep(2)
        assert part.process is not None
        part.process.send_signal(signal.SIGTERM)
        note(f"{name} sent SIGTERM")
        try:
            code = part.process.wait(GRACE_S + 10)
            note(f"{name} exited with {code}")
        except subprocess.TimeoutExpired:
            note(f"{name} still running")
        part.start()
        note(f"{name} ready")

    samples = _under_load(drill, rate, MAX_RESTART_PHASE_S, stop_it, after_s=AFTER_RESTART_S)
    at = dict(drill.events)
    exited = next(((w, t) for w, t in drill.events if "exited" in w), None)
    checks = {
        f"exited by itself within the {GRACE_S:.0f} s grace": exited is not None
        and exited[1] - at[f"{name} sent SIGTERM"] <= GRACE_S,
        # uvicorn re-raises the signal after its graceful stop, so its processes end "killed by SIGTERM".
        "exit status 0 or SIGTERM's": exited is not None and exited[0].endswith(("with 0", f"with {-signal.SIGTERM}")),
        "recovered: all 200 after the restart": _recovered(samples, at[f"{name} ready"] + 2),
    }
    stopping = (at[f"{name} sent SIGTERM"], at[f"{name} ready"])

    def refused(sample: Sample) -> bool:
        """The orchestrator is the front door: while it stops, new connections are refused, and those its
        closing listener had queued but not accepted are reset before any byte of an answer."""
        in_window = stopping[0] <= sample.due_s <= stopping[1]
        return (
            name == "orchestrator"
            and in_window
            and sample.outcome in ("ConnectionRefusedError", "ConnectionResetError")
        )

    if name == "orchestrator":
        checks["only refused connections while down"] = all(s.outcome == "200" or refused(s) for s in samples)
    else:
        checks.update(_failures_named(samples, {name: _window(drill, f"{name} sent SIGTERM", f"{name} ready")}))
    return _phase(
        f"SIGTERM {name}",
        f"open loop {rate:.0f} req/s",
        f"SIGTERM to the {name}, then restart",
        samples,
        checks,
        {"events": drill.events},
        refused,
    )


def head_swap(drill: Drill, rate: float) -> Phase:
    def add_version(note: Callable[[str], None]) -> None:
        time.sleep(2)
        staging = drill.head_base / ".incoming"
        shutil.copytree(drill.head_base / "1", staging)
        staging.rename(drill.head_base / "2")
        note("head version 2 added")

    samples = _under_load(drill, rate, 15, add_version)
    versions = [_version(s) for s in samples if s.outcome == "200"]
    return _phase(
        "head swap",
        f"open loop {rate:.0f} req/s",
        "a new head version dropped in",
        samples,
        {
            "zero failed requests": all(s.outcome == "200" for s in samples),
            "answers moved from version 1 to 2": bool(versions) and versions[0] == "1" and versions[-1] == "2",
        },
        {"versions": {v: versions.count(v) for v in set(versions)}},
    )


def encoder_swap(drill: Drill, rate: float, quick: bool) -> Phase:
    fresh = drill.work / "encoder-2"
    if quick:  # the export itself is tested elsewhere; the drill is about the restart
        shutil.copytree(REPO / "build" / "encoder", fresh)
    else:
        command = [sys.executable, "-m", "models.export_encoder", "--output", str(fresh)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    port = int(drill.embedding.url.rsplit(":", 1)[1])
    replacement = Restartable(
        services.embedding(port, fresh, xla=drill.xla, log_level="warning", cache_bytes="0"), drill.embedding.log
    )

    def restart(note: Callable[[str], None]) -> None:
        time.sleep(2)
        drill.embedding.stop()
        note("embedding stopped")
        replacement.start()
        drill.embedding = replacement
        note("embedding ready")

    samples = _under_load(drill, rate, MAX_RESTART_PHASE_S, restart, after_s=AFTER_RESTART_S)
    checks = {
        **_failures_named(samples, {"embedding": _window(drill, "embedding stopped", "embedding ready")}),
        "recovered: all 200 after the restart": _recovered(samples, dict(drill.events)["embedding ready"] + 2),
    }
    return _phase(
        "encoder swap",
        f"open loop {rate:.0f} req/s",
        "the embedding service restarted on a re-exported encoder",
        samples,
        checks,
        {"events": drill.events},
    )


def _markdown(report: dict[str, Any], phases: list[Phase]) -> str:
    machine = report["machine"]
    lines = [
        f"# Reliability drill, {report['started_utc']} ({'quick' if report['quick'] else 'full'})",
        "",
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, commit {machine['git_commit'][:12]}. Capacity "
        f"{report['capacity_per_s']:.0f} req/s (/classify, one text, concurrency 64). Every request carries "
        f"X-Request-Timeout-Ms: {BUDGET_MS}.",
        "",
        "| phase | load | fault | requests | outcomes | lost | p99 ms (200s) | passed |",
        "|---|---|---|---:|---|---:|---:|---|",
    ]
    for p in phases:
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(p.summary.outcomes.items()))
        p99 = f"{p.summary.ok_p99_ms:.0f}" if p.summary.ok_p99_ms is not None else "-"
        lines.append(
            f"| {p.name} | {p.load} | {p.fault} | {p.summary.requests} | {outcomes} | {p.lost} | {p99} | "
            f"{'yes' if p.passed else '**NO**'} |"
        )
    lines += ["", "## Checks", ""]
    for p in phases:
        lines += [f"- **{p.name}**: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in p.checks.items())]
    return "\n".join(lines) + "\n"


def _start(work: Path, xla: str) -> Drill:
    heads = work / "heads"
    for name in services.HEADS:
        shutil.copytree(REPO / "build" / "heads" / name / "1", heads / name / "1")
    # The cache off: the drill's load repeats its texts, and must reach the encoder.
    embedding = services.embedding(
        free_port(),
        REPO / "build" / "encoder",
        xla=xla,
        log_level="warning",
        graceful_shutdown_s=str(GRACE_S),
        cache_bytes="0",
    )
    grpc_port, rest_port = free_port(), free_port()
    head_config = work / "heads.config"
    head = services.head(grpc_port, rest_port, heads, head_config, "--file_system_poll_wait_seconds", "0.5")
    orchestrator = services.orchestrator(
        free_port(),
        embedding.url,
        grpc_port,
        rest_port,
        log_level="warning",
        graceful_shutdown_s=str(GRACE_S),
        head_config_file=str(head_config),
    )
    drill = Drill(
        Restartable(embedding, work / "embedding.log"),
        Restartable(head, work / "head.log"),
        Restartable(orchestrator, work / "orchestrator.log"),
        head_base=heads / services.DEFAULT_HEAD,
        work=work,
        xla=xla,
        port=int(orchestrator.url.rsplit(":", 1)[1]),
    )
    for part in (drill.embedding, drill.head, drill.orchestrator):
        part.start()
    return drill


def run(quick: bool) -> tuple[float, list[Phase]]:
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        drill = _start(Path(tmp), "false" if quick else "true")
        try:
            _progress("services ready")
            capacity_per_s = capacity(drill, quick)
            phases = [soak(drill, 0.7 * capacity_per_s, 12 if quick else 300)]
            normal_p50 = phases[0].summary.ok_p50_ms or 0.0
            phases.append(overload(drill, capacity_per_s, normal_p50, quick))
            phases.append(faults(drill, 0.5 * capacity_per_s))
            for name in ("head", "embedding", "orchestrator"):
                phases.append(_sigterm(drill, name, 0.5 * capacity_per_s))
            phases.append(head_swap(drill, 0.5 * capacity_per_s))
            phases.append(encoder_swap(drill, 0.5 * capacity_per_s, quick))
            for phase in phases:
                _progress(f"{phase.name}: {'passed' if phase.passed else 'FAILED'} {phase.checks} lost={phase.lost}")
            return capacity_per_s, phases
        finally:
            for part in (drill.orchestrator, drill.head, drill.embedding):
                part.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short phases, encoder without XLA (about 4 min)")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    out: Path = args.out or REPO / "perf" / "results" / started.strftime("%Y%m%d-%H%M%S")
    capacity_per_s, phases = run(args.quick)
    report = {
        "started_utc": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info("CPU"),
        "capacity_per_s": capacity_per_s,
        "phases": [{**asdict(p), "passed": p.passed} for p in phases],
    }
    write_report(out, "reliability", report, _markdown(report, phases))
    _progress(f"wrote {out}/reliability.json and reliability.md")


if __name__ == "__main__":
    main()
