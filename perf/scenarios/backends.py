"""The embedding service's encoder backends and precisions side by side, served and in process, in one run,
against the FLOP bound of each precision and, given `--infinity FILE`, against Infinity.

A variant is one of our stacks: a label and the embedding service's settings (EMBEDDING_* by lower-case
name), always with the embedding cache off and log level warning. `today`: TensorFlow at fp32, XLA on (the
build/xla-cache compile cache), group window 0 (batches in arrival order: the old path); `openvino`:
OpenVINO at fp32, every other setting at its default (every core, group window 512); `openvino-1-thread`:
as openvino on one encoder thread; `openvino-bf16`, `openvino-int8`: as openvino at bf16 and at int8
(build/encoder/int8, which the run builds first as `make models-int8` does where it is missing or was
quantized from another export: minutes); `openvino-auto`: every setting at its default, precision `auto`
included, with no memo of an earlier start (EMBEDDING_PRECISION_MEMO_DIR empty), so that every start
measures fp32 against bf16 before it is ready. The precisions are compared on single_c64, batch32_c16 and
mixed_c64 (issue 23's three workloads).

1. Served: each variant's stack alone on the machine, one after the other, then Infinity's; its time to
   ready and, for ours, the runtime GET /v1/models reports. Each workload is a closed loop after an
   unrecorded warm-up run of its own: single_c1/c16/c64 (one short text per request at c1, c16, c64),
   batch32_c16 (32 short texts per request at c16), mixed_c64 (one text per request at c64, every fourth
   request a long one). Short texts are one sentence, long ones nine (about 130 tokens), each with a
   counter: nothing sent could be cached. Per run: rates, latency from send, the server's CPU and, for ours,
   the padding efficiency (the deltas of embedding_tokens_total over embedding_padded_tokens_total).
2. The load client's headroom: single_c64's requests at c64 against the null server.
3. In process, once the stacks have stopped: each variant's encoder loaded from its settings as the service
   loads it (max batch size 32), 2,048 short texts timed at batch 1 and 32 in arrival order, and at 32
   sorted by length first (the batches length grouping forms); no HTTP, no queue. Beside each, the FLOP
   bound (perf.ceiling): the matmul rate of the variant's precision, measured here (fp32's through
   TensorFlow; bf16's and int8's through OpenVINO, a square matmul compiled at bf16 and one in NNCF's int8
   pattern; each the best of the plan's matmul_repeats, all three reported), over the encoder's matmul
   FLOPs per text, at the texts' real lengths and at the lengths each batch was padded to.

Infinity: FILE is JSON {"command": [...], "env": {...}, "model": "<id>", "ready_path": "/models"}, the
command holding a literal `{port}` and becoming the server (exec: its PID is the server's); it gets the
same workloads on POST /embeddings. For instance Infinity 0.0.78 on ONNX Runtime at fp32 (`--engine optimum
--device cpu --pooling-method mean`), the same checkpoint from disk with HF_HUB_OFFLINE=1, started by a
script that takes the port: {"command": ["/tmp/infinity-work/start-infinity.sh", "{port}"], "env":
{"HF_HUB_OFFLINE": "1"}, "model": "all-MiniLM-L6-v2", "ready_path": "/models"}

The quick plan exists for the test, its figures mean nothing: short runs; openvino and openvino-auto only
(no XLA compiles, no int8 build)."""

import argparse
import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from embedding_service.encoder import Encoder, IntArray
from embedding_service.int8_manifest import INT8_DIR, Int8Manifest
from embedding_service.manifest import MANIFEST_FILE, TOKENIZER_DIR, EncoderManifest
from embedding_service.settings import EmbeddingSettings, chosen_encoder
from embedding_service.tokenizer import Tokenizer
from perf.ceiling import EncoderShape, flop_bounds, matmul_gflops, openvino_matmul_gflops
from perf.harness.client import MakeRequest, http_request, one_hop
from perf.harness.headroom import headroom, headroom_targets
from perf.harness.load import closed_calls, closed_run
from perf.harness.meters import counter
from perf.harness.progress import say
from perf.harness.report import Column, Target, at_least, at_most, dig, info, num, side_by_side, table
from perf.harness.scenario import Context, Scenario
from perf.harness.stacks import ENCODER_DIR, Started, embedding, outside_server
from perf.harness.stats import figures, quotient, said
from perf.sentences import distinct_batches, new_texts
from stack.services import DEFAULT_HEADS_ROOT, ROOT

