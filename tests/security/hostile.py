"""Helpers for the hostile-input tests: JSON bodies as bytes, a process's resident memory, a bounded client."""

import json
from pathlib import Path

import httpx

CLIENT_TIMEOUT_S = 30.0  # every call: a hang fails the test instead of stalling it
MAX_RSS_GROWTH_MB = 64  # over a whole corpus, after warm-up


def as_json(value: object) -> bytes:
    return json.dumps(value).encode()


def nested(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def post(url: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": content_type}, timeout=CLIENT_TIMEOUT_S)
