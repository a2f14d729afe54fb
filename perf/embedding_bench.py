"""Embedding benchmark: encoder ceilings (in-process, FLOPs), the service, a naive server, the load client.

`python -m perf.embedding_bench [--requests N] [--duration-s S] [--out DIR]`: JSON and markdown reports."""

import argparse
import asyncio
import importlib.metadata
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from embedding_service.buckets import Buckets
from embedding_service.encoder import TFEncoder
from embedding_service.settings import EmbeddingSettings
from embedding_service.tokenizer import Tokenizer
from models.manifest import TOKENIZER_DIR, EncoderManifest
from perf.loadgen import MakeRequest, Measurement, closed_loop, http_request
from perf.procs import LOOPBACK, free_port, running_module

SENTENCES = (
    "The river flooded the lower fields after three days of heavy autumn rain.",
    "She replaced the laptop battery herself and saved almost a hundred dollars.",
    "Our team shipped the new billing dashboard two weeks ahead of schedule.",
    "Honeybees communicate the location of flowers to each other by dancing.",
    "The central bank raised interest rates by a quarter of a percentage point.",
    "He forgot his umbrella on the train again this morning.",
    "Fresh basil, ripe tomatoes and good olive oil make a simple summer salad.",
    "The telescope captured faint light from a galaxy billions of years old.",
    "Please restart the router if the wireless connection keeps dropping out.",
    "The museum reopened its ancient Egypt wing after a long renovation.",
    "Marathon runners often struggle most between the thirtieth and thirty-fifth kilometre.",
    "A small bakery on the corner sells the best croissants in town.",
    "The committee postponed its vote until more safety data becomes available.",
    "Children learn languages faster when they hear them spoken at home every day.",
    "Volcanic ash grounded hundreds of flights across northern Europe for a week.",
    "The database migration failed because an index was missing on the orders table.",
    "My grandmother still writes letters by hand to her friends abroad.",
    "Electric buses are quieter and cheaper to run than their diesel predecessors.",
    "The orchestra rehearsed the symphony's final movement late into the night.",
    "Sea turtles return to the same beach where they hatched to lay eggs.",
    "A sudden frost damaged most of the vineyard's grapes before the harvest.",
    "The startup raised its first round of funding from two angel investors.",
    "Regular stretching can reduce back pain for people who sit all day.",
    "Thick fog delayed the ferry crossing for more than two hours.",
    "The novel follows three generations of a family living in coastal Maine.",
    "Customers complained that the updated mobile app drains their phone batteries quickly.",
    "Solar panels on the school roof now cover most of its electricity needs.",
    "The referee stopped the match when lightning appeared over the stadium.",
    "Our neighbour's dog barks at every delivery van that passes the house.",
    "Researchers found microplastics in snow samples taken from remote mountain peaks.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Train tickets are cheaper if you book them at least a month in advance.",
    "The city council approved a new bicycle lane along the main avenue.",
    "A cracked pipe under the kitchen sink slowly flooded the basement.",
    "Quantum computers could one day break encryption schemes that protect online banking.",
    "The hikers reached the summit just before the clouds rolled in.",
    "Many small farms now sell their vegetables directly to customers through weekly boxes.",
    "The printer on the third floor has been jammed since Monday.",
    "Her documentary about urban foxes won an award at the film festival.",
    "Inflation eased slightly last month as fuel and food prices fell.",
    "The software update fixes a bug that caused occasional crashes on startup.",
    "Penguins huddle together in tight groups to survive the Antarctic winter.",
    "The library extended its opening hours during the exam period.",
    "A well-written error message tells the user what went wrong and how to fix it.",
    "Wildfires spread quickly through the dry forest after weeks without rain.",
    "The chess champion defended her title in a tense final game.",
    "Drinking enough water helps the body regulate its temperature on hot days.",
    "The warehouse robots sort thousands of parcels every hour without rest.",
    "He learned to play the guitar by watching videos online.",
    "The bridge will be closed to traffic for repairs over the holiday weekend.",
    "Scientists sequenced the genome of a rare orchid found only on one island.",
    "Our quarterly report shows steady growth in subscriptions across all regions.",
    "The old lighthouse keeper kept a detailed log of every passing ship.",
    "Noise-cancelling headphones make long flights far more bearable for many travellers.",
    "The kitten fell asleep in a cardboard box next to the radiator.",
    "Local elections saw the highest turnout in more than twenty years.",
    "The compiler rejected the program because two functions shared the same name.",
    "Coral reefs are bleaching as ocean temperatures keep rising year after year.",
    "She painted the fence bright blue to match the front door.",
    "Public transport was free for one day to celebrate the new metro line.",
    "The surgeon explained the risks of the operation in plain language.",
    "Autumn leaves blocked the gutters and caused water to overflow the roof.",
    "The language model summarised the long contract into five clear bullet points.",
    "A quiet walk in the park is sometimes the best cure for a headache.",
)
LEVELS = (1, 16, 64)
HEALTHZ_CONCURRENCY = 64
MATMUL_SIZE = 2048
LIBRARIES = ("tensorflow", "transformers", "tokenizers", "numpy", "fastapi", "uvicorn", "httpx", "pydantic")
REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    name: str
    measurement: Measurement