MAX_REQUESTS = 100_000_000  # per run: every run ends at its duration long before this
LONG_SENTENCES, MIXED_EVERY = 9, 4  # a long text's sentences (about 130 tokens); mixed_c64: every 4th one long
COMMON = {"cache_bytes": "0"}  # every one of our stacks (log level warning: the harness's)
INFINITY, IN_PROCESS_TEXTS = "infinity", 2048  # Infinity's stack's key; the in-process texts
# (key, batch size, texts sorted by length first): arrival order, and the batches length grouping forms.
IN_PROCESS_RUNS = (("batch_1", 1, False), ("batch_32", 32, False), ("batch_32_by_length", 32, True))
# A precision -> this machine's matmul rate at it (GFLOP/s), the best of `repeats` square matmuls.
MATMUL_RATES: Mapping[str, Callable[..., float]] = {"fp32": matmul_gflops} | {
    precision: partial(openvino_matmul_gflops, precision) for precision in ("bf16", "int8")
}
RUNTIME_FIELDS = ("backend", "device", "precision", "encoder_threads", "tokenizer_threads", "group_window", "ready_s")
RUNTIME_CHECKED = ("backend", "encoder_threads", "group_window")  # a variant's settings the runtime must echo


@dataclass(frozen=True)
class Workload:
    concurrency: int
    texts_per_request: int = 1
    mixed: bool = False  # one text per request, three short to one long


WORKLOADS = {"single_c1": Workload(1), "single_c16": Workload(16), "single_c64": Workload(64)}
WORKLOADS |= {"batch32_c16": Workload(16, texts_per_request=32), "mixed_c64": Workload(64, mixed=True)}
ALL, PRECISION_WORKLOADS = tuple(WORKLOADS), ("single_c64", "batch32_c16", "mixed_c64")  # the precisions' ones
Goals = Mapping[str, float | None]  # workload -> the goal of a ratio on it (None: reported, no goal)
BOUND_RUN, BOUND_GOAL = "batch_32_by_length", 0.75  # each OpenVINO variant's in-process run, its fraction of the bound


@dataclass(frozen=True)
class Variant:
    """One of our stacks: a label and the embedding service's settings, served on its workloads and, where
    `bound_run` is set, timed in process against the FLOP bound of the precision its encoder runs at.
    Comparing another precision is one more of these, and its matmul rate in MATMUL_RATES."""

    title: str
    settings: Mapping[str, str]  # EMBEDDING_* by lower-case name, beside COMMON; in process too
    xla: bool = False
    workloads: tuple[str, ...] = PRECISION_WORKLOADS
    ratios: Mapping[str, Goals] = field(default_factory=dict)  # another stack -> texts/s, this one's over its
    ready_goal: float | None = None  # its time to ready, served (s)
    bound_run: str | None = BOUND_RUN  # the in-process run its FLOP-bound target reads; None: not run in process
    bound_goal: float | None = None  # that run's fraction of the bound


def each(goal: float | None) -> dict[str, float | None]:
    return dict.fromkeys(PRECISION_WORKLOADS, goal)


def precise(title: str, settings: Mapping[str, str], infinity: Goals, **more: Any) -> Variant:
    """A precision's stack: against fp32's and Infinity's (`infinity`: its goals), and its bound's goal."""
    return Variant(title, settings, ratios={"openvino": each(None), INFINITY: infinity}, bound_goal=BOUND_GOAL, **more)


FP32, TWO = {"backend": "openvino", "precision": "fp32"}, ("single_c64", "batch32_c16")
VARIANTS = {
    "today": Variant(
        "TensorFlow, XLA, batches in arrival order (the old path)",
        {"backend": "tensorflow", "precision": "fp32", "group_window": "0"},
        xla=True,
        workloads=ALL,
        bound_run="batch_32",
    ),
    "openvino": Variant(
        "OpenVINO fp32, every core, group window 512",
        FP32,
        workloads=ALL,
        ratios={"today": {"mixed_c64": 2.0}, INFINITY: each(None)},
        ready_goal=10.0,
        bound_goal=BOUND_GOAL,
    ),
    "openvino-1-thread": Variant(
        "OpenVINO fp32, one encoder thread",
        FP32 | {"encoder_threads": "1"},
        workloads=TWO,
        ratios={"openvino": dict.fromkeys(TWO)},
        bound_run=None,
    ),
    "openvino-bf16": precise("OpenVINO bf16", FP32 | {"precision": "bf16"}, each(None)),
    "openvino-int8": precise(
        "OpenVINO int8 (build/encoder/int8)", FP32 | {"precision": "int8"}, each(None) | {"batch32_c16": 2.0}
    ),
    "openvino-auto": precise(
        "the defaults (precision auto), measuring at every start",
        {"precision": "auto", "precision_memo_dir": ""},
        each(1.5),
        ready_goal=5.0,
    ),
}
PRECISIONS = ("openvino", "openvino-bf16", "openvino-int8", "openvino-auto")  # the precisions' table, in order
INFINITY_STACK = Variant("Infinity (--infinity FILE)", {}, workloads=ALL, bound_run=None)


