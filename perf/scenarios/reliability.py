"""The reliability drill: the whole pipeline (embedding service, head, orchestrator) held at load,
overloaded, broken and given new models, each phase with its checks. The load is /classify, one text a
request, in an open loop at a share of the capacity (a closed loop at c64, measured first), so a stalled
service shows as latency. Every request carries X-Request-Timeout-Ms: 5000, and none may be lost (a
client timeout, a reset, a cut-off answer) but connections the front door refuses while it restarts.

- soak (70%): no errors; the last fifth's p99 within 20% of the first's; no service's RSS growing 5%.
- overload (3x, then 0.5x): only 200, 429 or 503; refusals answered in under half the soak's p50; the
  accepted within the budget; the orchestrator's queue within its bound; all 200 a second after.
- faults (0.5x): kill -9 the head, restart it; then the embedding service. Every failure a 503/504
  naming the hop that was down, only while it was; none past the budget; all 200 after.
- SIGTERM to each service in turn, then a restart: it exits by itself within its 10 s grace, with
  status 0 or SIGTERM's; failures as under faults (the orchestrator: refused connections only).
- head swap: a version 2 dropped into the head's folder: no failure; answers move to version 2.
- encoder swap: the embedding service restarted on a re-exported encoder: as under faults.

The quick plan shortens the phases (its soak, too short to judge, reports its p99 drift and RSS growth
without checking them), copies the encoder instead of exporting it, and runs it without XLA, so that
restarts take seconds. Loopback only, bounded in time; it stops everything it started."""

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx

from orchestrator.settings import OrchestratorSettings
from perf.harness.client import Route, http_request, one_hop
from perf.harness.load import Sample, closed_run, open_run, windows
from perf.harness.meters import counter
from perf.harness.progress import say
from perf.harness.report import Target, at_least, at_most, below, info, num
from perf.harness.scenario import Context, Scenario
from perf.harness.stacks import ENCODER_DIR, Started, embedding, port_of
from perf.harness.stats import figures, ms
from perf.sentences import SENTENCES
from stack import services
from stack.procs import free_port, rss_mb
from stack.restartable import Restartable

BUDGET_MS, GRACE_S = 5000, 10.0  # every request's X-Request-Timeout-Ms; the services' graceful-shutdown time
HEADERS = {"X-Request-Timeout-Ms": f"{BUDGET_MS}"}
REQUESTS = [http_request("POST", "/classify", json.dumps({"text": s}).encode(), headers=HEADERS) for s in SENTENCES]
LOST = ("TimeoutError", "IncompleteReadError", "ConnectionResetError", "BrokenPipeError", "LimitOverrunError")
QUEUES = {"orchestrator_queue_texts": "orchestrator", "embedding_queue_texts": "embedding"}  # metric: service
FIFTHS_P99 = "p99 of the last fifth within 20% of the first's"
RSS_GROWTH = "RSS of each service grew < 5% after warm-up"
FAULTS = {"soak": "none", "overload": "none"}  # each phase's fault, in the drill's order
FAULTS["faults"] = "kill -9 the head, restart it; then kill -9 the embedding service, restart it"
FAULTS |= {f"SIGTERM {name}": f"SIGTERM to the {name}, then restart" for name in ("head", "embedding", "orchestrator")}
FAULTS |= {"head swap": "a new head version dropped in"}
FAULTS["encoder swap"] = "the embedding service restarted on a re-exported encoder"
TAKEN_DOWN = {"kill": "killed", "term": "sent SIGTERM", "swap": "stopped"}  # how a service goes down: the event
TITLE = "Reliability drill"
QUEUE_BOUND = OrchestratorSettings().max_queue_texts  # the drill's orchestrator runs the default


@dataclass(frozen=True)
class Plan:
    mode: str
    xla: bool  # the encoder XLA-compiled (quick: off, so that its restarts take seconds)
    capacity_requests: int  # the capacity run at c64 (20 s at most)
    soak_s: float
    overload_s: float  # at 3x capacity
    recovery_s: float  # then at half
    head_swap_s: float
    after_restart_s: float  # load after a restart is done (a restart's length varies): recovery is checked in it
    export_encoder: bool  # the encoder swap exports an encoder (quick: copies it; the export is tested elsewhere)
    excused: tuple[str, ...] = ()  # checks its phases are too short to judge (the quick soak: 6 s)


