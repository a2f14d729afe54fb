"""Session fixtures: the exported default encoder and real embedding servers on free loopback ports."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ROOT, Server, free_port, running

DEFAULT_ENCODER = ROOT / "build" / "encoder"


@pytest.fixture(scope="session")
def encoder_dir() -> Path:
    if not (DEFAULT_ENCODER / "manifest.json").is_file():
        pytest.fail(f"{DEFAULT_ENCODER} is missing: run `make models` (make test does)")
    return DEFAULT_ENCODER


@pytest.fixture(scope="session")
def xla_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xla-cache")


@pytest.fixture(scope="session")
def embedding_server(
    encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The service as `make run` starts it, with its own XLA cache."""
    port = free_port()
    env = {
        "EMBEDDING_PORT": str(port),
        "EMBEDDING_MODEL_DIR": str(encoder_dir),
        "EMBEDDING_XLA_CACHE_DIR": str(xla_cache_dir),
    }
    with running("embedding_service", env, port, tmp_path_factory.mktemp("logs") / "embedding.log") as server:
        yield server


@pytest.fixture(scope="session")
def constrained_server(
    encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Small batches, a short queue and a 2 s deadline: for overload, timeout and disconnect tests."""
    port = free_port()
    env = {
        "EMBEDDING_PORT": str(port),
        "EMBEDDING_MODEL_DIR": str(encoder_dir),
        "EMBEDDING_XLA_CACHE_DIR": str(xla_cache_dir),
        "EMBEDDING_MAX_BATCH_SIZE": "8",
        "EMBEDDING_MAX_QUEUE_TEXTS": "256",
        "EMBEDDING_REQUEST_TIMEOUT_S": "2",
    }
    with running("embedding_service", env, port, tmp_path_factory.mktemp("logs") / "constrained.log") as server:
        yield server
