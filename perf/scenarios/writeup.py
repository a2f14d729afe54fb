"""The write-up's own table, on this machine: schemes 1 (monolith), 2 (whole model on the head service)
and 4 (the split behind the orchestrator) on a BERT-base-shaped encoder (12 layers, hidden 768, FFN 3072,
12 heads, our tokenizer) with a fastText-style head, per-sentence latency at c1, throughput at c64, and
the FLOP bound, beside the write-up's figures (BERT-base + fastText: on a CPU, Flask 390 ms and TF Serving
292 ms per sentence; on a V100, 10.2 ms for the whole model, 7.3 + 2.8 ms split). The weights are random:
they cost the same FLOPs as trained ones, and cannot be downloaded here. The checkpoint, its export, its
heads and its whole model are built once under build/writeup/<shape>/ (a few minutes), then reused. The
quick plan runs on the models `make test` builds (the default encoder), to check the scenario, not to
measure it."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.random_checkpoint import BERT_BASE, Shape
from perf.harness.progress import say
from perf.harness.report import REPO, Target, at_least, info, num
from perf.harness.scenario import Context, Scenario
from perf.scenarios import schemes
from perf.scheme_runs import median_of, runs_of, saturation
from perf.sentences import texts
from stack.services import DEFAULT_HEAD

# The write-up's figures: per-sentence latency (ms), and the hardware they came from.
WRITEUP = (
    ("1", "Flask monolith", "CPU (the write-up's)", 390.0),
    ("2", "TF Serving, whole model", "CPU (the write-up's)", 292.0),
    ("2", "whole model", "V100 GPU (the write-up's)", 10.2),
    ("4", "split: 7.3 encoder + 2.8 head", "V100 GPU (the write-up's)", 10.1),
)
KEPT = frozenset({"1", "2", "4", "embedding"})
TOP = 64


@dataclass(frozen=True)
class Plan:
    mode: str
    shape: Shape | None  # None: the default encoder and its models, under build/
    schemes: schemes.Plan  # one round at c1 and c64, no open loop


QUICK = Plan("quick", None, schemes.Plan("quick", 1, (1, TOP), 2.0, 200, 0.0, (), (), 64, False))
FULL = Plan("full", BERT_BASE, schemes.Plan("full", 2, (1, TOP), 15.0, 3000, 0.0, (), (), 256, False))


def built(shape: Shape) -> Path:
    """The models of `shape` under build/writeup/, built where missing: a random checkpoint, its export,
    the default head trained on it (a few epochs: its accuracy is not the point), and the whole model."""
    build = REPO / "build" / "writeup" / f"{shape.layers}x{shape.hidden}x{shape.heads}x{shape.intermediate}"
    checkpoint, encoder, head = (str(build / part) for part in ("checkpoint", "encoder", f"heads/{DEFAULT_HEAD}"))
    dims = [f"--{name}={value}" for name, value in vars(shape).items()]
    steps = (
        ("models.random_checkpoint", "--output", checkpoint, *dims),
        ("models.export_encoder", "--checkpoint", checkpoint, "--output", encoder),
        ("models.train_head", "--head", DEFAULT_HEAD, "--encoder", encoder, "--output", head, "--epochs=5"),
        ("models.export_whole", "--encoder", encoder, "--head", f"{head}/1", "--output", str(build / "whole" / "1")),
    )
    if not (build / "whole" / "1" / "saved_model.pb").is_file():
        say(f"building a random checkpoint of {shape} and its models under {build}")
        for step in steps:
            subprocess.run([sys.executable, "-m", *step], cwd=REPO, check=True, stdout=sys.stderr)
    return build


def run(ctx: Context) -> dict[str, Any]:
    plan: Plan = ctx.plan
    build = REPO / "build" if plan.shape is None else built(plan.shape)
    found = schemes.measured(ctx, plan.schemes, build, texts("short"), heads=(DEFAULT_HEAD,), kept=KEPT)
    return {**found, "shape": plan.shape and vars(plan.shape), "ours": ours(found)}


def ours(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per scheme: c1 p50 per sentence, c64 throughput, and the throughput's share of the FLOP bound."""
    runs = runs_of(results)
    bound = results["ceiling"]["flops"]["unpadded"]["bound_texts_per_s"]
    found = []
    for key in ("1", "2", "4", "embedding"):
        rate = median_of(runs, key, "closed", TOP, "throughput_per_s")
        found.append(
            {
                "scheme": key,
                "title": results["systems"][key]["title"],
                "c1_p50_ms": median_of(runs, key, "closed", 1, "p50_ms"),
                f"c{TOP}_texts_per_s": rate,
                "of_flop_bound": None if rate is None else rate / bound,
            }
        )
    return found


def targets(results: dict[str, Any]) -> list[Target]:
    runs = runs_of(results)
    rows = {row["scheme"]: row for row in results["ours"]}
    return [info(f"scheme {key} c1 p50 per sentence (ms)", rows[key]["c1_p50_ms"]) for key in ("1", "2", "4")] + [
        at_least("scheme 4 / scheme 1 throughput at c64", saturation(runs, "4") / saturation(runs, "1"), 1.0),
        info("FLOP bound, short texts (texts/s)", results["ceiling"]["flops"]["unpadded"]["bound_texts_per_s"]),
    ]


def tables(report: dict[str, Any]) -> list[str]:
    results, machine = report["results"], report["machine"]
    shape = results["shape"]
    encoder = (
        "the default encoder"
        if shape is None
        else (
            f"{shape['layers']} layers, hidden {shape['hidden']}, FFN {shape['intermediate']}, {shape['heads']} heads"
        )
    )
    here = f"{machine['cpu_model']}, {machine['nproc']} cores (ours)"
    bound = results["ceiling"]["flops"]["unpadded"]
    gflops = results["ceiling"]["flops"]["matmul_gflops"]
    return [
        f"## The write-up's table: {encoder}",
        "",
        "| scheme | what | hardware | c1 ms per sentence | c64 texts/s | of the FLOP bound |",
        "|---|---|---|---:|---:|---:|",
        *(f"| {key} | {what} | {where} | {ms:g} | - | - |" for key, what, where, ms in WRITEUP),
        *(
            f"| {row['scheme']} | {row['title']} | {here} | {num(row['c1_p50_ms'], 1)} | "
            f"{num(row[f'c{TOP}_texts_per_s'], 1)} | {num(row['of_flop_bound'], 3)} |"
            for row in results["ours"]
        ),
        "",
        f"FLOP bound: {bound['gflop_per_text']:.2f} GFLOP per text at {bound['mean_tokens']:.1f} tokens, over the "
        f"best measured fp32 matmul rate ({gflops:.0f} GFLOP/s): {bound['bound_texts_per_s']:.1f} texts/s.",
        "",
        "## Runs",
        "",
        *schemes.runs_table(runs_of(results), "closed"),
    ]


FIGURES = (
    "ours.0.c1_p50_ms",
    "ours.0.c64_texts_per_s",
    "ours.1.c1_p50_ms",
    "ours.2.c64_texts_per_s",
    "ours.2.of_flop_bound",
    "ceiling.flops.unpadded.bound_texts_per_s",
)
TITLE = "The write-up's table on a BERT-base-shaped encoder"
PLANS = {"quick": QUICK, "full": FULL}
SCENARIO = Scenario("writeup", TITLE, PLANS, run, targets, tables, FIGURES, schemes.checks)
