"""The one progress printer: `[<scenario> +<seconds>s] message` on stderr."""

import sys
import time
from dataclasses import dataclass


@dataclass
class _Progress:
    name: str = "perf"
    started: float = time.monotonic()


_progress = _Progress()


def begin(name: str) -> None:
    _progress.name, _progress.started = name, time.monotonic()


def say(message: str) -> None:
    elapsed = time.monotonic() - _progress.started
    print(f"[{_progress.name} +{elapsed:4.0f}s] {message}", file=sys.stderr, flush=True)
