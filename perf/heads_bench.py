"""Several heads on one /classify (issue 14), side by side in one run:

1. The pipeline with the head serving three heads: `sentiment`, `topic` and `sentiment2` (a copy of
   sentiment's version 1 under a temporary heads root, for the benchmark), the orchestrator reading the
   same model config.
2. `/classify` with one text per request, asking (a) one head, (b) two, (c) three, at concurrency 1
   (latency) and 64 (throughput, latency), in rounds that rotate which variant goes first, so drift on
   this shared machine falls on every variant.
3. In each run, the CPU (/proc/<pid>/stat, all threads) of the orchestrator, the head and the embedding
   service, and of the load client, per /classify; and the orchestrator's and head's CPU by thread name.
4. A second orchestrator (same settings) under cProfile at c64 with one head, profiled over one run
   after a warm-up (enabled on SIGUSR1, written on SIGUSR2), once on the main thread's CPU clock and
   once on cProfile's default wall clock: the top functions by cumulative and own time, and the own
   time by package and by area (HTTP server, framework, embedding client, gRPC, event loop, JSON).
5. The load client's headroom: its closed-loop c64 rate against a null server (perf.endpoint_bench's,
   an asyncio server that answers at once) and against the orchestrator's /healthz, over /classify's.

Writes perf/results/<UTC timestamp>/heads_bench.{json,md}.

`python -m perf.heads_bench [--quick] [--out DIR]`"""

import argparse
import asyncio
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import orjson

from perf.endpoint_bench import CLOCK_TICKS, HEALTHZ, Meter, Started, Usage, closed_run, counter, ms, started
from perf.loadgen import http_request
from perf.sentences import SENTENCES
from stack import services as stack_services
from stack.procs import LOOPBACK, free_port, server_env, stop, wait_until_ok
from stack.services import DEFAULT_HEADS_ROOT, ROOT, Service

if TYPE_CHECKING:
    from perf.report import Target

# perf.report imports TensorFlow: it is imported only once the load is over.

COPIED_HEAD = "sentiment"
EXTRA_HEAD = "sentiment2"  # COPIED_HEAD's version 1, copied under a temporary heads root
HIGH = 64  # the throughput runs' concurrency
PROFILE_TOP = 15
ENGINES = ("orchestrator", "head", "embedding")  # the processes whose CPU each run reads
THREADED = ("orchestrator", "head")  # and whose CPU it also reads by thread


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    heads: tuple[str, ...]

    def body(self, text: str) -> dict[str, Any]:
        """One head as `head` (the one-head answer); more as `heads`."""
        return {"text": text, "head": self.heads[0]} if len(self.heads) == 1 else {"text": text, "heads": [*self.heads]}


VARIANTS = (
    Variant("a", "one head", ("sentiment",)),
    Variant("b", "two heads", ("sentiment", "topic")),
    Variant("c", "three heads", ("sentiment", "topic", EXTRA_HEAD)),
)
ONE, TWO, THREE = VARIANTS


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
    xla: bool  # the embedding service's encoder XLA-compiled (quick: off, so it starts in seconds)
    rounds: int  # each rotates which variant goes first
    idle_s: float  # the services' CPU with no load, for the net figures
    warm_s: float  # per variant, at c64, before the rounds (and a third of it at c1); not recorded
    c1_s: float
    c64_s: float
    max_requests: int  # per run: runs end at their duration long before this
    profile_s: float  # the profiled orchestrator's c64 run
    headroom_s: float  # each of the load client's headroom runs (null server, /healthz)


QUICK = Plan("quick", False, 1, 1.5, 1.5, 3.0, 4.0, 100_000, 4.0, 2.0)
FULL = Plan("full", True, 3, 4.0, 3.0, 6.0, 10.0, 100_000, 10.0, 4.0)


