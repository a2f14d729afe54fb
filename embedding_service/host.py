"""What this machine offers an encoder, read without importing a backend: CPU cores within the container's
limit, and whether an NVIDIA GPU is visible."""

import math
import os
from pathlib import Path


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
