"""Graceful shutdown with a hung encoder call: every service ends within its grace period, and the
requests it had to cut off get a 503, never a hang or a dropped connection."""

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack import services
from stack.procs import free_port
from tests.conftest import GatedServer, HeadServer, running_orchestrator
from tests.servers import Server, running

pytestmark = pytest.mark.slow

GRACE_S = 3


@pytest.fixture(scope="module")
def held_embedding(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatedServer]:
    """Its own server, as this module ends it; without XLA, so it starts in seconds."""
    logs = tmp_path_factory.mktemp("shutdown")
    service = services.embedding(
        free_port(),
        encoder_dir,
        xla="false",
        graceful_shutdown_s=str(GRACE_S),
        test_encoder_gate=str(logs / "encoder.gate"),
    )
    with running(service, logs / "embedding.log") as server:
        yield GatedServer(server, logs / "encoder.gate")


class Callers:
    """A thread per body, each sending one request; their answers (status and error code) or exceptions."""

    def __init__(self, url: str, bodies: list[dict[str, object]]) -> None:
        self.outcomes: list[str] = []
        self._threads = [threading.Thread(target=self._call, args=(url, body)) for body in bodies]
        for thread in self._threads:
            thread.start()

    def _call(self, url: str, body: dict[str, object]) -> None:
        try:
            response = httpx.post(url, json=body, timeout=30)
            code = response.json()["error"]["code"] if response.status_code != 200 else ""
            self.outcomes.append(f"{response.status_code} {code}".strip())
        except httpx.HTTPError as exc:
            self.outcomes.append(type(exc).__name__)

    def join(self) -> list[str]:
        for thread in self._threads:
            thread.join(timeout=30)
        return self.outcomes


def stop_and_time(server: Server) -> float:
    started = time.perf_counter()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=GRACE_S + 10)
    return time.perf_counter() - started


def test_the_orchestrator_answers_503_to_calls_cut_off_and_exits_within_its_grace(
    held_embedding: GatedServer, head_server: HeadServer, tmp_path: Path
) -> None:
    log = tmp_path / "orchestrator.log"
    orchestrating = running_orchestrator(held_embedding.url, head_server, log, graceful_shutdown_s=str(GRACE_S))
    with orchestrating as orchestrator, held_embedding.hold():
        callers = Callers(f"{orchestrator.url}/classify", [{"text": "stuck behind a hung encoder"}] * 3)
        held_embedding.wait_for_metric("embedding_batch_texts_count", 1, at_least=True)
        took_s = stop_and_time(orchestrator)
        outcomes = callers.join()
    assert outcomes == ["503 shutting_down"] * 3
    assert took_s < GRACE_S + 1.5


def test_the_embedding_service_answers_503_to_a_hung_batch_and_exits_within_its_grace(
    held_embedding: GatedServer,
) -> None:
    held_embedding.wait_for_metric("embedding_admitted_texts", 0)  # the earlier test's call answered
    with held_embedding.hold():
        callers = Callers(f"{held_embedding.url}/v1/embeddings", [{"input": f"hung {i}"} for i in range(3)])
        held_embedding.wait_for_metric("embedding_batch_texts_count", 1, at_least=True)
        # Every caller in before the signal (three texts admitted): one still connecting would be refused.
        held_embedding.wait_for_metric("embedding_admitted_texts", 3)
        took_s = stop_and_time(held_embedding)
        outcomes = callers.join()
    assert outcomes == ["503 shutting_down"] * 3
    assert took_s < GRACE_S + 1.5
