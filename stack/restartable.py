"""Restartable: one service process under a test's or a drill's control."""

import os
import signal
import subprocess
from pathlib import Path

from stack.procs import ServerStartError, server_env, start_module, stop, wait_until_ok
from stack.services import Service


class Restartable:
    """A service that a test or a fault drill kills, stalls and starts again on the same port; its output
    is appended to `log`. The caller stops it (by PID) at the end."""

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
                self.service.module, self.service.args, server_env(self.service.env), stdout=out, stderr=out
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
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a stalled process could not act on SIGTERM
            stop(self.process)