QUICK = Plan("quick", False, 1000, 6.0, 5.0, 3.0, 6.0, 4.0, False, excused=(FIFTHS_P99, RSS_GROWTH))
FULL = Plan("full", True, 4000, 300.0, 30.0, 20.0, 15.0, 6.0, True)
Note = Callable[[str], None]  # notes an event, with its time into the phase
Probe = tuple[float, Callable[[httpx.AsyncClient], Awaitable[None]]]  # every so many seconds, read something
Actions = Callable[[Note], None]  # what breaks things, in another thread
Phase = dict[str, Any]  # a phase's record


def summary(samples: Sequence[Sample]) -> dict[str, Any]:
    """Outcomes, and latency from when each request was due: the 200s' p50 and p99, and everyone's max."""
    ok, top = ms([s.latency_s for s in samples if s.outcome == "200"]), max((s.latency_s for s in samples), default=0)
    found = {"requests": len(samples), "outcomes": dict(Counter(s.outcome for s in samples))}
    return found | {"ok_p50_ms": ok["p50"], "ok_p99_ms": ok["p99"], "max_ms": top * 1e3}


@dataclass
class Drill:
    parts: dict[str, Restartable]  # embedding, head, orchestrator
    work: Path
    plan: Plan
    events: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds into the current phase)

    def process(self, name: str) -> subprocess.Popen[bytes]:
        return cast(subprocess.Popen[bytes], self.parts[name].process)  # started before any phase

    def route(self) -> Route:
        return one_hop(port_of(self.parts["orchestrator"].service), lambda i: REQUESTS[i % len(REQUESTS)])

    def load(
        self, rate: float, for_s: float, actions: Actions | None = None, after_s: float = 0, probe: Probe | None = None
    ) -> list[Sample]:
        """Open-loop /classify at `rate` for `for_s` s (a bound where `after_s`: the load ends that long after
        `actions` return), `probe` reading every so often, `actions` breaking things in another thread."""
        self.events, begun = [], time.monotonic()

        def note(what: str) -> None:
            self.events.append((what, time.monotonic() - begun))
            say(f"  {what} at {self.events[-1][1]:.1f}s")

        async def watch() -> None:
            async with httpx.AsyncClient(timeout=2.0) as client:
                while probe:
                    await asyncio.sleep(probe[0])
                    await probe[1](client)

        async def run() -> list[Sample]:
            stop = asyncio.Event()
            load = open_run(self.route(), rate_per_s=rate, duration_s=for_s, timeout_s=BUDGET_MS / 1e3 + 5, stop=stop)
            running, watcher = asyncio.create_task(load), asyncio.create_task(watch())
            await asyncio.to_thread(actions or (lambda _: None), note)
            if after_s:
                await asyncio.sleep(after_s)
                stop.set()
            samples = (await running).samples
            watcher.cancel()
            return samples

        return asyncio.run(run())

    def phase(
        self, name: str, load: str, samples: list[Sample], checks: dict[str, bool], spared: int = 0, **details: Any
    ) -> Phase:
        """A phase's record; `spared`: failures that are refusals, not losses, though alike to the client."""
        non_200: dict[str, list[float]] = {}  # each distinct answer -> when its requests were due
        for s in samples:
            if s.outcome != "200":
                non_200.setdefault(f"{s.outcome} {s.body[:300].decode(errors='replace')}", []).append(s.due_s)
        lost = sum(s.outcome in LOST for s in samples) - spared
        excused = [check for check in checks if check in self.plan.excused]
        passed = lost == 0 and all(met for check, met in checks.items() if check not in excused)
        say(f"{name}: {'passed' if passed else 'FAILED'} {checks} lost={lost}")
        found = {"name": name, "load": load, "fault": FAULTS[name], "summary": summary(samples), "lost": lost}
        details["non_200"] = [
            f"{len(due)} due {min(due):.1f}-{max(due):.1f} s: {what}" for what, due in sorted(non_200.items())
        ][:6]
        return found | {"checks": checks, "excused": excused, "details": details, "passed": passed}


