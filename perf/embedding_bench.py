"""Embedding benchmark: encoder ceilings (in-process, FLOPs), the service, a naive server, the load client.

`python -m perf.embedding_bench [--requests N] [--duration-s S] [--out DIR]`: JSON and markdown reports."""

import argparse
import asyncio
import itertools
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedding_service.buckets import Buckets
from embedding_service.encoder import TFEncoder
from embedding_service.settings import EmbeddingSettings
from embedding_service.tokenizer import Tokenizer
from models.manifest import TOKENIZER_DIR, EncoderManifest
from perf.flops import MATMUL_SIZE, EncoderShape, flop_ceiling, matmul_gflops
from perf.loadgen import MakeRequest, Measurement, closed_loop, http_request
from perf.report import REPO, Row, machine_info, markdown, num, targets, write_report
from perf.sentences import SENTENCES, distinct_batches
from stack import services
from stack.procs import LOOPBACK, free_port, running_module, server_env

LEVELS = (1, 16, 64)
HEALTHZ_CONCURRENCY = 64


@dataclass(frozen=True)
class InProcess:
    rows: list[Row]  # batch 1, then the service's largest batch
    batch: int  # that largest batch
    token_lengths: list[int]
    device: str


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _summary(row: Row) -> str:
    m = row.measurement
    latency = f"p50 {num(m.p50_ms)} ms, p99 {num(m.p99_ms)} ms"
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


def _time_encoder(
    encoder: TFEncoder, ids: list[npt.NDArray[np.int32]], batch: int, sentences: int, duration_s: float
) -> Measurement:
    """Each distinct batch runs once untimed first, which compiles its shape."""
    batches = distinct_batches(ids, batch)
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


def bench_service(settings: EmbeddingSettings, args: argparse.Namespace) -> tuple[list[Row], list[Row]]:
    """The real service at each level, then its /healthz: (service rows, healthz rows)."""
    server = services.embedding(settings.port, settings.model_dir, log_level=settings.log_level)
    _progress(f"starting the embedding service on {server.url}")
    with running_module(server.module, server.args, server_env(server.env), server.ready_url) as waited_s:
        _progress(f"service ready after {waited_s:.0f}s")
        service = _load("service", settings.host, settings.port, _embed, LEVELS, args)
        healthz = _load("healthz", settings.host, settings.port, _healthz, (HEALTHZ_CONCURRENCY,), args)
    return service, healthz


def bench_naive(model_dir: Path, args: argparse.Namespace) -> list[Row]:
    port = free_port()
    base_url = f"http://{LOOPBACK}:{port}"
    _progress(f"starting the naive server on {base_url}")
    server_args = ["--port", str(port), "--model-dir", str(model_dir)]
    with running_module("perf.naive_server", server_args, server_env({}), f"{base_url}/readyz") as waited_s:
        _progress(f"naive server ready after {waited_s:.0f}s")
        return _load("naive", LOOPBACK, port, _embed, LEVELS, args)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="requests (sentences in-process) per level")
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
            "flops": flop_ceiling(
                shape,
                gflops,
                in_process.token_lengths,
                in_process.batch,
                in_process.rows[-1].measurement.throughput_per_s,
                buckets,
            ),
            "targets": [asdict(t) for t in goals],
        },
    }
    write_report(out, "embedding_bench", report, markdown(report, rows, goals))
    _progress(f"wrote {out}/embedding_bench.json and embedding_bench.md")


if __name__ == "__main__":
    main()