@dataclass(frozen=True)
class Plan:
    mode: Literal["quick", "full"]
    variants: tuple[str, ...]  # served in this order (then Infinity); in process those with a bound run
    warm_s: float  # the unrecorded run before each workload, after its opening requests (0: those alone)
    run_s: float  # each recorded workload run
    headroom_s: float
    in_process_warm_s: float  # per variant and batch size, after each batch shape has run once
    in_process_s: float  # each in-process timing
    matmul_repeats: int  # square matmuls per matmul rate, the best counting: a shared machine slows some


QUICK = Plan("quick", ("openvino", "openvino-auto"), 0, 2, 1.5, 0.3, 1, 5)
FULL = Plan("full", ("today", *PRECISIONS[:1], "openvino-1-thread", *PRECISIONS[1:]), 3.0, 20.0, 4.0, 2.0, 10.0, 50)


def infinity_spec(path: str) -> dict[str, Any]:
    """--infinity FILE, read and checked."""
    found = json.loads(Path(path).read_text(encoding="utf-8"))
    if not any("{port}" in str(part) for part in found["command"]):
        raise ValueError(f"{path}: the command holds no literal {{port}}")
    return {"env": {}, "ready_path": "/models", **found}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--infinity", type=infinity_spec, metavar="FILE", help="JSON: how to start Infinity")


# --- served -------------------------------------------------------------------------------------------


class Texts(Counter[str]):
    """The run's texts, each new, counted by kind as they go so that those sent can be made again."""

    def __init__(self) -> None:
        super().__init__()
        self.made = {"short": new_texts(), "long": new_texts(LONG_SENTENCES)}

    def next(self, kind: str) -> str:
        self[kind] += 1
        return next(self.made[kind])


def requests_of(workload: Workload, texts: Texts, path: str, model: str) -> MakeRequest:
    """The workload's next request, whatever the request's number: the mix follows the order of sending."""
    sent = itertools.count(1)

    def make(_: int) -> bytes:
        inputs: str | list[str]
        if workload.texts_per_request == 1:  # one text, as a string: a long one every MIXED_EVERY when mixed
            inputs = texts.next("long" if workload.mixed and next(sent) % MIXED_EVERY == 0 else "short")
        else:
            inputs = [texts.next("short") for _ in range(workload.texts_per_request)]
        return http_request("POST", path, orjson.dumps({"model": model, "input": inputs}))

    return make


@dataclass(frozen=True)
class Endpoint:
    up: Started
    path: str  # where embeddings are posted
    model: str
    runtime: dict[str, Any] | None  # GET /v1/models' data[0].runtime: ours only


def settings_of(key: str) -> dict[str, str]:
    return {} if key == INFINITY else {**COMMON, **VARIANTS[key].settings}


@contextmanager
def serving(ctx: Context, key: str) -> Iterator[Endpoint]:
    """The variant's stack (embedding-<key>), or Infinity's, started alone and always stopped."""
    if key == INFINITY:
        spec = ctx.args.infinity
        with ctx.stacks.started(outside_server(key, spec["command"], spec["ready_path"], spec["env"])) as up:
            yield Endpoint(up, "/embeddings", spec["model"], None)
        return
    with ctx.stacks.started(embedding(f"embedding-{key}", xla=VARIANTS[key].xla, **settings_of(key))) as up:
        card = httpx.get(f"{up.url}/v1/models", timeout=10.0).json()["data"][0]
        yield Endpoint(up, "/v1/embeddings", card["id"], card["runtime"])


async def token_counts(endpoint: Endpoint) -> dict[str, float]:
    """Our encoder's tokens, real and padded (none for Infinity), on a client of its own each time."""
    metrics = {"real": "embedding_tokens_total", "padded": "embedding_padded_tokens_total"}
    async with httpx.AsyncClient(timeout=10.0) as client:
        return {k: await counter(client, endpoint.up.url, m) for k, m in metrics.items() if endpoint.runtime}