def say(message: str) -> None:
    print(f"[heads-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- CPU by thread ------------------------------------------------------------------------------------


def thread_cpu_s(pid: int) -> dict[str, float]:
    """utime + stime of each live thread of a process, summed by thread name (/proc/<pid>/task/*/)."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text(encoding="utf-8").strip()
            stat = (task / "stat").read_text(encoding="ascii")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited
        fields = stat[stat.rindex(")") + 2 :].split()
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def thread_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per thread name; a name whose threads exited in between counts what is left (at least 0)."""
    return {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}


# --- services -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    embedding: Service
    head: Service
    orchestrator: Service
    config_path: Path


def pipeline_services(plan: Plan, work: Path) -> Stack:
    """The three services on free ports; the head serves sentiment and topic from build/heads and
    EXTRA_HEAD from a copy of sentiment's version 1 under `work`, from one config the orchestrator reads."""
    extra_root = work / "heads"
    shutil.copytree(DEFAULT_HEADS_ROOT / COPIED_HEAD / "1", extra_root / EXTRA_HEAD / "1")
    config_path = work / "heads.config"
    grpc_port, rest_port = free_port(), free_port()
    head = stack_services.head(grpc_port, rest_port, DEFAULT_HEADS_ROOT, config_path, heads=TWO.heads)
    stack_services.write_heads(
        config_path, {**stack_services.read_heads(config_path), EXTRA_HEAD: extra_root / EXTRA_HEAD}
    )
    embedding = stack_services.embedding(
        free_port(),
        ROOT / "build" / "encoder",
        xla_cache_dir=str(ROOT / "build" / "xla-cache"),
        xla=str(plan.xla).lower(),
        log_level="warning",
        cache_bytes="0",  # the load repeats its texts: heads are measured, not the cache (bench-lanes is)
    )
    orchestrator = stack_services.orchestrator(
        free_port(), embedding.url, grpc_port, rest_port, log_level="warning", head_config_file=str(config_path)
    )
    return Stack(embedding, head, orchestrator, config_path)


def wait_for_heads(url: str, heads: Sequence[str], within_s: float = 60.0) -> list[dict[str, Any]]:
    """Polls the orchestrator's GET /v1/heads until every one of `heads` is ready; returns the list."""
    deadline = time.monotonic() + within_s
    while True:
        listed = httpx.get(f"{url}/v1/heads", timeout=5.0).json()["heads"]
        ready = {head["name"] for head in listed if head["ready"]}
        if set(heads) <= ready:
            return list(listed)
        if time.monotonic() > deadline:
            raise RuntimeError(f"heads {sorted(set(heads) - ready)} not ready within {within_s:.0f}s: {listed}")
        time.sleep(0.2)


def check_answers(url: str) -> dict[str, Any]:
    """One /classify of each variant: every head asked answers, with one prediction."""
    found: dict[str, Any] = {}
    for variant in VARIANTS:
        response = httpx.post(f"{url}/classify", json=variant.body(SENTENCES[0]), timeout=30.0)
        body = response.json()
        answers = {variant.heads[0]: body} if len(variant.heads) == 1 else body.get("heads", {})
        labels = {
            name: answer["predictions"][0]["label"] for name, answer in answers.items() if "predictions" in answer
        }
        if response.status_code != 200 or list(labels) != list(variant.heads):
            raise RuntimeError(f"{variant.title}: {response.status_code} {body}")
        found[variant.key] = {"status": response.status_code, "labels": labels}
    return found


# --- load ---------------------------------------------------------------------------------------------


def classify_requests(variant: Variant) -> Callable[[int], bytes]:
    """Request i: the variant's body for SENTENCES[i % 64]."""
    requests = [http_request("POST", "/classify", orjson.dumps(variant.body(text))) for text in SENTENCES]
    return lambda index: requests[index % len(requests)]


@dataclass(frozen=True)
class Pids:
    by_name: dict[str, int]  # ENGINES -> pid


async def hop_calls(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The orchestrator's own counts: embedding calls, the requests they carried, and head calls."""
    return {
        "embedding_calls": await counter(client, url, "orchestrator_requests_per_call_count"),
        "coalesced_requests": await counter(client, url, "orchestrator_requests_per_call_sum"),
        "head_calls": await counter(client, url, "orchestrator_stage_duration_seconds_count", 'stage="head_call"'),
    }


async def measured_run(
    client: httpx.AsyncClient,
    url: str,
    make: Callable[[int], bytes],
    pids: Pids,
    *,
    concurrency: int,
    requests: int,
    duration_s: float,
) -> tuple[dict[str, Any], list[float]]:
    """A closed-loop run on the orchestrator at `url` (perf.endpoint_bench.closed_run: one keep-alive
    connection per worker, one unmeasured request on each first) with every engine's CPU read around it,
    and the orchestrator's hop-call counts. The CPU window holds the opening requests too, so CPU per
    request divides by them as well. Returns the run's figures and its successful latencies (seconds from
    send)."""
    port = int(url.rsplit(":", 1)[1])
    calls = await hop_calls(client, url)
    meters = {name: Meter(pid) for name, pid in pids.by_name.items()}
    threads = {name: thread_cpu_s(pids.by_name[name]) for name in THREADED}
    samples, inner = await closed_run(
        port, make, pid=pids.by_name["orchestrator"], concurrency=concurrency, requests=requests, duration_s=duration_s
    )
    usages: dict[str, Usage] = {name: meter.stop() for name, meter in meters.items()}
    by_thread = {name: thread_delta(threads[name], thread_cpu_s(pids.by_name[name])) for name in THREADED}
    calls = {name: count - calls[name] for name, count in (await hop_calls(client, url)).items()}
    ok = [s.service_s for s in samples if s.outcome == "200"]
    window = usages["orchestrator"]
    run = {
        "concurrency": concurrency,
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "wall_s": inner.wall_s,
        "throughput_per_s": len(ok) / inner.wall_s,
        "latency_ms": ms(ok),
        "cpu_window_requests": len(samples) + concurrency,
        "cpu_window_s": window.wall_s,
        "cpu_s": {**{name: usage.service_cpu_s for name, usage in usages.items()}, "client": window.client_cpu_s},
        "threads_cpu_s": by_thread,
        "hop_calls": calls,
    }
    return run, ok


async def idle(pids: Pids, seconds: float) -> dict[str, Any]:
    meters = {name: Meter(pid) for name, pid in pids.by_name.items()}
    await asyncio.sleep(seconds)
    usages = {name: meter.stop() for name, meter in meters.items()}
    return {"wall_s": seconds, "cores": {name: usage.service_cpu_s / usage.wall_s for name, usage in usages.items()}}


def _said(name: str, run: dict[str, Any]) -> str:
    latency = run["latency_ms"]
    per = {k: v / run["cpu_window_requests"] * 1e3 for k, v in run["cpu_s"].items()}
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in per.items())
    calls = run["hop_calls"]
    coalesced = calls["coalesced_requests"] / calls["embedding_calls"] if calls["embedding_calls"] else 0.0
    return (
        f"{name} c{run['concurrency']}: {run['throughput_per_s']:.1f}/s, p50 {latency['p50'] or 0:.2f} ms, "
        f"p99 {latency['p99'] or 0:.2f} ms, {run['outcomes']}; core-ms per request: {cpu}; "
        f"{coalesced:.1f} requests per embedding call"
    )


async def rounds_phase(
    url: str, pids: Pids, plan: Plan
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], list[float]]]:
    """Warm-up (each variant at c64 and c1, unrecorded), then the rounds: round r starts with variant
    r - 1 (mod 3) and goes through all three at c1, then all three at c64, in that order."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await _rounds(client, url, pids, plan)


async def _rounds(
    client: httpx.AsyncClient, url: str, pids: Pids, plan: Plan
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], list[float]]]:
    makes = {variant.key: classify_requests(variant) for variant in VARIANTS}
    for variant in VARIANTS:
        for concurrency, seconds in ((HIGH, plan.warm_s), (1, plan.warm_s / 3)):
            warm, _ = await measured_run(
                client,
                url,
                makes[variant.key],
                pids,
                concurrency=concurrency,
                requests=plan.max_requests,
                duration_s=seconds,
            )
            say(f"warm-up, {_said(variant.title, warm)}")
    runs: list[dict[str, Any]] = []
    latencies: dict[tuple[str, int], list[float]] = {}
    for round_ in range(1, plan.rounds + 1):
        shift = (round_ - 1) % len(VARIANTS)
        order = [*VARIANTS[shift:], *VARIANTS[:shift]]
        for concurrency, seconds in ((1, plan.c1_s), (HIGH, plan.c64_s)):
            for variant in order:
                run, ok = await measured_run(
                    client,
                    url,
                    makes[variant.key],
                    pids,
                    concurrency=concurrency,
                    requests=plan.max_requests,
                    duration_s=seconds,
                )
                runs.append({"round": round_, "variant": variant.key, **run})
                latencies.setdefault((variant.key, concurrency), []).extend(ok)
                say(f"round {round_}, {_said(variant.title, run)}")
    return runs, latencies


# --- figures ------------------------------------------------------------------------------------------


def per_request_cpu(runs: Sequence[dict[str, Any]], idle_cores: dict[str, float]) -> dict[str, Any]:
    """Core-ms per /classify over `runs` pooled: each engine's, orchestrator + head, and net of idle."""
    requests = sum(r["cpu_window_requests"] for r in runs)
    window_s = sum(r["cpu_window_s"] for r in runs)
    total = {name: sum(r["cpu_s"][name] for r in runs) for name in (*ENGINES, "client")}
    raw = {name: seconds / requests * 1e3 for name, seconds in total.items()}
    net = {name: (total[name] - idle_cores[name] * window_s) / requests * 1e3 for name in ENGINES}
    raw["orchestrator_plus_head"] = raw["orchestrator"] + raw["head"]
    net["orchestrator_plus_head"] = net["orchestrator"] + net["head"]
    by_thread: dict[str, dict[str, float]] = {}
    for engine in THREADED:
        names = Counter[str]()
        for run in runs:
            names.update(run["threads_cpu_s"][engine])
        by_thread[engine] = {n: s / requests * 1e3 for n, s in sorted(names.items(), key=lambda kv: -kv[1])}
    calls = {name: sum(r["hop_calls"][name] for r in runs) for name in runs[0]["hop_calls"]}
    coalescing = {
        "requests_per_embedding_call": calls["coalesced_requests"] / calls["embedding_calls"],
        "head_calls_per_embedding_call": calls["head_calls"] / calls["embedding_calls"],
        **calls,
    }
    return {
        "requests": requests,
        "core_ms_per_request": raw,
        "net_of_idle": net,
        "by_thread": by_thread,
        "hop_calls": coalescing,
    }


