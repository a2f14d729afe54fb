"""EMBEDDING_PRECISION and what `auto` makes of it: the rule that picks bf16 over fp32 is a pure function of
measured figures (`decide`), so it is tested with any timings and fidelities; docs/precision.md says why."""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from embedding_service.encoder import Precision
from embedding_service.int8_manifest import Int8Manifest

PrecisionSetting = Literal["auto", "fp32", "bf16", "int8"]

# The project's parity contract: bf16 is the same encoder only while every probe text's cosine to fp32 holds it.
PARITY_MIN_COSINE = 0.9999
# How much faster bf16 must be: on a noisy machine a tie is not a reason to leave the reference.
MIN_SPEEDUP = 1.05


class Measurement(BaseModel):
    """fp32 against bf16 on the loaded model: one probe batch's best time at each, and bf16's fidelity."""

    model_config = ConfigDict(frozen=True)

    fp32_ms: float
    bf16_ms: float
    min_cosine: float  # bf16 to fp32, the worst probe text
    mean_cosine: float
    texts: int  # probe texts compared

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.bf16_ms if self.bf16_ms > 0 else math.nan


class PrecisionChoice(BaseModel):
    """What the encoder was asked to run at, and why: published in GET /v1/models (`runtime.choice`)."""

    model_config = ConfigDict(frozen=True)

    setting: PrecisionSetting
    chosen: Precision
    reason: str
    measurement: Measurement | None = None  # auto's figures, where it measured
    remembered: bool = False  # the measurement was made at an earlier start (kept on disk), not at this one
    measured_s: float | None = None  # what measuring cost this start


def decide(measurement: Measurement) -> tuple[Precision, str]:
    """bf16 only when it holds the parity contract and is at least MIN_SPEEDUP times as fast as fp32; a
    figure that is not a number (a failed probe) keeps fp32."""
    m = measurement
    if not m.min_cosine >= PARITY_MIN_COSINE:
        return "fp32", f"bf16's min cosine to fp32 {m.min_cosine:.6f} is below the parity contract {PARITY_MIN_COSINE}"
    if not m.speedup >= MIN_SPEEDUP:
        return "fp32", f"bf16 is {m.speedup:.2f}x as fast as fp32, under the {MIN_SPEEDUP}x it must reach"
    return "bf16", f"bf16 is {m.speedup:.2f}x as fast as fp32 and holds parity (min cosine {m.min_cosine:.6f})"


def explicit(setting: PrecisionSetting) -> PrecisionChoice:
    """A precision set by EMBEDDING_PRECISION: nothing is measured."""
    if setting == "auto":
        raise ValueError("auto is decided by measurement, not set")
    return PrecisionChoice(setting=setting, chosen=setting, reason="set by EMBEDDING_PRECISION")


def unmeasured(reason: str) -> PrecisionChoice:
    """auto where there is nothing to measure: fp32, the reference."""
    return PrecisionChoice(setting="auto", chosen="fp32", reason=reason)


def describe(choice: PrecisionChoice, int8: Int8Manifest | None) -> str:
    """The start-up log's account of the choice: the setting, the reason, and the figures behind it."""
    said = f"EMBEDDING_PRECISION={choice.setting}: {choice.reason}"
    if (m := choice.measurement) is not None:
        when = "remembered from an earlier start" if choice.remembered else f"measured now in {choice.measured_s}s"
        said += (
            f"; {m.fp32_ms} ms at fp32, {m.bf16_ms} ms at bf16 for the probe batch, "
            f"min cosine {m.min_cosine:.6f}, mean {m.mean_cosine:.6f} over {m.texts} probe texts ({when})"
        )
    if int8 is not None:
        heads = ", ".join(f"{h.name} v{h.version} {h.fp32_accuracy:.4f} -> {h.int8_accuracy:.4f}" for h in int8.heads)
        said += (
            f"; the build measured min cosine {int8.fidelity.min_cosine:.4f}, mean {int8.fidelity.mean_cosine:.4f} "
            f"on {int8.fidelity.texts} held-out texts; heads checked (accuracy fp32 -> int8): {heads or 'none'}"
        )
    return said
