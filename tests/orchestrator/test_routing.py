"""The pipeline's routing of a head to an embedding service, in-process over stand-ins for the services'
readiness and model cards and for TF Serving: asking the services for their encoders once when none is
known, a 504 (not a crash) for a caller whose deadline passes meanwhile, and a 503 (not a 502) while a
service that may serve a head's encoder has not named it yet."""

import asyncio
from pathlib import Path

import pytest

from orchestrator.encoders import EmbeddingEndpoints
from orchestrator.heads import HeadRegistry
from orchestrator.pipeline import Pipeline
from orchestrator.versions import VersionCatalog
from service_common.deadline import Deadline
from service_common.errors import DeadlineExceededError, UnavailableError
from tests.orchestrator.test_heads import Serving, refresh, write_config


class Service:
    """An embedding service's client: ready (after `delay_s`) and naming `identity`, or not ready."""

    def __init__(self, url: str, identity: str, *, ready: bool = True, delay_s: float = 0.0) -> None:
        self.url = url
        self.identity: str | None = None
        self._identity = identity
        self.ready = ready
        self.delay_s = delay_s
        self.checks = 0

    async def check_ready(self, timeout_s: float) -> None:
        self.checks += 1
        await asyncio.sleep(self.delay_s)
        if not self.ready:
            raise UnavailableError("the embedding service is not ready: warming up", code="embedding_unavailable")

    async def describe(self, timeout_s: float) -> None:
        self.identity = self._identity


async def pipeline(tmp_path: Path, serving: Serving, *services: Service) -> Pipeline:
    write_config(tmp_path / "models.config", "sentiment")
    registry = HeadRegistry(tmp_path / "models.config", "sentiment")
    await refresh(registry, serving)
    endpoints = EmbeddingEndpoints(list(services), 5.0)  # type: ignore[arg-type]
    return Pipeline(endpoints, serving, VersionCatalog(serving, 1.0), registry, 1.0)  # type: ignore[arg-type]


async def test_with_no_encoder_known_the_services_are_asked_once_for_every_waiting_request(tmp_path: Path) -> None:
    old = Service("http://old", "e1" * 8, delay_s=0.05)
    routed = await pipeline(tmp_path, Serving({"sentiment": {1: "e1" * 8}}), old)
    found = await asyncio.gather(*(routed.route("sentiment", "head", Deadline(5)) for _ in range(5)))
    assert found == ["e1" * 8] * 5 and old.checks == 1


async def test_a_caller_whose_deadline_passes_while_the_services_are_asked_gets_a_504(tmp_path: Path) -> None:
    slow = Service("http://slow", "e1" * 8, delay_s=0.2)
    routed = await pipeline(tmp_path, Serving({"sentiment": {1: "e1" * 8}}), slow)
    patient = asyncio.create_task(routed.route("sentiment", "head", Deadline(5)))
    with pytest.raises(DeadlineExceededError) as impatient:
        await routed.route("sentiment", "head", Deadline(0.01))
    assert impatient.value.code == "embedding_timeout"
    assert await patient == "e1" * 8  # the shared check ran on its own budget


async def test_a_head_on_an_encoder_a_service_has_not_named_yet_is_a_503_not_a_mismatch(tmp_path: Path) -> None:
    old, new = Service("http://old", "e1" * 8), Service("http://new", "e2" * 8, ready=False)
    routed = await pipeline(tmp_path, Serving({"sentiment": {2: "e2" * 8}}), old, new)
    with pytest.raises(UnavailableError) as waiting:
        await routed.route("sentiment", "head", Deadline(5))
    assert waiting.value.code == "embedding_unavailable" and "http://new" in waiting.value.message


async def test_a_head_down_is_a_503_before_any_embedding_service_is_asked(tmp_path: Path) -> None:
    """No texts are embedded for a head that cannot take their vectors: the route fails first."""
    serving = Serving({"sentiment": {1: "e1" * 8}})
    service = Service("http://a", "e1" * 8)
    routed = await pipeline(tmp_path, serving, service)
    serving.down = "127.0.0.1:8500"
    with pytest.raises(UnavailableError) as refused:
        await routed.route("sentiment", "head", Deadline(1.0))
    assert refused.value.code == "head_unavailable" and "127.0.0.1:8500" in refused.value.message
    assert (service.checks, service.identity) == (0, None)  # not even asked for its encoder
    serving.down = None
    assert await routed.route("sentiment", "head", Deadline(1.0)) == "e1" * 8