@dataclass(frozen=True)
class InProcess:
    rows: list[Row]  # batch 1, then the service's largest batch
    batch: int  # that largest batch
    token_lengths: list[int]
    device: str


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    goal: str
    met: bool | None  # None: informational, or not measurable


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _summary(row: Row) -> str:
    m = row.measurement
    latency = f"p50 {_num(m.p50_ms)} ms, p99 {_num(m.p99_ms)} ms"
    return f"{row.name}: {m.throughput_per_s:.1f}/s, {latency}, {m.errors} errors"


def _time_calls(call: Callable[[], object], calls: int, duration_s: float, items_per_call: int) -> Measurement:
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(calls):
        if time.perf_counter() - started >= duration_s:
            break
        call_started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - call_started)
    return Measurement.of(latencies, Counter(), time.perf_counter() - started, items_per_call)


def _distinct_batches(items: Sequence[T], batch: int) -> list[list[T]]:
    """Consecutive batches of `batch` items, cycling through `items`, until they would repeat."""
    cycled = itertools.cycle(items)
    return [list(itertools.islice(cycled, batch)) for _ in range(len(items) // math.gcd(len(items), batch))]


def _time_encoder(
    encoder: TFEncoder, ids: list[npt.NDArray[np.int32]], batch: int, sentences: int, duration_s: float
) -> Measurement:
    """Each distinct batch runs once untimed first, which compiles its shape."""
    batches = _distinct_batches(ids, batch)
    for texts in batches:
        encoder(texts)
    cycled = itertools.cycle(batches)
    return _time_calls(lambda: encoder(next(cycled)), math.ceil(sentences / batch), duration_s, batch)


def measure_in_process(settings: EmbeddingSettings, sentences: int, duration_s: float) -> InProcess:
    """The ceiling: the encoder loaded as the service loads it, fed tokenized batches, no HTTP or queue."""
    manifest = EncoderManifest.read(settings.model_dir)
    buckets = Buckets.default(settings.max_batch_size, manifest.max_seq_length)
    encoder = TFEncoder(settings.model_dir, buckets, xla=settings.xla, mixed_precision=settings.mixed_precision)
    tokenizer = Tokenizer(settings.model_dir / TOKENIZER_DIR, manifest.max_seq_length)
    ids = [t.ids for t in tokenizer(list(SENTENCES))]
    rows = []
    for batch in (1, settings.max_batch_size):
        rows.append(Row(f"in-process batch {batch}", _time_encoder(encoder, ids, batch, sentences, duration_s)))
        _progress(_summary(rows[-1]))
    return InProcess(rows, settings.max_batch_size, [len(i) for i in ids], encoder.device)


def matmul_gflops(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """The machine's fp32 matmul rate through TensorFlow: best of `repeats` square matmuls."""
    a = tf.random.uniform((size, size), dtype=tf.float32)
    b = tf.random.uniform((size, size), dtype=tf.float32)
    best = math.inf
    for _ in range(repeats + 1):  # the first call warms up the kernels
        started = time.perf_counter()
        tf.matmul(a, b)[0, 0].numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


@dataclass(frozen=True)
class EncoderShape:
    hidden: int
    intermediate: int
    layers: int

    @classmethod
    def read(cls, manifest: EncoderManifest) -> "EncoderShape":
        """From the source checkpoint's config.json, which the manifest names."""
        config = json.loads((Path(manifest.source) / "config.json").read_text(encoding="utf-8"))
        return cls(config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"])

    def flops_per_sentence(self, tokens: float) -> float:
        """Matmul FLOPs of the layers: Q, K, V, output and FFN projections, plus QK^T and attention x V."""
        h, i = self.hidden, self.intermediate
        return self.layers * tokens * (2 * (4 * h * h + 2 * h * i) + 2 * 2 * tokens * h)


def _batch_padded_tokens(lengths: list[int], batch: int, buckets: Buckets) -> float:
    """Sequence length per sentence as the in-process batches ran, each padded to its longest's bucket."""
    return float(np.mean([buckets.seq_length(max(b)) for b in _distinct_batches(lengths, batch)]))


def flop_ceiling(shape: EncoderShape, gflops: float, in_process: InProcess, buckets: Buckets) -> dict[str, Any]:
    """Sentences/s the matmul rate allows at three sequence lengths, and the in-process share of that."""
    mean_tokens = float(np.mean(in_process.token_lengths))
    lengths = {
        "unpadded": mean_tokens,
        "mean padded to its bucket": buckets.seq_length(math.ceil(mean_tokens)),
        f"as batch {in_process.batch} ran (padded to each batch's longest)": _batch_padded_tokens(
            in_process.token_lengths, in_process.batch, buckets
        ),
    }
    ceiling = in_process.rows[-1].measurement.throughput_per_s
    result: dict[str, Any] = {"matmul_gflops": gflops, "model": asdict(shape), "lengths": {}}
    for kind, tokens in lengths.items():
        flops = shape.flops_per_sentence(tokens)
        bound = gflops * 1e9 / flops
        result["lengths"][kind] = {
            "tokens": tokens,
            "gflop_per_sentence": flops / 1e9,
            "bound_sentences_per_s": bound,
            "in_process_fraction_of_bound": ceiling / bound,
        }
    return result


EMBED_REQUESTS = tuple(
    http_request("POST", "/v1/embeddings", json.dumps({"input": sentence}).encode()) for sentence in SENTENCES
)
HEALTHZ_REQUEST = http_request("GET", "/healthz")


def _embed(index: int) -> bytes:
    return EMBED_REQUESTS[index % len(EMBED_REQUESTS)]


def _healthz(_: int) -> bytes:
    return HEALTHZ_REQUEST


def _load(
    system: str, host: str, port: int, make: MakeRequest, levels: Sequence[int], args: argparse.Namespace
) -> list[Row]:
    rows = []
    for concurrency in levels:
        measurement = asyncio.run(
            closed_loop(host, port, make, concurrency=concurrency, requests=args.requests, duration_s=args.duration_s)
        )
        rows.append(Row(f"{system} c{concurrency}", measurement))
        _progress(_summary(rows[-1]))
    return rows


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    return {"TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1", **os.environ, **extra}


def bench_service(settings: EmbeddingSettings, args: argparse.Namespace) -> tuple[list[Row], list[Row]]:
    """The real service at each level, then its /healthz: (service rows, healthz rows)."""
    env = _server_env(
        {
            "EMBEDDING_HOST": settings.host,
            "EMBEDDING_PORT": str(settings.port),
            "EMBEDDING_LOG_LEVEL": settings.log_level,
            "EMBEDDING_MODEL_DIR": str(settings.model_dir),
        }
    )
    base_url = f"http://{settings.host}:{settings.port}"
    _progress(f"starting the embedding service on {base_url}")
    with running_module("embedding_service", [], env, f"{base_url}/readyz") as waited_s:
        _progress(f"service ready after {waited_s:.0f}s")
        service = _load("service", settings.host, settings.port, _embed, LEVELS, args)
        healthz = _load("healthz", settings.host, settings.port, _healthz, (HEALTHZ_CONCURRENCY,), args)
    return service, healthz


def bench_naive(model_dir: Path, args: argparse.Namespace) -> list[Row]:
    port = free_port()
    base_url = f"http://{LOOPBACK}:{port}"
    _progress(f"starting the naive server on {base_url}")
    server_args = ["--port", str(port), "--model-dir", str(model_dir)]
    with running_module("perf.naive_server", server_args, _server_env({}), f"{base_url}/readyz") as waited_s:
        _progress(f"naive server ready after {waited_s:.0f}s")
        return _load("naive", LOOPBACK, port, _embed, LEVELS, args)


def _at_least(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f">= {goal}", None if value is None else value >= goal)


def _at_most(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f"<= {goal}", None if value is None else value <= goal)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def targets(rows: dict[str, Measurement], ceiling_row: str) -> list[Target]:
    service = rows["service c64"].throughput_per_s
    c1, b1 = rows["service c1"].p50_ms, rows["in-process batch 1"].p50_ms
    ceiling = rows[ceiling_row].throughput_per_s
    return [
        _at_least(f"service c64 / {ceiling_row} throughput", _ratio(service, ceiling), 0.85),
        _at_least("service c64 / naive c64 throughput", _ratio(service, rows["naive c64"].throughput_per_s), 2.5),
        _at_most("service c1 p50 - in-process batch 1 p50 (ms)", None if c1 is None or b1 is None else c1 - b1, 2.0),
        Target(
            "healthz c64 / service c64 throughput (load-generator headroom)",
            _ratio(rows["healthz c64"].throughput_per_s, service),
            "several x",
            None,
        ),
    ]


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "tensorflow_device": device,
        "tensorflow": tf.__version__,
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
    }


_MET = {None: "-", True: "yes", False: "NO"}


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _runs_table(rows: list[Row]) -> list[str]:
    return [
        "| run | throughput /s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r.name} | {r.measurement.throughput_per_s:.1f} | {_num(r.measurement.p50_ms)} | "
            f"{_num(r.measurement.p99_ms)} | {r.measurement.errors} |"
            for r in rows
        ),
        "",
        "Throughput: sentences/s in-process, requests/s (one sentence each) over HTTP. "
        "In-process latency is per encoder call (a whole batch).",
    ]


def _targets_table(goals: list[Target]) -> list[str]:
    return [
        "| target | value | goal | met |",
        "|---|---:|---:|---|",
        *(f"| {t.name} | {_num(t.value)} | {t.goal} | {_MET[t.met]} |" for t in goals),
    ]


def _flops_table(flops: dict[str, Any]) -> list[str]:
    lines = [
        f"FLOP ceiling: fp32 matmul at {flops['matmul_gflops']:.1f} GFLOP/s ({MATMUL_SIZE}x{MATMUL_SIZE}, "
        "best of 5) over the encoder's matmul FLOPs per sentence.",
        "",
        "| sequence length | tokens | GFLOP/sentence | bound sentences/s | in-process fraction of bound |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, row in flops["lengths"].items():
        lines.append(
            f"| {kind} | {row['tokens']:.1f} | {row['gflop_per_sentence']:.4f} | "
            f"{row['bound_sentences_per_s']:.0f} | {row['in_process_fraction_of_bound']:.3f} |"
        )
    return lines


def markdown(report: dict[str, Any], rows: list[Row], goals: list[Target]) -> str:
    machine, bench = report["machine"], report["settings"]["bench"]
    dirty = " (with uncommitted changes)" if machine["git_dirty"] else ""
    lines = [
        f"# Embedding benchmark, {report['started_utc']}",
        "",
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, TensorFlow {machine['tensorflow']} on "
        f"{machine['tensorflow_device']}, commit {machine['git_commit'][:12]}{dirty}. "
        f"Up to {bench['requests']} requests and {bench['duration_s']:.0f}s per level, on loopback.",
        "",
        *_runs_table(rows),
        "",
        "## Targets",
        "",
        *_targets_table(goals),
        "",
        *_flops_table(report["results"]["flops"]),
    ]
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=600, help="requests (sentences in-process) per level")
    parser.add_argument("--duration-s", type=float, default=60.0, help="time cap per level")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    out: Path = args.out or REPO / "perf" / "results" / started.strftime("%Y%m%d-%H%M%S")
    settings = EmbeddingSettings(host=LOOPBACK, log_level="warning")
    manifest = EncoderManifest.read(settings.model_dir)
    shape = EncoderShape.read(manifest)
    _progress(f"timing fp32 matmul ({MATMUL_SIZE}x{MATMUL_SIZE})")
    gflops = matmul_gflops()
    _progress(f"matmul: {gflops:.1f} GFLOP/s; loading and warming the in-process encoder")
    in_process = measure_in_process(settings, args.requests, args.duration_s)
    model_dir = settings.model_dir.resolve()
    service_settings = settings.model_copy(update={"port": free_port(), "model_dir": model_dir})
    service, healthz = bench_service(service_settings, args)
    rows = [*in_process.rows, *service, *bench_naive(service_settings.model_dir, args), *healthz]
    buckets = Buckets.default(settings.max_batch_size, manifest.max_seq_length)
    goals = targets({r.name: r.measurement for r in rows}, in_process.rows[-1].name)
    report = {
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine_info(in_process.device),
        "settings": {
            "bench": {
                "requests": args.requests,
                "duration_s": args.duration_s,
                "levels": LEVELS,
                "healthz_concurrency": HEALTHZ_CONCURRENCY,
                "sentences": len(SENTENCES),
            },
            "service": service_settings.model_dump(mode="json"),
        },
        "results": {
            "rows": [asdict(r) for r in rows],
            "flops": flop_ceiling(shape, gflops, in_process, buckets),
            "targets": [asdict(t) for t in goals],
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "embedding_bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "embedding_bench.md").write_text(markdown(report, rows, goals), encoding="utf-8")
    _progress(f"wrote {out}/embedding_bench.json and embedding_bench.md")


if __name__ == "__main__":
    main()
