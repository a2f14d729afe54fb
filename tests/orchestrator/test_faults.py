"""The orchestrator when a hop dies, stalls or swaps its model: clear 503/504 naming the hop, within the
hop's timeout, and recovery without restarting the orchestrator. Its own three services, so killing them
does not disturb other tests; the encoder runs without XLA here so that a restart takes seconds."""

import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stack import services
from stack.procs import free_port
from stack.restartable import Restartable
from tests.conftest import looping, publish_version

pytestmark = pytest.mark.slow

EMBEDDING_TIMEOUT_S = 2.0
HEAD_TIMEOUT_S = 1.0
TEXT = {"text": "A thoroughly enjoyable evening, I would go again."}


@dataclass(frozen=True)
class Stack:
    embedding: Restartable
    head: Restartable
    orchestrator: Restartable
    head_base: Path


@pytest.fixture(scope="module")
def stack(encoder_dir: Path, default_head: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("fault-logs")
    heads = tmp_path_factory.mktemp("fault-heads")
    head_base = heads / services.DEFAULT_HEAD
    shutil.copytree(default_head / "1", head_base / "1")
    embedding = services.embedding(free_port(), encoder_dir, xla="false")
    grpc_port, rest_port = free_port(), free_port()
    config = logs / "heads.config"
    head = services.head(
        grpc_port, rest_port, heads, config, "--file_system_poll_wait_seconds", "0.5", heads=[services.DEFAULT_HEAD]
    )
    orchestrator = services.orchestrator(
        free_port(),
        embedding.url,
        grpc_port,
        rest_port,
        embedding_timeout_s=str(EMBEDDING_TIMEOUT_S),
        head_timeout_s=str(HEAD_TIMEOUT_S),
        head_config_file=str(config),
    )
    parts = [Restartable(s, logs / f"{s.name}.log") for s in (embedding, head, orchestrator)]
    try:
        for part in parts:
            part.start()
        yield Stack(*parts, head_base)
    finally:
        for part in reversed(parts):
            part.stop()


def classify(stack: Stack, **headers: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = httpx.post(f"{stack.orchestrator.url}/classify", json=TEXT, headers=headers, timeout=30)
    return response, time.perf_counter() - started


def wait_for_200(stack: Stack, within_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < within_s:
        if classify(stack)[0].status_code == 200:
            return time.perf_counter() - started
        time.sleep(0.2)
    raise AssertionError(f"/classify did not recover within {within_s}s")


def wait_ready(stack: Stack, within_s: float) -> bool:
    deadline = time.perf_counter() + within_s
    while time.perf_counter() < deadline:
        if httpx.get(f"{stack.orchestrator.url}/readyz").status_code == 200:
            return True
        time.sleep(0.1)
    return False


def assert_error(response: httpx.Response, status: int, code: str, names: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert names in error["message"]


def wait_not_ready(stack: Stack, names: str) -> None:
    for _ in range(50):
        readyz = httpx.get(f"{stack.orchestrator.url}/readyz")
        if readyz.status_code == 503:
            assert names in readyz.json()["error"]["message"]
            return
        time.sleep(0.1)
    raise AssertionError("/readyz still says ready")


@pytest.mark.parametrize(
    ("part", "code", "names"),
    [("head", "head_unavailable", "head"), ("embedding", "embedding_unavailable", "embedding service")],
)
def test_a_killed_hop_is_a_fast_503_naming_it_and_recovers_when_restarted(
    stack: Stack, part: str, code: str, names: str
) -> None:
    assert classify(stack)[0].status_code == 200
    hop: Restartable = getattr(stack, part)
    hop.signal(signal.SIGKILL)
    for _ in range(3):
        response, elapsed = classify(stack)
        assert_error(response, 503, code, names)
        assert elapsed < HEAD_TIMEOUT_S
    wait_not_ready(stack, names)
    hop.start()
    assert wait_for_200(stack, within_s=15) < 15
    assert wait_ready(stack, within_s=3)
    errors = httpx.get(f"{stack.orchestrator.url}/metrics").text
    assert f'orchestrator_hop_errors_total{{hop="{part}",kind="unavailable"}}' in errors


@pytest.mark.parametrize(
    ("part", "timeout_s", "code", "names"),
    [
        ("embedding", EMBEDDING_TIMEOUT_S, "embedding_timeout", "embedding service"),
        ("head", HEAD_TIMEOUT_S, "head_timeout", "head"),
    ],
)
def test_a_stalled_hop_is_a_504_naming_it_at_its_timeout(
    stack: Stack, part: str, timeout_s: float, code: str, names: str
) -> None:
    assert classify(stack)[0].status_code == 200
    hop: Restartable = getattr(stack, part)
    hop.signal(signal.SIGSTOP)
    try:
        response, elapsed = classify(stack)
        assert_error(response, 504, code, names)
        assert timeout_s * 0.9 < elapsed < timeout_s + 1.0
        # The caller's own, shorter deadline wins and is what the hop is given.
        response, elapsed = classify(stack, **{"X-Request-Timeout-Ms": "300"})
        assert_error(response, 504, code, names)
        assert elapsed < 0.3 + 0.7
    finally:
        hop.signal(signal.SIGCONT)
    assert wait_for_200(stack, within_s=10) < 10


def test_a_new_head_version_under_looping_clients_loses_nothing(stack: Stack) -> None:
    versions: Counter[str] = Counter()
    failures: list[str] = []
    seen_v2 = threading.Event()

    def client(http: httpx.Client) -> None:
        response = http.post(f"{stack.orchestrator.url}/classify", json=TEXT)
        if response.status_code != 200:
            failures.append(response.text)
            return
        version = response.json()["model"]["version"]
        versions[version] += 1
        if version == "2":
            seen_v2.set()

    with looping(client, client, client, client):
        time.sleep(1.0)
        publish_version(stack.head_base / "1", stack.head_base, 2)
        assert seen_v2.wait(timeout=20), f"version 2 never answered: {versions}"
        time.sleep(1.0)
    assert failures == []
    assert versions["1"] > 0 and versions["2"] > 0
    last = httpx.post(f"{stack.orchestrator.url}/classify", json=TEXT, timeout=30).json()
    assert last["model"]["version"] == "2"
