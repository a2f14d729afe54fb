"""A real Prometheus for tests (Debian's package, unpacked into deploy/tools/ by `make deploy-tools`), on a free
loopback port, always killed by PID; and promtool, from the same package."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from stack.procs import LOOPBACK, ServerStartError, free_port, wait_until_ok
from tests.deploy.checks import TOOLS, Obj, run, tool

BIN = TOOLS / "prometheus" / "usr" / "bin"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run([tool(BIN / "promtool"), *args])


@contextmanager
def running_prometheus(config: Obj, directory: Path) -> Iterator[str]:
    """Prometheus with `config` (its data, config and log in `directory`) until the block ends; yields its URL."""
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = directory / "prometheus.log"
    args = [
        tool(BIN / "prometheus"),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen([str(a) for a in args], stdout=out, stderr=out)
    url = f"http://{LOOPBACK}:{port}"
    try:
        try:
            wait_until_ok(process, f"{url}/-/ready", 60, poll_s=0.2)
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}; its log ends:\n{log.read_text()[-3000:]}") from None
        yield url
    finally:
        process.kill()  # its data is thrown away: no need to wait for a clean shutdown of its TSDB
        process.wait()


def api(url: str, path: str, **params: str) -> Any:
    """The `data` of a Prometheus HTTP API answer; an error answer fails with Prometheus's message."""
    body = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=30).json()
    if body["status"] != "success":
        raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def query(url: str, expr: str) -> list[Obj]:
    """An instant query's series, each {"metric": labels, "value": [time, "value"]}."""
    result: list[Obj] = api(url, "query", query=expr)["result"]
    return result