async def measured(endpoint: Endpoint, workload: Workload, texts: Texts, seconds: float) -> dict[str, Any]:
    """One closed-loop run; the token counters read around it (its opening requests included)."""
    route = one_hop(endpoint.up.port, requests_of(workload, texts, endpoint.path, endpoint.model))
    before, each_ = await token_counts(endpoint), workload.texts_per_request
    run = await closed_run(
        route, concurrency=workload.concurrency, requests=MAX_REQUESTS, duration_s=seconds, pids=[endpoint.up.pid]
    )
    tokens = {kind: count - before[kind] for kind, count in (await token_counts(endpoint)).items()}
    texts_ok = len(run.ok()) * each_
    found = figures(run, items_per_request=each_) | {"texts": texts_ok, "errors": len(run.samples) - len(run.ok())}
    found["service_core_ms_per_text"] = run.usage.service_cpu_s / texts_ok * 1e3 if texts_ok else None
    efficiency = tokens["real"] / tokens["padded"] if tokens.get("padded") else None
    return found | {"tokens": tokens or None, "padding_efficiency": efficiency}


async def stack_runs(endpoint: Endpoint, workloads: tuple[str, ...], texts: Texts, plan: Plan) -> dict[str, Any]:
    """The stack's workloads in turn, each after an unrecorded warm-up run of its own."""
    runs: dict[str, Any] = {}
    for key in workloads:
        await measured(endpoint, WORKLOADS[key], texts, plan.warm_s)
        runs[key] = found = await measured(endpoint, WORKLOADS[key], texts, plan.run_s)
        say(f"{endpoint.up.service.name}, {key}: {said(found)}, padding {num(found['padding_efficiency'], 3)}")
    return runs


# --- in process ---------------------------------------------------------------------------------------


def timed(encoder: Encoder, batches: list[list[IntArray]], size: int, plan: Plan) -> dict[str, Any]:
    """One call of each batch shape the batches pad to (XLA compiles each), a warm-up, then the timing."""
    pad = encoder.buckets
    shapes = {(pad.batch_size(len(b)), pad.seq_length(max(map(len, b)))): b for b in batches}
    for batch in shapes.values():
        encoder(batch)
    cycled = itertools.cycle(batches)

    async def call(_: int) -> tuple[str, bytes]:
        encoder(next(cycled))
        return "200", b""

    for seconds in (plan.in_process_warm_s, plan.in_process_s):  # a warm-up, then the timing
        run = asyncio.run(closed_calls([call], requests=MAX_REQUESTS, duration_s=seconds))
    found = figures(run, items_per_request=size)
    timing = {"calls": found["requests"], "texts_per_s": found["throughput_per_s"], "call_ms": found["latency_ms"]}
    return {"shapes": len(shapes), **timing}


def in_process(plan: Plan, tokenizer: Tokenizer) -> dict[str, Any]:
    """Each variant with a bound run in turn on the same tokenised short texts, OpenVINO's before TensorFlow
    runs anything in this process; then every precision's matmul rate that none of them asked for."""
    ids = [t.ids for t in tokenizer(list(itertools.islice(new_texts(), IN_PROCESS_TEXTS)))]
    by_length = sorted(ids, key=len)
    shape, rates = EncoderShape.read(EncoderManifest.read(ENCODER_DIR)), dict[str, float]()

    def rate(precision: str) -> float:  # measured when first asked for
        if precision not in rates:
            rates[precision] = MATMUL_RATES[precision](repeats=plan.matmul_repeats)
            say(f"in process: {precision} matmul {rates[precision]:.0f} GFLOP/s")
        return rates[precision]

    def timed_variant(key: str) -> dict[str, Any]:
        """The variant's encoder as the service loads it (`auto` measuring as it does), timed in each of
        IN_PROCESS_RUNS, then set beside the FLOP bound of its precision, at the texts' real lengths and
        at the lengths each batch was padded to."""
        variant, loading = VARIANTS[key], time.perf_counter()
        settings = {**variant.settings, "model_dir": ENCODER_DIR, "xla": variant.xla, "max_batch_size": 32}
        chosen = chosen_encoder(EmbeddingSettings.model_validate(settings))
        encoder = chosen.encoder
        found: dict[str, Any] = {"backend": encoder.backend, "device": encoder.device, "precision": encoder.precision}
        found |= {"threads": encoder.threads, "xla": variant.xla, "load_s": time.perf_counter() - loading}
        found["choice"] = chosen.choice.model_dump(mode="json")
        for run_key, size, sort in IN_PROCESS_RUNS:
            found[run_key] = timed(encoder, distinct_batches(by_length if sort else ids, size), size, plan)
        for run_key, size, sort in IN_PROCESS_RUNS:
            lengths, done = list(map(len, by_length if sort else ids)), found[run_key]
            bounds = flop_bounds(shape, rate(encoder.precision), lengths, size, encoder.buckets)
            for prefix, bound in (("", bounds["unpadded"]), ("padded_", bounds[f"padded as batch {size} ran"])):
                per_s = bound["bound_texts_per_s"]
                done |= {f"{prefix}mean_tokens": bound["mean_tokens"], f"{prefix}bound_texts_per_s": per_s}
                done[f"fraction_of_{prefix}bound"] = done["texts_per_s"] / per_s
            say(f"in process {key}, {run_key}: {done['texts_per_s']:.1f}/s, {done['fraction_of_bound']:.3f} of bound")
        return found

    bounded = [key for key in plan.variants if VARIANTS[key].bound_run]
    chosen = sorted(bounded, key=lambda key: VARIANTS[key].settings.get("backend") == "tensorflow")
    found = {"texts": len(ids), "mean_tokens": statistics.fmean(len(i) for i in ids), "model": asdict(shape)}
    found["variants"] = {key: timed_variant(key) for key in chosen}
    return found | {"matmul_gflops": {precision: rate(precision) for precision in MATMUL_RATES}}


