"""Stacks: service specs -> processes on loopback, readiness, logs and memory, always stopped by PID. A
scenario's services go through here so that each is recorded once in its report."""

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from perf.harness.progress import say
from stack import services as stack_services
from stack.procs import LOOPBACK, free_port, rss_mb, server_env, start_module, stop, wait_until_ok
from stack.services import DEFAULT_HEAD, DEFAULT_HEADS_ROOT, ROOT, Service

ENCODER_DIR = ROOT / "build" / "encoder"


@dataclass
class Started:
    service: Service
    pid: int
    ready_after_s: float
    idle_rss_mb: float
    loaded_rss_mb: float = 0.0

    @property
    def port(self) -> int:
        return port_of(self.service)

    @property
    def url(self) -> str:
        return self.service.url

    def record(self) -> dict[str, Any]:
        """How it was started and what it cost; keys made for the run are hidden."""
        env = {k: "(hidden)" if k.endswith(("_KEY", "_KEYS")) else v for k, v in self.service.env.items()}
        return {
            "command": ["python", "-m", self.service.module, *self.service.args],
            "env": env,
            "ready_after_s": self.ready_after_s,
            "idle_rss_mb": self.idle_rss_mb,
            "loaded_rss_mb": self.loaded_rss_mb,
        }


def port_of(service: Service) -> int:
    return int(service.url.rsplit(":", 1)[1])


@dataclass
class Stacks:
    """Starts services for one scenario run: logs under `logs`, each one's record kept in `records`."""

    logs: Path
    records: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def started(self, service: Service) -> Iterator[Started]:
        """Starts `service`, waits until it is ready, always stops it; records it once stopped."""
        with self.together([service]) as up:
            yield up[service.name]

    @contextmanager
    def together(self, services: Sequence[Service]) -> Iterator[dict[str, Started]]:
        """Starts every service at once, then waits for each (so each is slower to ready than alone)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            procs = {}
            begun = time.perf_counter()
            for service in services:
                log = stack.enter_context((self.logs / f"{service.name}.log").open("wb"))
                env = server_env(service.env)
                procs[service.name] = start_module(service.module, service.args, env, cwd=ROOT, stdout=log, stderr=log)
                stack.callback(stop, procs[service.name])
            up: dict[str, Started] = {}
            for service in services:
                proc = procs[service.name]
                wait_until_ok(proc, service.ready_url, 600, poll_s=0.2)
                ready_after = time.perf_counter() - begun
                up[service.name] = Started(service, proc.pid, ready_after, rss_mb(proc.pid))
                say(f"{service.name} ready after {ready_after:.1f}s (pid {proc.pid})")
            yield up
            for found in up.values():
                found.loaded_rss_mb = rss_mb(found.pid)
                self.records[found.service.name] = found.record()


def embedding(name: str, *, xla: bool, **settings: str) -> Service:
    """The embedding service on the built encoder, quiet; its XLA cache is the settings' (EMBEDDING_XLA_CACHE_DIR,
    else build/xla-cache), shared by every run."""
    found = stack_services.embedding(
        free_port(),
        ENCODER_DIR,
        xla=str(xla).lower(),
        log_level="warning",
        **settings,
    )
    return replace(found, name=name)


@dataclass(frozen=True)
class Pipeline:
    head: Service
    embedding: Service
    orchestrator: Service
    config_path: Path  # the head's config, which the orchestrator reads and a scenario may edit

    @property
    def services(self) -> list[Service]:
        return [self.head, self.embedding, self.orchestrator]


def pipeline(
    work: Path,
    key: str = "",
    *,
    xla: bool = False,
    heads: Sequence[str] = (DEFAULT_HEAD,),
    embedding_settings: Mapping[str, str] | None = None,
    orchestrator_settings: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Pipeline:
    """The head (serving `heads` from build/heads), the embedding service and the orchestrator on free
    ports, named <service>-<key> when a key is given; `env` goes to all three."""
    suffix = f"-{key}" if key else ""
    config_path = work / f"heads{suffix}.config"
    grpc_port, rest_port = free_port(), free_port()
    head = stack_services.head(grpc_port, rest_port, DEFAULT_HEADS_ROOT, config_path, heads=heads)
    encoder = embedding("embedding", xla=xla, **(embedding_settings or {}))
    orchestrator = stack_services.orchestrator(
        free_port(),
        encoder.url,
        grpc_port,
        rest_port,
        log_level="warning",
        head_config_file=str(config_path),
        **(orchestrator_settings or {}),
    )
    extra = dict(env or {})
    head, encoder, orchestrator = (
        replace(s, name=f"{s.name}{suffix}", env={**s.env, **extra}) for s in (head, encoder, orchestrator)
    )
    return Pipeline(head, encoder, orchestrator, config_path)


@contextmanager
def running(stacks: Stacks, found: Pipeline) -> Iterator[dict[str, Started]]:
    """Starts a pipeline and waits until the orchestrator sees every head it is to serve."""
    with stacks.together(found.services) as up:
        wait_for_heads(found.orchestrator.url, stack_services.read_heads(found.config_path))
        yield up


def wait_for_heads(url: str, heads: Iterator[str] | Sequence[str] | Mapping[str, Any], within_s: float = 60.0) -> None:
    """Polls the orchestrator's GET /v1/heads until every one of `heads` is ready."""
    wanted = set(heads)
    deadline = time.monotonic() + within_s
    while True:
        listed = httpx.get(f"{url}/v1/heads", timeout=5.0).json()["heads"]
        ready = {head["name"] for head in listed if head["ready"]}
        if wanted <= ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"heads {sorted(wanted - ready)} not ready within {within_s:.0f}s: {listed}")
        time.sleep(0.2)


def helper_server(kind: str) -> Service:
    """One of perf.harness.servers' helpers ("null" or "otlp") on a free port."""
    port = free_port()
    return Service(f"{kind}-server", "perf.harness.servers", f"http://{LOOPBACK}:{port}", "/", (kind, str(port)))


def outside_server(name: str, command: Sequence[str], ready_path: str, env: Mapping[str, str]) -> Service:
    """Another project's server on a free port: `command` with its literal `{port}` filled, run through
    perf.harness.servers' `exec` (which becomes it: its PID is the server's), ready when `ready_path`
    answers 200."""
    port = free_port()
    args = ("exec", *(part.replace("{port}", str(port)) for part in command))
    return Service(name, "perf.harness.servers", f"http://{LOOPBACK}:{port}", ready_path, args, dict(env))