@contextlib.contextmanager
def started(ctx: Context, work: Path) -> Iterator[Drill]:
    """The three services, one after the other, on a copy of the heads; each recorded, always stopped."""
    for name in services.HEADS:
        shutil.copytree(services.DEFAULT_HEADS_ROOT / name / "1", work / "heads" / name / "1")
    grace = {"graceful_shutdown_s": f"{GRACE_S:g}"}
    # The cache off: the drill's load repeats its texts, and must reach the encoder.
    encoder = embedding("embedding", xla=ctx.plan.xla, cache_bytes="0", **grace)
    grpc, rest, config = free_port(), free_port(), work / "heads.config"
    head = services.head(grpc, rest, work / "heads", config, "--file_system_poll_wait_seconds", "0.5")
    front = services.orchestrator(
        free_port(), encoder.url, grpc, rest, head_config_file=str(config), log_level="warning", **grace
    )
    ctx.logs.mkdir(parents=True, exist_ok=True)
    drill = Drill({s.name: Restartable(s, ctx.logs / f"{s.name}.log") for s in (encoder, head, front)}, work, ctx.plan)
    up: dict[str, Started] = {}
    try:
        for name, part in drill.parts.items():
            begun = time.perf_counter()
            part.start()
            up[name] = Started(part.service, pid := drill.process(name).pid, time.perf_counter() - begun, rss_mb(pid))
        yield drill
    finally:
        for name in reversed(drill.parts):
            if name in up:
                up[name].loaded_rss_mb = rss_mb(drill.process(name).pid)
                ctx.stacks.records[name] = up[name].record()
            drill.parts[name].stop()


def soak(drill: Drill, rate: float) -> Phase:
    async def sample_rss(_: httpx.AsyncClient) -> None:
        for name, values in rss.items():
            values.append(rss_mb(drill.process(name).pid))

    seconds, rss = drill.plan.soak_s, {name: list[float]() for name in drill.parts}
    samples = drill.load(rate, seconds, probe=(seconds / 20, sample_rss))
    p99s = [summary(fifth)["ok_p99_ms"] for fifth in windows(samples, seconds / 5)]
    growth = {name: (values[-1] / values[3] - 1) if len(values) > 4 else 0.0 for name, values in rss.items()}
    rss_end = {name: values[-1] for name, values in rss.items() if values}
    steady = (p99s[-1] or 0) <= 1.2 * (p99s[0] or 0)
    checks = {"zero errors": all(s.outcome == "200" for s in samples), FIFTHS_P99: steady}
    checks[RSS_GROWTH] = all(g < 0.05 for g in growth.values())
    load = f"open loop {rate:.0f} req/s (70% of capacity), {seconds:.0f} s"
    return drill.phase("soak", load, samples, checks, p99_ms_by_fifth=p99s, rss_growth=growth, rss_mb_end=rss_end)


def overload(drill: Drill, capacity: float, normal_p50_ms: float) -> Phase:
    async def watch_queues(client: httpx.AsyncClient) -> None:
        for metric, name in QUEUES.items():
            with contextlib.suppress(httpx.HTTPError):
                peaks[metric] = max(peaks[metric], await counter(client, drill.parts[name].url, metric))

    peaks = dict.fromkeys(QUEUES, 0.0)
    high = drill.load(3 * capacity, drill.plan.overload_s, probe=(0.25, watch_queues))
    low = drill.load(0.5 * capacity, drill.plan.recovery_s)
    # Refusals timed from sending: at 3x the client itself falls behind, which due time would charge the server.
    refusals = [s.service_s for s in high if s.outcome in ("429", "503")]
    refused, accepted = ms(refusals), summary(high)
    checks = {
        "only 200, 429 or 503 under overload": set(accepted["outcomes"]) <= {"200", "429", "503"},
        "some requests refused": bool(refusals),
        "refusals answered (p50) in under half the normal p50": (refused["p50"] or 0.0) < normal_p50_ms / 2,
        f"accepted p99 within the {BUDGET_MS} ms budget": (accepted["ok_p99_ms"] or 0) <= BUDGET_MS,
        f"queues bounded (orchestrator <= {QUEUE_BOUND} texts)": peaks["orchestrator_queue_texts"] <= QUEUE_BOUND,
        "all 200 one second after load drops": all(s.outcome == "200" for s in low if s.due_s >= 1.0),
    }
    more: dict[str, Any] = {"refused": len(refusals), "refused_p50_ms": refused["p50"]}
    more |= {"refused_p99_ms": refused["p99"], "normal_p50_ms": normal_p50_ms, "accepted_under_overload": accepted}
    load = f"open loop {3 * capacity:.0f} req/s (3x capacity), {drill.plan.overload_s:g} s; then {capacity / 2:.0f}/s"
    return drill.phase("overload", load, [*high, *low], checks, **more, recovery=summary(low), queue_peaks=peaks)