def int8_built(plan: Plan) -> None:
    """build/encoder/int8, where the plan runs int8 and it is missing or was quantized from another export,
    built as `make models-int8` builds it (NNCF calibrates; the build checks every held-out text and head)."""
    if not any(VARIANTS[key].settings.get("precision") == "int8" for key in plan.variants):
        return
    built = (ENCODER_DIR / INT8_DIR / MANIFEST_FILE).is_file()
    if built and Int8Manifest.read(ENCODER_DIR).identity == EncoderManifest.read(ENCODER_DIR).identity:
        return
    say(f"building the int8 encoder in {ENCODER_DIR / INT8_DIR} (models.quantize_encoder, as make models-int8)")
    command = ["-m", "models.quantize_encoder", "--encoder", str(ENCODER_DIR), "--heads", str(DEFAULT_HEADS_ROOT)]
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True, stdout=sys.stderr)


def token_figures(tokenizer: Tokenizer, sent: Mapping[str, int]) -> dict[str, Any]:
    """The texts the stacks were sent, made again and tokenised: their lengths, special tokens included."""
    found: dict[str, Any] = {}
    for kind, sentences in (("short", 1), ("long", LONG_SENTENCES)):
        lengths = [len(t.ids) for t in tokenizer(list(itertools.islice(new_texts(sentences), sent[kind])))]
        found[kind] = {"texts": len(lengths), "mean_tokens": statistics.fmean(lengths)}
        found[kind] |= {"min_tokens": min(lengths), "max_tokens": max(lengths)}
    return found


def run(ctx: Context) -> dict[str, Any]:
    plan, spec = ctx.plan, ctx.args.infinity
    ctx.settings.update(
        variants={key: asdict(VARIANTS[key]) for key in plan.variants},
        workloads={key: asdict(w) for key, w in WORKLOADS.items()},
        texts={"long_sentences": LONG_SENTENCES, "mixed_every": MIXED_EVERY, "in_process": IN_PROCESS_TEXTS},
    )
    int8_built(plan)
    texts, stacks = Texts(), dict[str, Any]()
    for key in [*plan.variants, *([INFINITY] if spec else [])]:
        stack = VARIANTS.get(key, INFINITY_STACK)
        with serving(ctx, key) as endpoint:
            runs = asyncio.run(stack_runs(endpoint, stack.workloads, texts, plan))
        stacks[key] = {"title": stack.title, "settings": settings_of(key), "model": endpoint.model}
        stacks[key] |= {"ready_after_s": endpoint.up.ready_after_s, "runtime": endpoint.runtime, "runs": runs}
    sent = dict(texts)
    make = requests_of(WORKLOADS["single_c64"], texts, "/v1/embeddings", stacks[plan.variants[0]]["model"])
    room = headroom(ctx.stacks, make, {}, duration_s=plan.headroom_s)
    tokenizer = Tokenizer(ENCODER_DIR / TOKENIZER_DIR, EncoderManifest.read(ENCODER_DIR).max_seq_length)
    tokens, timings = token_figures(tokenizer, sent), in_process(plan, tokenizer)
    return {"infinity": spec, "stacks": stacks, "headroom": room, "tokens": tokens, "in_process": timings}


# --- the report ---------------------------------------------------------------------------------------


def over(top: Mapping[str, Any] | None, bottom: Mapping[str, Any] | None) -> float | None:
    """A run's texts/s over another's; None where either is missing."""
    return quotient(*(run["throughput_per_s"] if run else None for run in (top, bottom)))


