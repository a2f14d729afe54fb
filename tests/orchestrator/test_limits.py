"""The orchestrator applies the embedding service's own limits, learned from its /v1/models: one source,
refused before queueing, with the caller's field names, at no cost to the embedding service."""

from collections.abc import Iterator

import httpx
import pytest

from orchestrator.settings import OrchestratorSettings
from tests.conftest import GatedServer, HeadServer, running_orchestrator
from tests.servers import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def orchestrator(
    constrained_server: GatedServer, head_server: HeadServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("limits") / "orchestrator.log"
    with running_orchestrator(constrained_server.url, head_server, log) as server:
        yield server


def test_the_embedding_service_publishes_its_limits(constrained_server: GatedServer) -> None:
    card = httpx.get(f"{constrained_server.url}/v1/models").json()["data"][0]
    assert card["limits"] == {"max_texts_per_request": 256, "max_chars_per_text": 500, "max_body_bytes": 4194304}


@pytest.mark.parametrize(
    ("body", "param"),
    [({"texts": ["fine", "y" * 501]}, "texts[1]"), ({"text": "y" * 501}, "text")],
)
def test_a_text_over_the_embedding_services_limit_is_refused_before_any_call(
    orchestrator: Server, constrained_server: GatedServer, body: dict[str, object], param: str
) -> None:
    calls_before = constrained_server.metric("embedding_rejected_texts_total")
    response = httpx.post(f"{orchestrator.url}/classify", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "text_too_long")
    assert "at most 500" in error["message"]
    assert constrained_server.metric("embedding_rejected_texts_total") == calls_before
    assert orchestrator.metric("orchestrator_hop_errors_total") == 0
    fits = httpx.post(f"{orchestrator.url}/classify", json={"text": "y" * 500}, timeout=30)
    assert fits.status_code == 200, fits.text


def test_the_orchestrator_declares_no_limit_of_its_own_for_them() -> None:
    assert not {"max_chars_per_text", "max_texts_per_request"} & set(OrchestratorSettings.model_fields)
