"""One encoder shared by a bulk job, an interactive caller and /classify, with the real services: while
four requests of 256 texts (`user` "bulk-job") flood /v1/embeddings, the interactive caller (`user` "web")
and /classify get only 200s, and the flood only 200s or 429s; and with the encoder held and the queue full
of the flood, callers within their share still get in."""

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatedServer, HeadServer, Pipeline, running_orchestrator
from tests.servers import Server

pytestmark = pytest.mark.slow

BULK_WORKERS = 4
BULK_TEXTS = 256


def lane_metric(server: Server, name: str, lane: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f'{name}{{lane="{lane}"'))


async def test_a_bulk_flood_leaves_the_interactive_callers_only_200s(pipeline: Pipeline) -> None:
    embedding = pipeline.embedding.url
    stamp = time.time_ns()  # every text new: the cache must not stand in for the encoder here
    orchestrator_before = lane_metric(pipeline.embedding, "embedding_lane_texts_total", "orchestrator")
    bulk_statuses: list[int] = []
    interactive: list[int] = []
    classify: list[int] = []

    async with httpx.AsyncClient(timeout=120) as client:

        async def bulk(worker: int) -> None:
            texts = [f"bulk {stamp} {worker}-{i}: a catalogue entry to index tonight" for i in range(BULK_TEXTS)]
            answer = await client.post(f"{embedding}/v1/embeddings", json={"input": texts, "user": "bulk-job"})
            bulk_statuses.append(answer.status_code)

        flood = [asyncio.create_task(bulk(worker)) for worker in range(BULK_WORKERS)]
        await asyncio.sleep(0.3)  # the flood is queued
        for i in range(6):
            web = await client.post(
                f"{embedding}/v1/embeddings", json={"input": f"web query {stamp} {i}", "user": "web"}
            )
            interactive.append(web.status_code)
            labels = await client.post(f"{pipeline.orchestrator.url}/classify", json={"text": f"great {stamp} {i}"})
            classify.append(labels.status_code)
        await asyncio.gather(*flood)

    assert interactive == [200] * 6 and classify == [200] * 6
    assert bulk_statuses and set(bulk_statuses) <= {200, 429}
    assert lane_metric(pipeline.embedding, "embedding_lane_texts_total", "orchestrator") >= orchestrator_before + 6


@pytest.fixture(scope="module")
def constrained_pipeline(
    constrained_server: GatedServer, head_server: HeadServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    log = tmp_path_factory.mktemp("logs") / "orchestrator-constrained.log"
    with running_orchestrator(constrained_server.url, head_server, log) as orchestrator:
        yield Pipeline(orchestrator, constrained_server, head_server)


async def test_a_full_queue_makes_room_for_callers_within_their_share(
    constrained_pipeline: Pipeline, constrained_server: GatedServer
) -> None:
    """The encoder held, the bulk lane fills the whole queue (256 texts); the web caller and /classify,
    each within its share, still get in: the bulk lane's newest request gives its room back (429)."""
    url = f"{constrained_server.url}/v1/embeddings"
    stamp = time.time_ns()
    refusals_before = lane_metric(constrained_server, "embedding_lane_refusals_total", "other")
    async with httpx.AsyncClient(timeout=60) as client:
        with constrained_server.hold():
            flood = [
                asyncio.create_task(
                    client.post(url, json={"input": [f"bulk {stamp} {w}-{i}" for i in range(64)], "user": "bulk-job"})
                )
                for w in range(4)
            ]
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_admitted_texts", 256)
            over_share = await client.post(url, json={"input": f"bulk {stamp} more", "user": "bulk-job"})
            web = asyncio.create_task(client.post(url, json={"input": f"web {stamp}", "user": "web"}))
            labels = asyncio.create_task(
                client.post(f"{constrained_pipeline.orchestrator.url}/classify", json={"text": f"fine {stamp}"})
            )
            await asyncio.to_thread(constrained_server.wait_for_metric, "embedding_admitted_texts", 256 - 64 + 2)
        bulk = [answer.status_code for answer in await asyncio.gather(*flood)]
        answers = await asyncio.gather(web, labels)
    assert over_share.status_code == 429 and int(over_share.headers["retry-after"]) >= 1
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
    assert sorted(bulk) == [200, 200, 200, 429]  # one request pushed out: room for both, no more
    assert lane_metric(constrained_server, "embedding_lane_refusals_total", "other") == refusals_before + 2