def restarts(drill: Drill, rate: float, name: str, steps: dict[str, str]) -> Phase:
    """Load at `rate` while each step takes a service down, two seconds apart: `kill` -9 it (down for two
    seconds), `term` SIGTERM it (until it exits), or `swap` stop it for the fresh encoder; then starts it again."""

    def refused(sample: Sample) -> bool:  # the front door stopping: new connections refused, queued ones reset
        cut = sample.outcome in ("ConnectionRefusedError", "ConnectionResetError")
        return stopping is not None and cut and stopping[0] <= sample.due_s <= stopping[1]

    def hop_of(failure: Sample) -> str:  # the hop its error code names ("head_unavailable": "head"), or ""
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return str(json.loads(failure.body)["error"]["code"]).split("_", 1)[0]
        return ""

    def act(note: Note) -> None:
        for service, how in steps.items():
            time.sleep(2)
            part, process = drill.parts[service], drill.process(service)
            {"term": process.terminate, "swap": part.stop}.get(how, partial(part.signal, signal.SIGKILL))()
            note(f"{service} {TAKEN_DOWN[how]}")
            if how == "term":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    note(f"{service} exited with {process.wait(GRACE_S + 10)}")
            time.sleep(2 if how == "kill" else 0)
            if how == "swap":  # the embedding service on the fresh encoder
                fresh = {**part.service.env, "EMBEDDING_MODEL_DIR": str(drill.work / "encoder-2")}
                drill.parts[service] = part = Restartable(replace(part.service, env=fresh), part.log)
            part.start()
            note(f"{service} ready")

    samples = drill.load(rate, 240.0, act, after_s=drill.plan.after_restart_s)  # 240 s: a bound
    at = dict(drill.events)
    # Each service's outage: from its going down to two seconds after it is ready again.
    down = {service: (at[f"{service} {TAKEN_DOWN[how]}"], at[f"{service} ready"] + 2) for service, how in steps.items()}
    stopping = (at["orchestrator sent SIGTERM"], at["orchestrator ready"]) if "orchestrator" in down else None
    checks: dict[str, bool] = {}
    if "term" in steps.values():
        exited, at_s = next(((what, t) for what, t in drill.events if "exited" in what), ("", float("inf")))
        checks[f"exited by itself within the {GRACE_S:.0f} s grace"] = at_s - down[next(iter(steps))][0] <= GRACE_S
        # uvicorn re-raises the signal after its graceful stop, so its processes end "killed by SIGTERM".
        checks["exit status 0 or SIGTERM's"] = exited.endswith(("with 0", f"with {-signal.SIGTERM}"))
    if stopping is not None:
        checks["only refused connections while down"] = all(s.outcome == "200" or refused(s) for s in samples)
    else:  # every failure a 503/504 whose code names the hop that was down when the request was due
        failed = [(s, hop_of(s)) for s in samples if s.outcome != "200"]
        named = all(s.outcome in ("503", "504") and hop in down for s, hop in failed)
        inside = all(down[hop][0] - BUDGET_MS / 1e3 <= s.due_s <= down[hop][1] for s, hop in failed if hop in down)
        checks |= {"every failure is a 503/504 naming the hop": named, "failures only while a hop was down": inside}
    if name == "faults":
        longest = summary(samples)["max_ms"]
        checks[f"none took longer than its {BUDGET_MS} ms budget (+1 s)"] = longest <= BUDGET_MS + 1000
    # Recovered: at least a second of load came after the last restart, and all of it was answered 200.
    later = [s for s in samples if s.due_s > max(end for _, end in down.values())]
    recovered = bool(later) and later[-1].due_s - later[0].due_s >= 1.0 and all(s.outcome == "200" for s in later)
    checks["recovered: all 200 after the last restart"] = recovered
    spared = sum(s.outcome in LOST and refused(s) for s in samples)
    return drill.phase(name, f"open loop {rate:.0f} req/s", samples, checks, spared, events=drill.events)


def head_swap(drill: Drill, rate: float) -> Phase:
    def add_version(note: Note) -> None:
        time.sleep(2)
        shutil.copytree(base / "1", base / ".incoming")
        (base / ".incoming").rename(base / "2")
        note("head version 2 added")

    base = drill.work / "heads" / services.DEFAULT_HEAD
    samples = drill.load(rate, drill.plan.head_swap_s, add_version)
    versions = [str(json.loads(s.body)["model"]["version"]) for s in samples if s.outcome == "200"]
    moved = bool(versions) and versions[0] == "1" and versions[-1] == "2"
    failed = any(s.outcome != "200" for s in samples)
    checks = {"zero failed requests": not failed, "answers moved from version 1 to 2": moved}
    return drill.phase("head swap", f"open loop {rate:.0f} req/s", samples, checks, versions=dict(Counter(versions)))


