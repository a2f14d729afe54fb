"""Our services as real subprocesses for tests, on stack/procs.py's helpers, with a log file each."""

import os
import signal
import subprocess
from collections.abc import Iterator
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
def running(service: Service, log: Path, *, ready_timeout_s: float = 300) -> Iterator[Server]:
    """Starts the service, waits for its readiness URL to answer 200, always stops it by PID."""
    with log.open("wb") as out:
        process = start_module(service.module, service.args, server_env(service.env), cwd=ROOT, stdout=out, stderr=out)
    try:
        try:
            wait_until_ok(process, service.ready_url, ready_timeout_s)
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}; its log ends:\n{log.read_text()[-3000:]}") from None
        yield Server(process, service.url, log)
    finally:
        stop(process)


class Restartable:
    """A service a test kills, stalls and starts again on the same port (always stopped by PID at the end)."""

    def __init__(self, service: Service, log: Path) -> None:
        self.service = service
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.service.url

    def start(self, ready_timeout_s: float = 300) -> None:
        with self.log.open("ab") as out:
            self.process = start_module(
                self.service.module, self.service.args, server_env(self.service.env), cwd=ROOT, stdout=out, stderr=out
            )
        try:
            wait_until_ok(self.process, self.service.ready_url, ready_timeout_s)
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}; its log ends:\n{self.log.read_text()[-3000:]}") from None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)
        if signum == signal.SIGKILL:
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)  # a stalled process could not act on SIGTERM
            stop(self.process)
