"""Session fixtures: the default models and real servers (embedding, head) on free loopback ports."""

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stack import services as stack_services
from stack.procs import LOOPBACK, free_port
from stack.services import ROOT
from tests.otlp import Receiver, receiving
from tests.servers import Server, running

DEFAULT_ENCODER = ROOT / "build" / "encoder"
# The suite's services compute in fp32 unless a test asks for another precision: the product's default,
# auto, picks bf16 on a CPU where it is faster, and bf16's vectors move with their batch-mates (by up to
# 6e-4), while many tests compare served vectors to 1e-5. bf16 and auto have tests of their own.
os.environ.setdefault("EMBEDDING_PRECISION", "fp32")


@pytest.fixture(scope="session")
def encoder_dir() -> Path:
    if not (DEFAULT_ENCODER / "manifest.json").is_file():
        pytest.fail(f"{DEFAULT_ENCODER} is missing: run `make models` (make test does)")
    return DEFAULT_ENCODER


@pytest.fixture(scope="session")
def xla_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xla-cache")


@pytest.fixture(scope="session")
def otlp() -> Iterator[Receiver]:
    """The OTLP/HTTP receiver the session's servers (embedding_server, head_server, pipeline) export to."""
    with receiving() as receiver:
        yield receiver


@contextmanager
def running_embedding(
    encoder_dir: Path, xla_cache_dir: Path, log: Path, env: Mapping[str, str] | None = None, **settings: str
) -> Iterator[Server]:
    """The embedding service on a free port; `settings` are EMBEDDING_* overrides by lower-case name."""
    service = stack_services.embedding(free_port(), encoder_dir, xla_cache_dir=str(xla_cache_dir), **settings)
    with running(service, log, env=env) as server:
        yield server