def run(ctx: Context) -> dict[str, Any]:
    ctx.settings.update(budget_ms=BUDGET_MS, grace_s=GRACE_S)
    with tempfile.TemporaryDirectory(prefix="reliability-") as work, started(ctx, Path(work)) as drill:
        load = closed_run(drill.route(), concurrency=64, requests=ctx.plan.capacity_requests, duration_s=20)
        capacity = figures(asyncio.run(load))
        rate = capacity["throughput_per_s"]
        say(f"capacity: {rate:.0f} req/s at concurrency 64")
        phases = [soak(drill, 0.7 * rate)]
        phases.append(overload(drill, rate, phases[0]["summary"]["ok_p50_ms"] or 0.0))
        phases.append(restarts(drill, 0.5 * rate, "faults", {"head": "kill", "embedding": "kill"}))
        for name in ("head", "embedding", "orchestrator"):
            phases.append(restarts(drill, 0.5 * rate, f"SIGTERM {name}", {name: "term"}))
        phases.append(head_swap(drill, 0.5 * rate))
        if ctx.plan.export_encoder:  # the encoder swap's fresh encoder (quick: copied)
            command = [sys.executable, "-m", "models.export_encoder", "--output", str(drill.work / "encoder-2")]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        else:
            shutil.copytree(ENCODER_DIR, drill.work / "encoder-2")
        phases.append(restarts(drill, 0.5 * rate, "encoder swap", {"embedding": "swap"}))
    return {"capacity_per_s": rate, "capacity": capacity, "phases": phases}


def targets(results: dict[str, Any]) -> list[Target]:
    phases = {p["name"]: p for p in results["phases"]}
    o = phases["overload"]["details"]
    return [
        info("capacity: /classify requests/s at c64", results["capacity_per_s"]),
        at_least("phases passed", sum(p["passed"] for p in phases.values()), len(FAULTS)),
        at_most("requests lost, every phase", sum(p["lost"] for p in phases.values()), 0),
        info("soak: p99 of the 200s (ms)", phases["soak"]["summary"]["ok_p99_ms"]),
        below("overload: refusals' p50 (ms), under half the soak's p50", o["refused_p50_ms"], o["normal_p50_ms"] / 2),
        at_most("overload: the accepted's p99 (ms)", o["accepted_under_overload"]["ok_p99_ms"], BUDGET_MS),
    ]


def checks(results: dict[str, Any]) -> list[str]:
    """Every phase's checks but those its plan excuses (the soak's in quick mode), and nothing lost."""
    phases = results["phases"]
    problems = [
        f"{p['name']}: not so: {c}" for p in phases for c, ok in p["checks"].items() if not (ok or c in p["excused"])
    ]
    problems += [f"{p['name']}: {p['lost']} requests lost" for p in phases if p["lost"]]
    if [p["name"] for p in phases] != list(FAULTS):
        problems.append(f"phases {[p['name'] for p in phases]}, not {list(FAULTS)}")
    if set(phases[2]["summary"]["outcomes"]) == {"200"}:
        problems.append("faults: every request answered 200: the faults did not happen")
    return problems


def tables(report: dict[str, Any]) -> list[str]:
    phases = report["results"]["phases"]

    def met(ok: bool, excused: bool) -> str:
        return "yes" if ok else "NO (too short to judge in this mode)" if excused else "**NO**"

    return [
        "\n## Phases\n",
        "| phase | load | fault | requests | outcomes | lost | p99 ms (200s) | passed |",
        "|---|---|---|---:|---|---:|---:|---|",
        *(
            f"| {p['name']} | {p['load']} | {p['fault']} | {p['summary']['requests']} | "
            f"{', '.join(f'{k}: {v}' for k, v in sorted(p['summary']['outcomes'].items()))} | {p['lost']} | "
            f"{num(p['summary']['ok_p99_ms'], 0)} | {'yes' if p['passed'] else '**NO**'} |"
            for p in phases
        ),
        "\n## Checks\n",
        *(
            f"- **{p['name']}**: " + "; ".join(f"{c}: {met(ok, c in p['excused'])}" for c, ok in p["checks"].items())
            for p in phases
        ),
    ]


FIGURES = (
    *("capacity_per_s", "capacity.latency_ms.p50", "phases.0.summary.ok_p99_ms", "phases.0.details.p99_ms_by_fifth"),
    *(f"phases.{i}.{path}" for i in range(len(FAULTS)) for path in ("summary.requests", "lost", "passed")),
    *("phases.0.details.rss_growth.embedding", "phases.6.details.versions.2", "phases.1.details.refused_p50_ms"),
    *(f"phases.1.details.{p}" for p in ("accepted_under_overload.ok_p99_ms", "queue_peaks.orchestrator_queue_texts")),
)
SCENARIO = Scenario("reliability", TITLE, {"quick": QUICK, "full": FULL}, run, targets, tables, FIGURES, checks)