def variant_figures(
    runs: Sequence[dict[str, Any]], latencies: dict[tuple[str, int], list[float]], idle_cores: dict[str, float]
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for variant in VARIANTS:
        found[variant.key] = {"title": variant.title, "heads": list(variant.heads)}
        for concurrency in (1, HIGH):
            mine = [r for r in runs if r["variant"] == variant.key and r["concurrency"] == concurrency]
            pooled = ms(latencies.get((variant.key, concurrency), []))
            per_round = [r["throughput_per_s"] for r in mine]
            found[variant.key][f"c{concurrency}"] = {
                "runs": len(mine),
                "requests": sum(r["requests"] for r in mine),
                "errors": sum(n for r in mine for outcome, n in r["outcomes"].items() if outcome != "200"),
                "throughput_per_s": float(statistics.median(per_round)),
                "throughput_per_round": per_round,
                "latency_ms": pooled,  # over every round's successful requests
                "p50_ms_per_round": [r["latency_ms"]["p50"] for r in mine],
                "cpu": per_request_cpu(mine, idle_cores),
            }
    return found


def comparisons(variants: dict[str, Any], rounds: int) -> dict[str, Any]:
    """(b) and (c) against (a): c64 throughput ratios (of the medians over rounds, and per round) and c1
    p50 deltas (of the pooled p50s, and per round)."""
    a = variants[ONE.key]
    found: dict[str, Any] = {}
    for other in (TWO, THREE):
        v = variants[other.key]
        found[f"{other.key}_over_a"] = {
            "c64_throughput_ratio": v["c64"]["throughput_per_s"] / a["c64"]["throughput_per_s"],
            "c64_throughput_ratio_per_round": [
                x / y for x, y in zip(v["c64"]["throughput_per_round"], a["c64"]["throughput_per_round"], strict=True)
            ],
            "c1_p50_delta_ms": v["c1"]["latency_ms"]["p50"] - a["c1"]["latency_ms"]["p50"],
            "c1_p50_delta_ms_per_round": [
                x - y for x, y in zip(v["c1"]["p50_ms_per_round"], a["c1"]["p50_ms_per_round"], strict=True)
            ],
            "c1_p99_delta_ms": v["c1"]["latency_ms"]["p99"] - a["c1"]["latency_ms"]["p99"],
            "c64_p50_delta_ms": v["c64"]["latency_ms"]["p50"] - a["c64"]["latency_ms"]["p50"],
        }
    found["rounds"] = rounds
    return found


# --- the profile --------------------------------------------------------------------------------------

# `python -c PROFILER <profile file> <clock>`: the orchestrator's own entry point, with cProfile enabled on
# SIGUSR1 (once the imports, start-up and a warm-up are done) and disabled and written on SIGUSR2. Enabled
# from a signal handler, inside a callback of the event loop, the profiler never sees the loop's own
# frames: it counts only the Python callbacks the loop runs (and what they call), not the loop's waiting.
# The clock: "cpu", the main thread's CPU time (the event loop's thread; other threads' CPU is not in it,
# and each reading is a system call, so the profiler costs more); or "wall", cProfile's default (a cheap
# clock, but the time the thread waits for a core on this busy machine counts too).
PROFILER = """\
import cProfile, os, signal, sys, time
import orchestrator.__main__ as entry
path, clock = sys.argv[1], sys.argv[2]
profile = cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()
def enable(signum, frame):
    profile.enable()
def write(signum, frame):
    profile.disable()
    profile.dump_stats(path + ".part")
    os.replace(path + ".part", path)
signal.signal(signal.SIGUSR1, enable)
signal.signal(signal.SIGUSR2, write)
entry.main()
"""
CLOCKS = ("cpu", "wall")

_STDLIB = Path(sysconfig.get_paths()["stdlib"])
_BUILTIN_TYPE = re.compile(r"of '([\w.]+)' objects")
_BUILTIN_FUNCTION = re.compile(r"<built-in method ([\w.]+)>")
# Standard-library modules that do a job of their own in the orchestrator (the event loop, sockets, JSON,
# logging): the others (re, contextlib, typing, enum, ...) are helpers, whose time goes to their callers.
_STDLIB_OWN = {"asyncio", "_asyncio", "socket", "_socket", "select", "selectors", "json", "_json", "logging"}
_STDLIB_OWN |= {"base64", "binascii", "ssl", "_ssl"}
_FRAMEWORK = "web framework: routing, middleware, dependencies, body validation (starlette, fastapi, pydantic)"
_CLIENT = "embedding HTTP client (httpx, httpcore, h11, anyio)"
_LOOP = "event loop: tasks, futures, sockets (asyncio, uvloop)"
_JSON = "JSON (stdlib json: request bodies; orjson: answers, embedding calls)"
AREAS = {
    **dict.fromkeys(("uvicorn", "httptools"), "HTTP server: connections, request parsing (uvicorn, httptools)"),
    **dict.fromkeys(("starlette", "fastapi", "pydantic", "pydantic_core", "typing_extensions"), _FRAMEWORK),
    **dict.fromkeys(("opentelemetry", "typing_inspection", "annotated_types"), _FRAMEWORK),
    **dict.fromkeys(("httpx", "httpcore", "h11", "anyio", "sniffio", "certifi", "idna"), _CLIENT),
    **dict.fromkeys(("grpc", "google"), "gRPC client (grpc.aio, protobuf)"),
    **dict.fromkeys(("asyncio", "_asyncio", "uvloop", "socket", "_socket", "select", "selectors"), _LOOP),
    **dict.fromkeys(("json", "_json", "orjson"), _JSON),
    "orchestrator": "orchestrator's own code (coalescer, pipeline, clients, routes)",
    "service_common": "service_common: middleware, deadlines, errors, logging context",
    "logging": "logging",
    "prometheus_client": "metrics (prometheus_client)",
    "numpy": "numpy",
    **dict.fromkeys(("base64", "binascii"), "base64"),
    **dict.fromkeys(("ssl", "_ssl"), "TLS set-up (ssl)"),
}
Key = tuple[str, int, str]  # pstats: (file, line, function)


def _package(key: Key) -> str | None:
    """The library (site-packages top level), our package, or the standard-library module a function is
    in; None for a helper whose time goes to its callers (a generic built-in such as list.append, or a
    standard-library helper such as re)."""
    filename, _, name = key
    if filename == "~":
        match = _BUILTIN_TYPE.search(name) or _BUILTIN_FUNCTION.search(name)
        if match is None or "." not in match[1]:
            return None  # a method of a built-in type (dict.get), or a built-in function (isinstance)
        module = match[1].split(".")[0]
    else:
        path = Path(filename)
        if "site-packages" in path.parts:
            return path.parts[path.parts.index("site-packages") + 1].removesuffix(".py")
        if path.is_relative_to(ROOT):
            return path.relative_to(ROOT).parts[0].removesuffix(".py")
        if not path.is_relative_to(_STDLIB):
            return None  # <frozen importlib._bootstrap>, <string>
        module = path.relative_to(_STDLIB).parts[0].removesuffix(".py")
    return None if module in sys.stdlib_module_names and module not in _STDLIB_OWN else module


def _label(key: Key) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    path = Path(filename)
    if "site-packages" in path.parts:
        shown = "/".join(path.parts[path.parts.index("site-packages") + 1 :])
    elif path.is_relative_to(ROOT):
        shown = str(path.relative_to(ROOT))
    elif path.is_relative_to(_STDLIB):
        shown = str(path.relative_to(_STDLIB))
    else:
        shown = filename
    return f"{shown}:{line}({name})"


def _owners(entries: dict[Key, Any]) -> Callable[[Key], dict[str, float]]:
    """For each function, the packages its own time counts for: its own, or for a helper, its callers'
    (in proportion to the time it spent for each, up through helpers calling helpers)."""
    memo: dict[Key, dict[str, float]] = {}

    def owners(key: Key, seen: frozenset[Key]) -> dict[str, float]:
        if key in memo:
            return memo[key]
        package = _package(key)
        if package is not None:
            return memo.setdefault(key, {package: 1.0})
        callers = {c: v[2] for c, v in entries[key][4].items() if c in entries and c not in seen}
        whole = sum(callers.values())
        if whole <= 0:
            return memo.setdefault(key, {"unattributed helpers": 1.0})
        found: Counter[str] = Counter()
        for caller, portion in callers.items():
            for name, share in owners(caller, seen | {key}).items():
                found[name] += share * portion / whole
        return memo.setdefault(key, dict(found))

    return lambda key: owners(key, frozenset())


def analyse_profile(path: Path, requests: int, clock: str) -> dict[str, Any]:
    """The top functions by cumulative and own time, and the own time by package and by area."""
    entries: dict[Key, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(value[2] for value in entries.values())

    def row(key: Key) -> dict[str, Any]:
        _, calls, own, cumulative, _ = entries[key]
        return {
            "function": _label(key),
            "calls": calls,
            "own_s": own,
            "cumulative_s": cumulative,
            "own_share": own / total,
            "cumulative_share": cumulative / total,
            "own_us_per_request": own / requests * 1e6,
            "cumulative_us_per_request": cumulative / requests * 1e6,
        }

    owners = _owners(entries)
    packages: Counter[str] = Counter()
    for key, value in entries.items():
        for name, share in owners(key).items():
            packages[name] += value[2] * share
    areas: Counter[str] = Counter()
    for package, seconds in packages.items():
        areas[AREAS.get(package, f"other: {package}")] += seconds

    def shares(found: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"name": name, "own_s": s, "share": s / total, "us_per_request": s / requests * 1e6}
            for name, s in found.most_common()
        ]

    return {
        "clock": clock,
        "profiled_s": total,
        "us_per_request": total / requests * 1e6,
        "top_cumulative": [row(k) for k in sorted(entries, key=lambda k: entries[k][3], reverse=True)[:PROFILE_TOP]],
        "top_own": [row(k) for k in sorted(entries, key=lambda k: entries[k][2], reverse=True)[:PROFILE_TOP]],
        "by_package": shares(packages),
        "by_area": shares(areas),
    }


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while not path.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def profile_run(base: Service, clock: str, plan: Plan, logs: Path) -> dict[str, Any]:
    """A second orchestrator (same settings, its own port) under PROFILER with `clock`: warmed up at c64
    with one head, then profiled over a c64 run."""
    port = free_port()
    name = f"orchestrator-profiled-{clock}"
    service = replace(
        base, name=name, url=f"http://{LOOPBACK}:{port}", env={**base.env, "ORCHESTRATOR_PORT": str(port)}
    )
    profile_path = logs / f"orchestrator-{clock}.prof"
    make = classify_requests(ONE)
    with (logs / f"{name}.log").open("wb") as log:
        command = [sys.executable, "-c", PROFILER, str(profile_path), clock]
        proc = subprocess.Popen(command, env=server_env(service.env), cwd=ROOT, stdout=log, stderr=log)
    try:
        ready_after = wait_until_ok(proc, service.ready_url, 120, poll_s=0.2)
        say(f"{name} ready after {ready_after:.1f}s (pid {proc.pid})")
        wait_for_heads(service.url, ONE.heads)
        asyncio.run(
            closed_run(port, make, pid=proc.pid, concurrency=HIGH, requests=plan.max_requests, duration_s=plan.warm_s)
        )
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.2)
        meter = Meter(proc.pid)
        samples, _ = asyncio.run(
            closed_run(
                port, make, pid=proc.pid, concurrency=HIGH, requests=plan.max_requests, duration_s=plan.profile_s
            )
        )
        usage = meter.stop()
        os.kill(proc.pid, signal.SIGUSR2)
        written = _wait_for_file(profile_path, proc)
    finally:
        stop(proc)
    ok = [s for s in samples if s.outcome == "200"]
    requests = len(samples) + HIGH  # and the run's opening requests, one per connection
    found: dict[str, Any] = {
        "command": ["python", "-c", "<perf.heads_bench.PROFILER>", str(profile_path), clock],
        "env": dict(service.env),
        "ready_after_s": ready_after,
        "run": {
            "concurrency": HIGH,
            "requests": len(samples),
            "outcomes": dict(Counter(s.outcome for s in samples)),
            "throughput_per_s": len(ok) / usage.wall_s,
            "latency_ms": ms([s.service_s for s in ok]),
            "profiled_requests": requests,
            "process_core_ms_per_request": usage.service_cpu_s / requests * 1e3,
        },
    }
    if not written:
        say(f"{name} wrote no profile: skipped")
        return {**found, "skipped": "no profile was written"}
    found.update(analyse_profile(profile_path, requests, clock))
    found["profile_file"] = str(profile_path)
    top = found["by_area"][0]
    say(
        f"{clock}-clock profile: {found['us_per_request']:.0f} us per request on the main thread; process "
        f"{found['run']['process_core_ms_per_request']:.2f} core-ms per request under the profiler; top area "
        f"{top['name']} ({top['share']:.0%})"
    )
    return found