def aimed(name: str, value: float | None, goal: float | None, at: Callable[..., Target] = at_least) -> Target:
    return info(name, value) if goal is None else at(name, value, goal)


def targets(results: dict[str, Any]) -> list[Target]:
    stacks, timings = results["stacks"], results["in_process"]["variants"]
    runs = {key: stack["runs"] for key, stack in stacks.items()}
    ours = {k: VARIANTS[k] for k in stacks if k in VARIANTS}
    every_run = [r for rs in runs.values() for r in rs.values()]
    openvino, today = runs["openvino"], runs.get("today")
    served = openvino["batch32_c16"]["throughput_per_s"] / timings["openvino"][BOUND_RUN]["texts_per_s"]
    bounds = {k: (ours[k].bound_run or "", t["precision"], ours[k].bound_goal) for k, t in timings.items()}
    return [
        at_least("mixed_c64: padding efficiency, openvino", openvino["mixed_c64"]["padding_efficiency"], 0.75),
        *([info("mixed_c64: padding efficiency, today", today["mixed_c64"]["padding_efficiency"])] if today else []),
        *(
            aimed(f"{w}: texts/s, {key} / {other}", over(runs[key].get(w), runs[other].get(w)), goal)
            for key, variant in ours.items()
            for other, goals in variant.ratios.items()
            if other in runs
            for w, goal in goals.items()
        ),
        at_least("batch32_c16: texts/s served (openvino) / in process openvino at batch 32 by length", served, 0.95),
        *(
            aimed(f"in process {k}, {r}: fraction of the {p} FLOP bound", timings[k][r]["fraction_of_bound"], goal)
            for k, (r, p, goal) in bounds.items()
        ),
        *(aimed(f"{k}: time to ready (s)", stacks[k]["ready_after_s"], v.ready_goal, at_most) for k, v in ours.items()),
        *headroom_targets(results["headroom"], max(run["requests_per_s"] for run in every_run)),
        info("non-200 answers, every recorded run of every stack", sum(run["errors"] for run in every_run)),
    ]


def precision_problems(where: str, key: str, ran: Mapping[str, Any]) -> list[str]:
    """What an encoder reports it ran at and chose, against its EMBEDDING_PRECISION: a precision set is the
    one that runs; auto's choice (fp32 or bf16) is the one that runs."""
    setting, choice = VARIANTS[key].settings.get("precision", "auto"), ran.get("choice") or {}
    runs, allowed = ran.get("precision"), {"fp32", "bf16"} if setting == "auto" else {setting}
    if choice.get("setting") == setting and choice.get("chosen") == runs and runs in allowed:
        return []
    return [f"{where}: EMBEDDING_PRECISION={setting}, chose {choice.get('chosen')}, runs {runs}"]


def checks(results: dict[str, Any]) -> list[str]:
    problems = []
    for key, stack in results["stacks"].items():
        ours, runtime, settings = key != INFINITY, stack["runtime"] or {}, stack["settings"]
        for workload, found in stack["runs"].items():
            if set(found["outcomes"]) != {"200"}:
                problems.append(f"{key}, {workload}: answered {found['outcomes']}; nothing else loads it: all 200s")
            if ours and not ((tokens := found["tokens"]) and 0 < tokens["real"] <= tokens["padded"]):
                problems.append(f"{key}, {workload}: encoder tokens {tokens}: real ones none, or more than padded")
        wrong = [name for name in RUNTIME_CHECKED if name in settings and str(runtime.get(name)) != settings[name]]
        problems += [f"{key}: runtime {name} {runtime.get(name)}, set {settings[name]}" for name in wrong]
        problems += [f"{key}: the runtime reports no ready_s"] if ours and not runtime.get("ready_s", 0) > 0 else []
        problems += precision_problems(key, key, runtime) if ours else []
    short, long = results["tokens"]["short"], results["tokens"]["long"]
    if not (10 < short["mean_tokens"] < 30 and 110 < long["mean_tokens"] < 150 and short["texts"] > long["texts"]):
        problems.append(f"texts sent: short {short}, long {long}: not the lengths or the mix meant")
    for key, timing in results["in_process"]["variants"].items():
        problems += precision_problems(f"in process {key}", key, timing)
        for run_key, _, _ in IN_PROCESS_RUNS:
            if not (done := timing[run_key])["calls"] > 0 or done["padded_mean_tokens"] < done["mean_tokens"]:
                problems.append(f"in process {key}, {run_key}: {done['calls']} calls, or padded below real tokens")
    if set(outcomes := results["headroom"]["null_server"]["outcomes"]) != {"429"}:
        problems.append(f"the null server answered {outcomes}, not only 429s")
    return problems


