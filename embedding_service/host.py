"""What this machine offers an encoder, read without importing a backend: CPU cores within the container's
limit, the CPU's model and its native reduced-precision instructions, and whether an NVIDIA GPU is visible."""

import functools
import math
import os
from pathlib import Path

# The CPU flags that say it does bf16 arithmetic natively (AVX-512 BF16, AMX); others emulate it or have none.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# The flags that decide how fast each precision runs: what a remembered precision measurement is valid for.
PRECISION_FLAGS = NATIVE_BF16_FLAGS | {"avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"}


def cores() -> int:
    """The CPU cores this process may run on: its affinity, capped by a cgroup v2 CPU quota (a container's
    CPU limit), so that a 4-core pod on a 64-core node does not start 64 encoder threads."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def gpu_visible() -> bool:
    """An NVIDIA GPU this process may use, seen without importing TensorFlow: the driver lists a GPU, and
    CUDA_VISIBLE_DEVICES does not hide them all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


@functools.cache
def cpu() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags, as Linux's /proc/cpuinfo gives them for its first processor (empty
    where it cannot be read); read once."""
    try:
        first = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split("\n\n")[0]
    except OSError:
        return "", frozenset()
    pairs = (line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in pairs}
    return fields.get("model name", ""), frozenset(fields.get("flags", "").split())


def native_bf16() -> bool:
    return bool(cpu()[1] & NATIVE_BF16_FLAGS)