def profile_phase(base: Service, plan: Plan, logs: Path) -> dict[str, Any]:
    return {clock: profile_run(base, clock, plan, logs) for clock in CLOCKS}


# --- the load client's headroom -----------------------------------------------------------------------


def headroom_phase(orchestrator_port: int, orchestrator_pid: int, plan: Plan, logs: Path) -> dict[str, Any]:
    """The load client at c64 against the null server (every /classify answered at once, with a 429) and
    against the orchestrator's GET /healthz."""
    port = free_port()
    null = Service("null-server", "perf.endpoint_bench", f"http://{LOOPBACK}:{port}", "/", ("--null-server", str(port)))
    make = classify_requests(ONE)

    def healthz(_: int) -> bytes:
        return HEALTHZ

    found: dict[str, Any] = {}
    with started(null, logs) as server:
        found["null_server"] = asyncio.run(_headroom_run(port, make, server.pid, plan))
    found["healthz"] = asyncio.run(_headroom_run(orchestrator_port, healthz, orchestrator_pid, plan))
    for name, run in found.items():
        say(
            f"headroom, {name}: {run['requests_per_s']:.0f} requests/s, "
            f"client {run['client_us_per_request']:.0f} us each"
        )
    return found


async def _headroom_run(port: int, make: Callable[[int], bytes], pid: int, plan: Plan) -> dict[str, Any]:
    samples, usage = await closed_run(
        port, make, pid=pid, concurrency=HIGH, requests=plan.max_requests, duration_s=plan.headroom_s
    )
    return {
        "concurrency": HIGH,
        "requests": len(samples),
        "outcomes": dict(Counter(s.outcome for s in samples)),
        "requests_per_s": len(samples) / usage.wall_s,
        "latency_ms": ms([s.service_s for s in samples]),
        "server_core_ms_per_request": usage.service_cpu_s / len(samples) * 1e3,
        "client_us_per_request": usage.client_cpu_s / len(samples) * 1e6,
    }