# A served run's figures (the served table's rows) and an in-process timing's (that table's columns): a name,
# its path, its decimals. The precisions table's columns: a header and its decimals (None: text).
SERVED_ROWS = (
    *(("texts/s", "throughput_per_s", 1), ("p50 ms", "latency_ms.p50", 1), ("p99 ms", "latency_ms.p99", 1)),
    *(("requests", "requests", 0), ("outcomes", "outcomes", 0), ("server cores", "service_cores", 1)),
    *(("server core-ms per text", "service_core_ms_per_text", 1), ("padding efficiency", "padding_efficiency", 3)),
)
IN_PROCESS_COLUMNS = (
    *(("texts/s", "texts_per_s", 1), ("call p50 ms", "call_ms.p50", 1), ("call p99 ms", "call_ms.p99", 1)),
    *(("real tokens", "mean_tokens", 1), ("padded tokens", "padded_mean_tokens", 1)),
    *(("bound texts/s", "bound_texts_per_s", 1), ("fraction of bound", "fraction_of_bound", 3)),
    ("padded bound texts/s", "padded_bound_texts_per_s", 1),
    ("fraction of padded bound", "fraction_of_padded_bound", 3),
)
SERVED_COLUMNS = (((f"{w} texts/s", 1), ("x Infinity", 2)) for w in PRECISION_WORKLOADS)
PRECISION_COLUMNS = (("stack", None), ("runs at", None), *itertools.chain(*SERVED_COLUMNS), ("in process texts/s", 1))
PRECISION_COLUMNS += (("bound texts/s", 0), ("of bound", 3), ("ready after s", 1))


def chose(choice: Mapping[str, Any]) -> str:
    """What an EMBEDDING_PRECISION chose, why, and auto's measurement behind it."""
    said, m = f"{choice['chosen']}: {choice['reason']}", choice["measurement"]
    if not m:
        return said
    when = "remembered" if choice["remembered"] else f"measured at its start in {num(choice['measured_s'])} s"
    return f"{said}; {when}: its probe batch {m['fp32_ms']} ms at fp32, {m['bf16_ms']} ms at bf16 ({m['texts']} texts)"


def precisions(stacks: Mapping[str, Any], timings: Mapping[str, Any]) -> list[str]:
    """The precisions and Infinity on issue 23's workloads, each precision in process against its own bound;
    what auto chose; the int8 build's fidelity."""
    infinity = stacks.get(INFINITY, {"runs": {}})["runs"]

    def row(key: str) -> list[Any]:
        runs, runtime = stacks[key]["runs"], stacks[key]["runtime"] or {}
        bound = timings.get(key, {}).get(BOUND_RUN, {})
        served = [v for w in PRECISION_WORKLOADS for v in (runs[w]["throughput_per_s"], over(runs[w], infinity.get(w)))]
        bounds = [bound.get(figure) for figure in ("texts_per_s", "bound_texts_per_s", "fraction_of_bound")]
        return [key, runtime.get("precision", "fp32"), *served, *bounds, stacks[key]["ready_after_s"]]

    columns = [(header, itemgetter(i), digits) for i, (header, digits) in enumerate(PRECISION_COLUMNS)]
    auto = [key for key, stack in stacks.items() if stack["settings"].get("precision") == "auto"]
    notes = [f"`{key}` chose {chose(stacks[key]['runtime']['choice'])}." for key in auto]
    if int8 := (stacks.get("openvino-int8", {}).get("runtime") or {}).get("int8"):
        heads = [
            f"{h['name']} v{h['version']} {h['fp32_accuracy']:.3f} -> {h['int8_accuracy']:.3f}" for h in int8["heads"]
        ]
        cosine, heads_said = int8["fidelity"], ", ".join(heads) or "none checked"
        notes.append(
            f"int8's build: min cosine to fp32 {cosine['min_cosine']:.4f}, mean {cosine['mean_cosine']:.4f} on "
            f"{cosine['texts']} held-out texts; heads' held-out accuracy, fp32 -> int8: {heads_said}."
        )
    return [*table(columns, [row(key) for key in (*PRECISIONS, INFINITY) if key in stacks]), "", *notes]


def served_figures(runs: Mapping[str, Any]) -> dict[str, Any]:
    """A stack's served figures by "<workload> <figure>" (no dots: side_by_side reads dotted paths)."""
    found = {f"{w} {name}": dig(runs[w], path) if w in runs else None for w in ALL for name, path, _ in SERVED_ROWS}
    return {k: ", ".join(f"{o}: {n}" for o, n in v.items()) if isinstance(v, dict) else v for k, v in found.items()}


