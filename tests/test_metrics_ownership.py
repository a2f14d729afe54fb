"""Each running service exports its own metric families and none of another service's."""

import httpx
import pytest

from tests.conftest import Pipeline

pytestmark = pytest.mark.slow


def families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_each_service_exports_only_its_own_metrics(pipeline: Pipeline) -> None:
    httpx.post(f"{pipeline.orchestrator.url}/classify", json={"text": "fine"}, timeout=30).raise_for_status()
    orchestrator = families(httpx.get(f"{pipeline.orchestrator.url}/metrics").text)
    embedding = families(httpx.get(f"{pipeline.embedding.url}/metrics").text)
    head = families(httpx.get(f"{pipeline.head.rest_url}/monitoring/prometheus/metrics").text)

    assert {"orchestrator_stage_duration_seconds", "orchestrator_requests_per_call"} <= orchestrator
    assert {"embedding_stage_duration_seconds", "embedding_queue_texts"} <= embedding
    assert ":tensorflow:serving:request_count" in head
    assert "http_request_duration_seconds" in orchestrator & embedding  # the one shared family
    assert not {f for f in orchestrator if f.startswith(("embedding_", ":tensorflow"))}
    assert not {f for f in embedding if f.startswith(("orchestrator_", ":tensorflow"))}
    assert not {f for f in head if f.startswith(("orchestrator_", "embedding_", "http_"))}
