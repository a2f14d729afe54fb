"""Our services as real subprocesses for tests, on perf/procs.py's helpers, with a log file each."""

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from perf.procs import LOOPBACK, ServerStartError, server_env, stop, wait_until_ok

ROOT = Path(__file__).resolve().parent.parent


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
    """Starts `python -m module`, waits for `ready_path` to answer 200, always stops it by PID."""
    url = f"http://{LOOPBACK}:{port}"
    with log.open("wb") as out:
        command = [sys.executable, "-m", module, *args]
        process = subprocess.Popen(command, env=server_env(env), cwd=ROOT, stdout=out, stderr=out)
    try:
        try:
            wait_until_ok(process, f"{url}{ready_path}", ready_timeout_s)
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}; its log ends:\n{log.read_text()[-3000:]}") from None
        yield Server(process, url, log)
    finally:
        stop(process)
