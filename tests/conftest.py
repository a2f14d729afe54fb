"""Session fixtures: the default models and real servers (embedding, head) on free loopback ports."""

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from perf.procs import free_port
from tests.servers import ROOT, Server, running

DEFAULT_ENCODER = ROOT / "build" / "encoder"


@pytest.fixture(scope="session")
def encoder_dir() -> Path:
    if not (DEFAULT_ENCODER / "manifest.json").is_file():
        pytest.fail(f"{DEFAULT_ENCODER} is missing: run `make models` (make test does)")
    return DEFAULT_ENCODER


@pytest.fixture(scope="session")
def xla_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xla-cache")


@contextmanager
def running_embedding(encoder_dir: Path, xla_cache_dir: Path, log: Path, **settings: str) -> Iterator[Server]:
    """The embedding service on a free port; `settings` are EMBEDDING_* overrides by lower-case name."""
    port = free_port()
    env = {
        "EMBEDDING_PORT": str(port),
        "EMBEDDING_MODEL_DIR": str(encoder_dir),
        "EMBEDDING_XLA_CACHE_DIR": str(xla_cache_dir),
        **{f"EMBEDDING_{name.upper()}": value for name, value in settings.items()},
    }
    with running("embedding_service", env, port, log) as server:
        yield server


@pytest.fixture(scope="session")
def embedding_server(
    encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The service as `make run` starts it, with its own XLA cache."""
    with running_embedding(encoder_dir, xla_cache_dir, tmp_path_factory.mktemp("logs") / "embedding.log") as server:
        yield server


@pytest.fixture(scope="session")
def constrained_server(
    encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Small batches, a short queue and a 2 s deadline: for overload, timeout and disconnect tests."""
    log = tmp_path_factory.mktemp("logs") / "constrained.log"
    with running_embedding(
        encoder_dir, xla_cache_dir, log, max_batch_size="8", max_queue_texts="256", request_timeout_s="2"
    ) as server:
        yield server


DEFAULT_HEAD = ROOT / "build" / "head"


@dataclass(frozen=True)
class HeadServer:
    process: subprocess.Popen[bytes]
    grpc_target: str
    rest_url: str
    base_path: Path


@contextmanager
def running_head(base_path: Path, log: Path, *extra: str) -> Iterator[HeadServer]:
    """The head service (stand-in) on free ports, serving model `head` from `base_path`."""
    grpc_port, rest_port = free_port(), free_port()
    args = [
        "--port",
        str(grpc_port),
        "--rest_api_port",
        str(rest_port),
        "--model_name",
        "head",
        "--model_base_path",
        str(base_path),
        "--file_system_poll_wait_seconds",
        "0.5",
        "--monitoring_config_file",
        str(ROOT / "head_service" / "tfserving" / "monitoring.config"),
        *extra,
    ]
    url = f"http://127.0.0.1:{rest_port}"
    with running("head_service", {}, rest_port, log, args=args, ready_path="/v1/models/head/metadata") as server:
        yield HeadServer(server.process, f"127.0.0.1:{grpc_port}", url, base_path)


@pytest.fixture(scope="session")
def default_head() -> Path:
    if not (DEFAULT_HEAD / "1" / "saved_model.pb").is_file():
        pytest.fail(f"{DEFAULT_HEAD}/1 is missing: run `make models` (make test does)")
    return DEFAULT_HEAD


@pytest.fixture(scope="session")
def head_server(default_head: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadServer]:
    """Serves a copy of the default head's version 1, so tests may add versions to its base path."""
    base = tmp_path_factory.mktemp("head-base")
    shutil.copytree(default_head / "1", base / "1")
    with running_head(base, tmp_path_factory.mktemp("logs") / "head.log") as server:
        yield server