def tables(report: dict[str, Any]) -> list[str]:
    results, plan = report["results"], report["settings"]["plan"]
    stacks, in_proc, spec = results["stacks"], results["in_process"], results["infinity"]
    short, long = results["tokens"]["short"], results["tokens"]["long"]
    infinity = f"Infinity: `{' '.join(spec['command'])}`, model `{spec['model']}`." if spec else "Infinity was not "
    infinity += "" if spec else "measured (no `--infinity FILE`): its column and its targets are left out."
    rates = ", ".join(f"{p} {rate:.0f} GFLOP/s" for p, rate in in_proc["matmul_gflops"].items())
    served = [(f"{w} {name}", f"{w} {name}", digits) for w in ALL for name, _, digits in SERVED_ROWS]
    timings = [(k, t["precision"], r, t[r]) for k, t in in_proc["variants"].items() for r, _, _ in IN_PROCESS_RUNS]
    in_process: list[Column] = [
        *((h, itemgetter(i), None) for i, h in enumerate(("variant", "precision", "batches"))),
        *((n, lambda r, p=p: dig(r[3], p), d) for n, p, d in IN_PROCESS_COLUMNS),
    ]
    runtime: list[Column] = [
        *(("stack", itemgetter(0), None), ("ready after s", lambda s: s[1]["ready_after_s"], 1)),
        *((f"runtime: {n}", lambda s, n=n: (s[1]["runtime"] or {}).get(n, "-"), None) for n in RUNTIME_FIELDS),
    ]
    return [
        "## Precisions",
        "",
        f"Served texts/s and each over Infinity's; in process, {BOUND_RUN} against the FLOP bound of the precision it "
        f"ran at. Matmul rates: {rates} (fp32 through TensorFlow, bf16 and int8 through OpenVINO).",
        "",
        *precisions(stacks, in_proc["variants"]),
        "",
        "## Served",
        "",
        "; ".join(f"`{key}`: {stack['title']}" for key, stack in stacks.items()) + f". {infinity}",
        "",
        f"Each workload {plan['run_s']:g} s after {plan['warm_s']:g} s of warm-up. Texts sent: {short['texts']:,} "
        f"short ones of {short['mean_tokens']:.1f} tokens on average ({short['min_tokens']}-{short['max_tokens']}), "
        f"{long['texts']:,} long ones of {long['mean_tokens']:.1f} ({long['min_tokens']}-{long['max_tokens']}), "
        "special tokens included. n/a: not run on that stack (padding: not ours).",
        "",
        *side_by_side(served, {key: served_figures(stack["runs"]) for key, stack in stacks.items()}),
        "",
        "## In process",
        "",
        f"{in_proc['texts']:,} short texts of {in_proc['mean_tokens']:.1f} tokens on average. Padded: TensorFlow to "
        "its buckets, OpenVINO to each batch's longest text.",
        "",
        *table(in_process, timings),
        "",
        "## Time to ready and runtime",
        "",
        "*ready after*: from the process's start to the first 200 from its ready path; *runtime*: GET /v1/models' "
        "`data[0].runtime` (its ready_s from the start of loading).",
        "",
        *table(runtime, stacks.items()),
    ]


TIMING_FIGURES = [f"{r}.{p}" for r, _, _ in IN_PROCESS_RUNS for _, p, _ in IN_PROCESS_COLUMNS]  # an in-process timing's
FIGURES = (
    *(f"stacks.{v}.runs.{w}.{p}" for v in QUICK.variants for w in VARIANTS[v].workloads for _, p, _ in SERVED_ROWS),
    *(f"stacks.{v}.{path}" for v in QUICK.variants for path in ("ready_after_s", "runtime.ready_s", "model")),
    *(f"in_process.variants.{v}.{path}" for v in QUICK.variants if VARIANTS[v].bound_run for path in TIMING_FIGURES),
    *(f"tokens.{kind}.mean_tokens" for kind in ("short", "long")),
    *(f"in_process.matmul_gflops.{precision}" for precision in MATMUL_RATES),
    *(f"stacks.openvino-auto.runtime.{path}" for path in ("precision", "choice.chosen", "choice.measurement.bf16_ms")),
    "in_process.variants.openvino-auto.choice.chosen",
    "headroom.null_server.requests_per_s",
)
TITLE = "Encoder backends, served and in process"
SCENARIO = Scenario("backends", TITLE, {"quick": QUICK, "full": FULL}, run, targets, tables, FIGURES, checks, options)
