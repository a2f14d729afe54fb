"""Starts our services as real subprocesses on free loopback ports and stops them by PID."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def metric(self, name: str) -> float:
        """Sum of a Prometheus sample's values, e.g. `embedding_batch_texts_count`."""
        text = httpx.get(f"{self.url}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name
        )


@contextmanager
def running(
    module: str,
    env: dict[str, str],
    port: int,
    log: Path,
    *,
    args: Sequence[str] = (),
    ready_path: str = "/readyz",
    ready_timeout_s: float = 300,
) -> Iterator[Server]:
    url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1", **env}
    with log.open("wb") as out:
        command = [sys.executable, "-m", module, *args]
        process = subprocess.Popen(command, env=full_env, cwd=ROOT, stdout=out, stderr=out)
    try:
        _wait_ready(process, f"{url}{ready_path}", log, ready_timeout_s)
        yield Server(process, url, log)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], grace_s: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready within {timeout_s}s:\n{log.read_text()[-3000:]}")