# --- the report ---------------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list["Target"]:
    from perf.report import Target, at_least, at_most

    v, cmp, head = results["variants"], results["comparisons"], results["headroom"]

    def info(name: str, value: float | None) -> Target:
        return Target(name, value, "-", None)

    def cpu(key: str, part: str, net: bool = False) -> float:
        return float(v[key]["c64"]["cpu"]["net_of_idle" if net else "core_ms_per_request"][part])

    fastest = max(v[key]["c64"]["throughput_per_s"] for key in v)
    found = [
        at_least("(b)/(a): two heads / one head, c64 throughput", cmp["b_over_a"]["c64_throughput_ratio"], 0.90),
        info("(c)/(a): three heads / one head, c64 throughput", cmp["c_over_a"]["c64_throughput_ratio"]),
        at_most("(b)-(a): two heads - one head, c1 p50 (ms)", cmp["b_over_a"]["c1_p50_delta_ms"], 1.0),
        info("(c)-(a): three heads - one head, c1 p50 (ms)", cmp["c_over_a"]["c1_p50_delta_ms"]),
        at_most(
            "(a) one head, c64: orchestrator + head core-ms per /classify", cpu("a", "orchestrator_plus_head"), 0.5
        ),
        info("(a) one head, c64: orchestrator core-ms per /classify", cpu("a", "orchestrator")),
        info("(a) one head, c64: head core-ms per /classify", cpu("a", "head")),
        info("(a) one head, c64: orchestrator + head, net of idle", cpu("a", "orchestrator_plus_head", net=True)),
        info("(b) two heads, c64: orchestrator + head core-ms per /classify", cpu("b", "orchestrator_plus_head")),
        info("(c) three heads, c64: orchestrator + head core-ms per /classify", cpu("c", "orchestrator_plus_head")),
        at_least(
            f"load client: null-server c64 rate / fastest /classify c64 rate ({fastest:.0f}/s)",
            head["null_server"]["requests_per_s"] / fastest,
            3.0,
        ),
        info(
            "load client: orchestrator /healthz c64 rate / fastest /classify c64 rate",
            head["healthz"]["requests_per_s"] / fastest,
        ),
    ]
    for key in v:
        found += [
            info(f"({key}) {v[key]['title']}: c1 p50 (ms)", v[key]["c1"]["latency_ms"]["p50"]),
            info(f"({key}) {v[key]['title']}: c1 p99 (ms)", v[key]["c1"]["latency_ms"]["p99"]),
            info(f"({key}) {v[key]['title']}: c64 requests/s", v[key]["c64"]["throughput_per_s"]),
            info(f"({key}) {v[key]['title']}: c64 p50 (ms)", v[key]["c64"]["latency_ms"]["p50"]),
            info(f"({key}) {v[key]['title']}: c64 p99 (ms)", v[key]["c64"]["latency_ms"]["p99"]),
        ]
    return found


