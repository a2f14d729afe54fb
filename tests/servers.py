"""Our services as real subprocesses for tests, on stack/procs.py's helpers, with a log file each."""

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from stack.procs import ServerStartError, server_env, start_module, stop, wait_until_ok
from stack.services import ROOT, Service


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
    service: Service, log: Path, *, ready_timeout_s: float = 300, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """Starts the service (`env`: more environment, e.g. OTEL_*), waits for its readiness URL to answer 200,
    always stops it by PID."""
    environment = server_env({**service.env, **(env or {})})
    with log.open("wb") as out:
        process = start_module(service.module, service.args, environment, cwd=ROOT, stdout=out, stderr=out)
    try:
        try:
            wait_until_ok(process, service.ready_url, ready_timeout_s)
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}; its log ends:\n{log.read_text()[-3000:]}") from None
        yield Server(process, service.url, log)
    finally:
        stop(process)