@pytest.fixture(scope="session")
def embedding_server(
    encoder_dir: Path, xla_cache_dir: Path, otlp: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The service as `make run` starts it, with its own XLA cache, and LangChain's default model name as an
    alias (EMBEDDING_MODEL_ALIASES), as a deployment for unmodified clients would configure it; exporting
    its spans to the session's OTLP receiver."""
    log = tmp_path_factory.mktemp("logs") / "embedding.log"
    with running_embedding(
        encoder_dir, xla_cache_dir, log, env=otlp.env, model_aliases="text-embedding-3-small"
    ) as server:
        yield server


class GatedServer(Server):
    """A server whose encoder a test can hold: while `hold()` is active, every batch waits before it runs
    (EMBEDDING_TEST_ENCODER_GATE), so queues fill and deadlines pass on any hardware, however fast."""

    def __init__(self, server: Server, gate: Path) -> None:
        super().__init__(server.process, server.url, server.log)
        self.gate = gate

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.gate.touch()
        try:
            yield
        finally:
            self.gate.unlink(missing_ok=True)

    def wait_for_metric(self, name: str, value: float, *, at_least: bool = False, within_s: float = 10.0) -> None:
        deadline = time.monotonic() + within_s
        while (seen := self.metric(name)) != value and not (at_least and seen > value):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is {seen}, not {value}, after {within_s}s")
            time.sleep(0.02)


CONSTRAINED_CACHE_BYTES = 256 * 1024  # room for ~130 sentence vectors: a flood of distinct texts evicts


@pytest.fixture(scope="session")
def constrained_server(
    encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatedServer]:
    """Small batches, a short queue, short texts, a 2 s deadline, a small cache and an encoder the test can
    hold: for overload, timeout, disconnect, batching, cache and limits tests."""
    logs = tmp_path_factory.mktemp("constrained")
    gate = logs / "encoder.gate"
    with running_embedding(
        encoder_dir,
        xla_cache_dir,
        logs / "constrained.log",
        max_batch_size="8",
        max_queue_texts="256",
        max_texts_per_request="256",
        max_chars_per_text="500",
        max_response_bytes="1048576",
        request_timeout_s="2",
        cache_bytes=str(CONSTRAINED_CACHE_BYTES),
        test_encoder_gate=str(gate),
    ) as server:
        yield GatedServer(server, gate)


def built_head(name: str) -> Path:
    """A shipped head's built base path (version 1 in it), to copy from, never to serve or change."""
    built = stack_services.DEFAULT_HEADS_ROOT / name
    if (built / "1" / "saved_model.pb").is_file():
        return built
    pytest.fail(f"{built}/1 is missing: run `make models` (make test does)")


def copy_heads(heads_root: Path, heads: Iterable[str] = stack_services.HEADS) -> Path:
    """Version 1 of each head copied to `heads_root`/<name>/1: a heads root a test may change."""
    for name in heads:
        shutil.copytree(built_head(name) / "1", heads_root / name / "1")
    return heads_root


@dataclass(frozen=True)
class HeadServer:
    process: subprocess.Popen[bytes]
    grpc_target: str
    rest_url: str
    heads_root: Path  # each head's base path is heads_root/<name>
    config_path: Path  # its model config, re-read every 0.5 s: edit it with stack.services.write_heads

    @property
    def base_path(self) -> Path:
        """The default head's base path."""
        return self.heads_root / stack_services.DEFAULT_HEAD


@contextmanager
def running_head(
    heads_root: Path,
    log: Path,
    *extra: str,
    heads: Iterable[str] = stack_services.HEADS,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[HeadServer]:
    """The head service (stand-in) on free ports, serving `heads` from `heads_root`/<name>; its model config
    is written to `config_path` (default: beside the log) and, like the base paths, polled every 0.5 s."""
    config_path = config_path or log.with_suffix(".models.config")
    grpc_port, rest_port = free_port(), free_port()
    service = stack_services.head(
        grpc_port,
        rest_port,
        heads_root,
        config_path,
        *("--file_system_poll_wait_seconds", "0.5", *extra),
        heads=heads,
        config_poll_wait_s=0.5,
    )
    with running(service, log, env=env) as server:
        yield HeadServer(server.process, f"{LOOPBACK}:{grpc_port}", service.url, heads_root, config_path)


@pytest.fixture(scope="session")
def default_head() -> Path:
    """The built default head's base path (version 1 in it): copy from it, never write into it."""
    return built_head(stack_services.DEFAULT_HEAD)


@pytest.fixture(scope="session")
def head_server(otlp: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadServer]:
    """Serves a copy of version 1 of every shipped head, so tests may add versions to their base paths;
    exporting its spans to the session's OTLP receiver."""
    heads_root = copy_heads(tmp_path_factory.mktemp("heads"))
    with running_head(heads_root, tmp_path_factory.mktemp("logs") / "head.log", env=otlp.env) as server:
        yield server


@dataclass(frozen=True)
class Pipeline:
    orchestrator: Server
    embedding: Server
    head: HeadServer


@contextmanager
def running_orchestrator(
    embedding_urls: str, head: HeadServer, log: Path, env: Mapping[str, str] | None = None, **settings: str
) -> Iterator[Server]:
    """The orchestrator on a free port over the given hops, reading the head's own model config; `settings`
    are ORCHESTRATOR_* overrides."""
    grpc_port, rest_port = (int(url.rsplit(":", 1)[1]) for url in (head.grpc_target, head.rest_url))
    settings = {"head_config_file": str(head.config_path), **settings}
    service = stack_services.orchestrator(free_port(), embedding_urls, grpc_port, rest_port, **settings)
    with running(service, log, ready_timeout_s=60, env=env) as server:
        yield server


@pytest.fixture(scope="session")
def pipeline(
    embedding_server: Server, head_server: HeadServer, otlp: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """The three services as `make run` starts them (the head serving a copy of version 1), exporting their
    spans to the session's OTLP receiver."""
    log = tmp_path_factory.mktemp("logs") / "orchestrator.log"
    with running_orchestrator(embedding_server.url, head_server, log, env=otlp.env) as orchestrator:
        yield Pipeline(orchestrator, embedding_server, head_server)


def publish_version(source: Path, base_path: Path, version: int) -> None:
    """Copies a head version directory to `base_path`/`version`, appearing whole in one rename (as a deploy
    should make it appear) to a server polling the base path."""
    staging = base_path / f".incoming-{version}"
    shutil.copytree(source, staging)
    staging.rename(base_path / str(version))


@contextmanager
def looping(*calls: Callable[[httpx.Client], None]) -> Iterator[None]:
    """Each call made over and over, on a thread and an HTTP client of its own, until the block ends."""
    done = threading.Event()

    def loop(call: Callable[[httpx.Client], None]) -> None:
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                call(http)

    threads = [threading.Thread(target=loop, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)