def _as_target(found: dict[str, Any]) -> "Target":
    from perf.report import Target

    return Target(**found)


def _threads(by_thread: dict[str, float], top: int = 5) -> str:
    shown = [f"{name} {value:.3f}" for name, value in list(by_thread.items())[:top] if value > 0]
    return ", ".join(shown) or "-"


def markdown(report: dict[str, Any]) -> str:
    from perf.report import num, run_line, targets_table

    results, plan = report["results"], report["settings"]["plan"]
    v, cmp, prof, head = results["variants"], results["comparisons"], results["profile"], results["headroom"]
    idle = results["idle"]["cores"]
    lines = [
        f"# Several heads on one /classify ({plan['mode']} mode)",
        "",
        f"{run_line(report, plan['xla'])} "
        f"One text per request; {plan['rounds']} round(s), each rotating which variant goes first; runs of "
        f"{plan['c1_s']:g} s at c1 and {plan['c64_s']:g} s at c{HIGH}. Compare inside one run, not across runs: "
        "the machine is shared.",
        "",
        "## Targets",
        "",
        *targets_table([_as_target(t) for t in results["targets"]]),
        "",
        "## The variants",
        "",
        "Latencies from send, over every round's requests; throughput: the median over rounds. CPU: utime + "
        "stime from /proc/<pid>/stat (all threads, 10 ms ticks) over each c64 run, divided by its requests "
        f"(its {HIGH} opening requests included), pooled over rounds; idle: orchestrator "
        f"{idle['orchestrator']:.3f}, head {idle['head']:.3f}, embedding {idle['embedding']:.3f} cores.",
        "",
        "| variant | heads | c1 p50 ms | c1 p99 ms | c64 req/s | c64 p50 ms | c64 p99 ms | orchestrator core-ms | "
        "head core-ms | orch + head | embedding core-ms | client core-ms | requests per embedding call | "
        "head calls per embedding call | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| ({key}) {x['title']} | {', '.join(x['heads'])} | {num(x['c1']['latency_ms']['p50'])} | "
            f"{num(x['c1']['latency_ms']['p99'])} | {x['c64']['throughput_per_s']:.1f} | "
            f"{num(x['c64']['latency_ms']['p50'])} | {num(x['c64']['latency_ms']['p99'])} | "
            f"{x['c64']['cpu']['core_ms_per_request']['orchestrator']:.3f} | "
            f"{x['c64']['cpu']['core_ms_per_request']['head']:.3f} | "
            f"{x['c64']['cpu']['core_ms_per_request']['orchestrator_plus_head']:.3f} | "
            f"{x['c64']['cpu']['core_ms_per_request']['embedding']:.2f} | "
            f"{x['c64']['cpu']['core_ms_per_request']['client']:.3f} | "
            f"{x['c64']['cpu']['hop_calls']['requests_per_embedding_call']:.1f} | "
            f"{x['c64']['cpu']['hop_calls']['head_calls_per_embedding_call']:.2f} | "
            f"{x['c1']['errors'] + x['c64']['errors']} |"
            for key, x in v.items()
        ),
        "",
        "Against (a), per round (c64 throughput ratio; c1 p50 delta in ms):",
        "",
        "| | ratio, all rounds | per round | c1 p50 delta ms | per round | c1 p99 delta ms |",
        "|---|---:|---|---:|---|---:|",
        *(
            f"| ({key[0]})/(a) | {c['c64_throughput_ratio']:.3f} | "
            f"{', '.join(f'{r:.3f}' for r in c['c64_throughput_ratio_per_round'])} | {c['c1_p50_delta_ms']:+.2f} | "
            f"{', '.join(f'{d:+.2f}' for d in c['c1_p50_delta_ms_per_round'])} | {c['c1_p99_delta_ms']:+.2f} |"
            for key, c in cmp.items()
            if key.endswith("_over_a")
        ),
        "",
        "CPU by thread name at c64, core-ms per /classify (the top five; *python* is the main thread, the "
        "event loop, and any thread Python started: they keep its name; *event_engine* and the like are gRPC's "
        "C threads):",
        "",
        "| variant | orchestrator | head |",
        "|---|---|---|",
        *(
            f"| ({key}) | {_threads(x['c64']['cpu']['by_thread']['orchestrator'])} | "
            f"{_threads(x['c64']['cpu']['by_thread']['head'])} |"
            for key, x in v.items()
        ),
        "",
        "At c1 (no coalescing: every request its own embedding call and Predicts), core-ms per /classify: "
        + "; ".join(
            f"({key}) orchestrator {x['c1']['cpu']['core_ms_per_request']['orchestrator']:.2f}, "
            f"head {x['c1']['cpu']['core_ms_per_request']['head']:.2f}"
            for key, x in v.items()
        )
        + ".",
        "",
        *_profile_lines(prof, v),
        "## The load client's headroom",
        "",
        f"Closed loop c{HIGH}, the same client. The null server answers every /classify at once (429), with no "
        "HTTP framework; /healthz goes through the orchestrator's whole middleware stack.",
        "",
        "| endpoint | requests/s | p50 ms | server core-ms per request | client us per request |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {run['requests_per_s']:.0f} | {num(run['latency_ms']['p50'])} | "
            f"{run['server_core_ms_per_request']:.3f} | {run['client_us_per_request']:.0f} |"
            for name, run in head.items()
        ),
        "",
        "## Services and commands",
        "",
        f"Heads config (`{results['heads_config_path']}`), read by the head and the orchestrator:",
        "",
        "```",
        results["heads_config"].rstrip(),
        "```",
        "",
        "The profiled orchestrators: `python -c <perf.heads_bench.PROFILER> <profile file> cpu|wall`, with the "
        "orchestrator's settings on a port of their own; the null server: `python -m perf.endpoint_bench "
        "--null-server PORT`.",
        "",
        "| service | ready after s | idle RSS MB | loaded RSS MB | command | settings |",
        "|---|---:|---:|---:|---|---|",
        *(
            f"| {name} | {s['ready_after_s']:.1f} | {s['idle_rss_mb']:.0f} | {s['loaded_rss_mb']:.0f} | "
            f"`{' '.join(s['command'])}` | " + ", ".join(f"{k}={val}" for k, val in s["env"].items()) + " |"
            for name, s in results["services"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def _profile_lines(profiles: dict[str, Any], variants: dict[str, Any]) -> list[str]:
    head = ["## Profile of the orchestrator (c64, one head)", ""]
    done = {clock: p for clock, p in profiles.items() if "skipped" not in p}
    if not done:
        return [*head, "Skipped: " + "; ".join(f"{c}: {p['skipped']}" for c, p in profiles.items()) + ".", ""]
    unprofiled = variants["a"]["c64"]["cpu"]["core_ms_per_request"]["orchestrator"]
    main = done.get("cpu") or next(iter(done.values()))

    def functions(rows: list[dict[str, Any]]) -> list[str]:
        return [
            "| function | calls | own % | cumulative % | own us/request | cumulative us/request |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| `{r['function']}` | {r['calls']} | {r['own_share']:.1%} | {r['cumulative_share']:.1%} | "
                f"{r['own_us_per_request']:.1f} | {r['cumulative_us_per_request']:.1f} |"
                for r in rows
            ),
        ]

    areas = list(dict.fromkeys(a["name"] for p in done.values() for a in p["by_area"]))
    share = {(c, a["name"]): a for c, p in done.items() for a in p["by_area"]}
    runs = "; ".join(
        f"{clock} clock: {p['run']['profiled_requests']} requests at {p['run']['throughput_per_s']:.0f}/s, the "
        f"process {p['run']['process_core_ms_per_request']:.2f} core-ms per request, its main thread "
        f"{p['us_per_request']:.0f} us as profiled"
        for clock, p in done.items()
    )
    return [
        *head,
        "A second orchestrator with the same settings, run by `python -c PROFILER` (perf/heads_bench.py), "
        "profiled with cProfile over one c64 run after a warm-up (enabled on SIGUSR1, written on SIGUSR2), "
        "once per clock: *cpu*, the main thread's CPU time (the event loop's thread only: gRPC's own threads "
        "are not in it); *wall*, cProfile's default, in which time waiting for a core counts too. Enabled "
        "inside a callback, the profiler sees only the Python callbacks the event loop runs, not the loop "
        "itself or its waiting. "
        f"Unprofiled, the orchestrator took {unprofiled:.2f} core-ms per request; {runs}. The profiler's own "
        "cost falls on every call, so it inflates code that makes many small calls: read shares, and "
        "where the two clocks agree.",
        "",
        "Own time by area (a helper's time, such as list.append's or re's, counts for its callers):",
        "",
        "| area | " + " | ".join(f"{c} clock share | {c} us/request" for c in done) + " |",
        "|---|" + "---:|---:|" * len(done),
        *(
            f"| {a} | "
            + " | ".join(
                f"{share[(c, a)]['share']:.1%} | {share[(c, a)]['us_per_request']:.1f}" if (c, a) in share else "- | -"
                for c in done
            )
            + " |"
            for a in areas
        ),
        "",
        f"By package, {main['clock']} clock (the top 12):",
        "",
        "| package | share | us/request (profiled) |",
        "|---|---:|---:|",
        *(f"| {p['name']} | {p['share']:.1%} | {p['us_per_request']:.1f} |" for p in main["by_package"][:12]),
        "",
        f"Top {PROFILE_TOP} by cumulative time, {main['clock']} clock (*calls*: a coroutine's every resumption "
        "counts as one; cumulative time of nested middleware includes everything under it):",
        "",
        *functions(main["top_cumulative"]),
        "",
        f"Top {PROFILE_TOP} by own time, {main['clock']} clock:",
        "",
        *functions(main["top_own"]),
        "",
    ]


# --- main ---------------------------------------------------------------------------------------------


def run_bench(plan: Plan, out: Path) -> dict[str, Any]:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="heads-bench-") as work, ExitStack() as running:
        found = pipeline_services(plan, Path(work))
        services: dict[str, Started] = {}
        for service in (found.head, found.embedding, found.orchestrator):
            services[service.name] = running.enter_context(started(service, logs))
        orchestrator = services["orchestrator"]
        listed = wait_for_heads(found.orchestrator.url, THREE.heads)
        checks = check_answers(found.orchestrator.url)
        say(f"every variant answers: {checks}")
        pids = Pids({name: services[name].pid for name in ENGINES})
        idle_figures = asyncio.run(idle(pids, plan.idle_s))
        say(f"idle cores: {idle_figures['cores']}")
        runs, latencies = asyncio.run(rounds_phase(found.orchestrator.url, pids, plan))
        profile = profile_phase(found.orchestrator, plan, logs)
        headroom = headroom_phase(orchestrator.port, orchestrator.pid, plan, logs)
        config_text = found.config_path.read_text(encoding="utf-8")
        running.close()  # stops the services, recording their loaded memory
        records = {name: s.record() for name, s in services.items()}
    variants = variant_figures(runs, latencies, idle_figures["cores"])
    return {
        "services": records,
        "heads_config_path": str(found.config_path),
        "heads_config": config_text,
        "heads_listed": listed,
        "checks": checks,
        "idle": idle_figures,
        "runs": runs,
        "variants": variants,
        "comparisons": comparisons(variants, plan.rounds),
        "profile": profile,
        "headroom": headroom,
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, one round, no XLA: about a minute")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    plan = QUICK if args.quick else FULL
    started_at = datetime.now(UTC)
    out: Path = args.out or ROOT / "perf" / "results" / started_at.strftime("%Y%m%d-%H%M%S")
    results = run_bench(plan, out)
    from perf.report import run_header, write_report

    report: dict[str, Any] = {
        **run_header("perf.heads_bench", argv if argv is not None else sys.argv[1:], started_at),
        "settings": {
            "plan": asdict(plan),
            "variants": {v.key: {"title": v.title, "heads": list(v.heads), "body": v.body("<text>")} for v in VARIANTS},
            "texts": f"perf.sentences.SENTENCES ({len(SENTENCES)}), request i sends text i mod {len(SENTENCES)}",
            "high_concurrency": HIGH,
        },
        "results": results,
    }
    results["targets"] = [asdict(t) for t in targets(results)]
    write_report(out, "heads_bench", report, markdown(report))
    say(f"wrote {out}/heads_bench.json and heads_bench.md")


if __name__ == "__main__":
    main()
