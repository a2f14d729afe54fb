"""Head benchmark: one-row Predict on the head service over gRPC and REST, concurrency 1 and 16, beside the
in-process model call and a near-empty gRPC round trip (the stand-in's own Python overhead).

`python -m perf.head_bench [--requests N] [--duration-s S] [--out DIR]`: JSON and markdown reports."""

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from head_service.servable import Servable
from perf.loadgen import Call, CallFailed, Measurement, closed_loop, http_request, run_closed_loop
from perf.report import REPO, Row, at_most, machine_info, runs_table, targets_table, write_report
from stack import services
from stack.procs import LOOPBACK, free_port, running_module, server_env

LEVELS = (1, 16)
HEAD_DIR = REPO / "build" / "head"


def _progress(message: str) -> None:
    print(f"[head bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _row() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, 384)).astype(np.float32)


def in_process(requests: int) -> Measurement:
    """The model call alone: the floor any server adds its overhead to."""
    signature = Servable("head", 1, HEAD_DIR / "1").signature("serving_default")
    assert signature is not None
    inputs = {"embeddings": _row()}
    for _ in range(20):
        signature.run(inputs, [])
    latencies = []
    started = time.perf_counter()
    for _ in range(requests):
        call_started = time.perf_counter()
        signature.run(inputs, [])
        latencies.append(time.perf_counter() - call_started)
    return Measurement.of(latencies, Counter(), time.perf_counter() - started, 1)


def _grpc_call(method: Any, message: Any) -> Call:
    async def call(_: int) -> None:
        try:
            await method(message, timeout=30)
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(exc.code().name) from exc

    return call


def _grpc_calls(target: str, concurrency: int, predict: bool) -> tuple[list[Call], list[grpc.aio.Channel]]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "head"
    request.inputs["embeddings"].CopyFrom(tf.make_tensor_proto(_row()))
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "head"
    channels = [grpc.aio.insecure_channel(target) for _ in range(concurrency)]
    calls = [
        _grpc_call(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict, request)
        if predict
        else _grpc_call(model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus, status)
        for channel in channels
    ]
    return calls, channels


async def _grpc_load(target: str, concurrency: int, predict: bool, args: argparse.Namespace) -> Measurement:
    calls, channels = _grpc_calls(target, concurrency, predict)
    try:
        return await run_closed_loop(calls, requests=args.requests, duration_s=args.duration_s)
    finally:
        for channel in channels:
            await channel.close()


def bench_server(args: argparse.Namespace) -> list[Row]:
    grpc_port, rest_port = free_port(), free_port()
    service = services.head(grpc_port, rest_port, HEAD_DIR)
    target = f"{LOOPBACK}:{grpc_port}"
    body = json.dumps({"instances": _row().tolist()}).encode()
    predict_http = http_request("POST", "/v1/models/head:predict", body)
    rows = []
    with running_module(service.module, service.args, server_env(service.env), service.ready_url):
        rows.append(Row("gRPC GetModelStatus c1", asyncio.run(_grpc_load(target, 1, False, args))))
        _progress(f"{rows[-1].name}: p50 {rows[-1].measurement.p50_ms:.3f} ms")
        for level in LEVELS:
            rows.append(Row(f"gRPC Predict c{level}", asyncio.run(_grpc_load(target, level, True, args))))
            _progress(f"{rows[-1].name}: p50 {rows[-1].measurement.p50_ms:.3f} ms")
        for level in LEVELS:
            measurement = asyncio.run(
                closed_loop(
                    LOOPBACK,
                    rest_port,
                    lambda _: predict_http,
                    concurrency=level,
                    requests=args.requests,
                    duration_s=args.duration_s,
                )
            )
            rows.append(Row(f"REST predict c{level}", measurement))
            _progress(f"{rows[-1].name}: p50 {rows[-1].measurement.p50_ms:.3f} ms")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000, help="calls per level")
    parser.add_argument("--duration-s", type=float, default=30.0, help="time cap per level")
    parser.add_argument("--out", type=Path, help="output folder (default perf/results/<UTC timestamp>/)")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    out: Path = args.out or REPO / "perf" / "results" / started.strftime("%Y%m%d-%H%M%S")
    rows = [Row("in-process model call", in_process(args.requests))]
    _progress(f"in-process: p50 {rows[0].measurement.p50_ms:.3f} ms")
    rows += bench_server(args)
    by_name = {r.name: r.measurement for r in rows}
    goals = [at_most("gRPC Predict c1 p50 (ms)", by_name["gRPC Predict c1"].p50_ms, 2.0)]
    report = {
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine_info("CPU"),
        "settings": {"requests": args.requests, "duration_s": args.duration_s, "levels": LEVELS},
        "results": {"rows": [asdict(r) for r in rows], "targets": [asdict(t) for t in goals]},
    }
    lines = [
        f"# Head benchmark, {report['started_utc']}",
        "",
        *runs_table(rows, "One 384-float row per call. Latencies in ms."),
        "",
        "## Targets",
        "",
        *targets_table(goals),
    ]
    write_report(out, "head_bench", report, "\n".join(lines) + "\n")
    _progress(f"wrote {out}/head_bench.json and head_bench.md")


if __name__ == "__main__":
    main()
