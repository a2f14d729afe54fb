"""Services as subprocesses: `python -m module` on a loopback port, awaited until ready, stopped by PID."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"


class ServerStartError(RuntimeError):
    pass


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for a server, with TensorFlow's C++ logs quieted."""
    return {"TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1", **os.environ, **extra}


def free_port() -> int:
    """A loopback port free right now (the OS picks it); the server binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def start_module(module: str, args: Sequence[str], env: Mapping[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """Runs `module` with this interpreter (the venv's); its output goes to our stderr unless redirected."""
    options: dict[str, Any] = {"stdout": sys.stderr, **popen}
    return subprocess.Popen([sys.executable, "-m", module, *args], env=dict(env), **options)


def wait_until_ok(proc: subprocess.Popen[bytes], url: str, timeout_s: float, poll_s: float = 0.5) -> float:
    """Polls `url` until it answers 200; returns the seconds waited. Fails early if the process exits."""
    started = time.perf_counter()
    while (waited := time.perf_counter() - started) < timeout_s:
        if proc.poll() is not None:
            raise ServerStartError(f"the server exited with status {proc.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return waited
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise ServerStartError(f"{url} did not answer 200 within {timeout_s:.0f}s")


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB; 0.0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0  # a zombie: exited, not yet reaped


def stop(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM by PID, then SIGKILL if it has not exited within `grace_s`."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def running_module(
    module: str, args: Sequence[str], env: Mapping[str, str], ready_url: str, timeout_s: float = 180.0
) -> Iterator[float]:
    """Starts the server, yields the seconds until `ready_url` answered 200, and always stops it."""
    proc = start_module(module, args, env)
    try:
        yield wait_until_ok(proc, ready_url, timeout_s)
    finally:
        stop(proc)
