"""One encoder shared by a bulk job, an interactive caller and /classify, with the real services: while
four requests of 256 texts (`user` "bulk-job") flood /v1/embeddings, the interactive caller (`user` "web")
and /classify get only 200s, and the flood only 200s or 429s; with the encoder held and the queue full
of the flood, callers within their share still get in. Lanes come from keys only: two keyed lanes of
weights 4:1, short texts against long ones, share the encoder's tokens by weight with length grouping on;
`user` never selects a lane; and the queue bound holds while identical texts join and their first
callers leave."""

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatedServer, HeadServer, Pipeline, running_embedding, running_orchestrator
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
    refusals_before = lane_metric(constrained_server, "embedding_lane_refusals_total", "anonymous")
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
    assert lane_metric(constrained_server, "embedding_lane_refusals_total", "anonymous") == refusals_before + 2


FAST_KEY, BULK_KEY = "fast-lane-key-0001", "bulk-lane-key-0002"
# ~120 tokens: a bulk document.
LONG_TEXT = " ".join(["the quarterly catalogue entry lists every product with its price and its stock"] * 9)


@pytest.fixture(scope="module")
def keyed_server(
    encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatedServer]:
    """The service on its default settings (length grouping on), with two lane keys, `fast` of weight 4 and
    `bulk` of weight 1, and an encoder the test can hold."""
    logs = tmp_path_factory.mktemp("keyed")
    gate = logs / "encoder.gate"
    with running_embedding(
        encoder_dir,
        xla_cache_dir,
        logs / "keyed.log",
        lane_keys=f"fast:{FAST_KEY},bulk:{BULK_KEY}",
        lane_weights="orchestrator:4,fast:4",
        test_encoder_gate=str(gate),
    ) as server:
        yield GatedServer(server, gate)


def closed(server: Server) -> float:
    """Requests whose client left before they were answered (logged and counted as 499)."""
    text = httpx.get(f"{server.url}/metrics").text
    prefix = "http_request_duration_seconds_count{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and 'status="499"' in line
    )


def wait_for_closed(server: Server, count: float) -> None:
    deadline = time.monotonic() + 10
    while closed(server) < count:
        assert time.monotonic() < deadline, f"the server saw no client leave: {closed(server)} of {count}"
        time.sleep(0.02)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_two_keyed_lanes_share_the_encoders_tokens_by_weight(keyed_server: GatedServer) -> None:
    """Both kept backlogged, `fast` (weight 4: 16 short texts a request, 16 callers) against `bulk`
    (weight 1: 64 texts of ~120 tokens a request, 4 callers): fast's share of the tokens is 0.80."""
    url = f"{keyed_server.url}/v1/embeddings"
    numbers = itertools.count()
    stop = asyncio.Event()

    async def caller(key: str, texts: int, text: str) -> None:
        while not stop.is_set():
            batch = [f"{text} {next(numbers)}" for _ in range(texts)]  # every text new: nothing from the cache
            answer = await client.post(url, json={"input": batch, "encoding_format": "base64"}, headers=bearer(key))
            assert answer.status_code == 200, answer.text

    def tokens() -> dict[str, float]:
        return {lane: lane_metric(keyed_server, "embedding_lane_tokens_total", lane) for lane in ("fast", "bulk")}

    def queued(lane: str) -> float:
        return lane_metric(keyed_server, "embedding_lane_queued_texts", lane)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=32)) as client:
        callers = [asyncio.create_task(caller(FAST_KEY, 16, "a short query")) for _ in range(16)]
        callers += [asyncio.create_task(caller(BULK_KEY, 64, LONG_TEXT)) for _ in range(4)]
        await asyncio.sleep(2)  # both lanes backlogged
        before = await asyncio.to_thread(tokens)
        backlogged = []
        for _ in range(12):
            await asyncio.sleep(1)
            backlogged.append(await asyncio.to_thread(lambda: queued("fast") > 0 and queued("bulk") > 0))
        after = await asyncio.to_thread(tokens)
        stop.set()
        await asyncio.gather(*callers)
    fast, bulk = (after[lane] - before[lane] for lane in ("fast", "bulk"))
    assert all(backlogged), backlogged
    assert abs(fast / (fast + bulk) - 0.80) <= 0.05, f"fast got {fast / (fast + bulk):.3f} of {fast + bulk:.0f} tokens"


def test_user_never_selects_a_lane(keyed_server: GatedServer, embedding_server: Server) -> None:
    """Without a key, `user` names a flow of the anonymous lane, even as a configured lane or a key's name;
    with a key, the key's lane counts, whatever `user` says."""
    cases = [
        (embedding_server, {}, "orchestrator", "anonymous"),
        (keyed_server, {}, "fast", "anonymous"),
        (keyed_server, bearer(BULK_KEY), "fast", "bulk"),
        (keyed_server, bearer("sk-not-one-of-ours"), "bulk", "anonymous"),
    ]
    for server, headers, user, lane in cases:
        lanes = ("orchestrator", "fast", "bulk", "anonymous")
        before = {name: lane_metric(server, "embedding_lane_texts_total", name) for name in lanes}
        answer = httpx.post(
            f"{server.url}/v1/embeddings",
            json={"input": f"who am I {time.time_ns()}", "user": user},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
        after = {name: lane_metric(server, "embedding_lane_texts_total", name) for name in lanes}
        assert {name for name in lanes if after[name] != before[name]} == {lane}, (user, headers, before, after)


async def test_the_queue_bound_holds_while_identical_texts_join_and_their_first_callers_leave(
    keyed_server: GatedServer,
) -> None:
    """The encoder held: each round, a caller queues 8 texts, another sends the same 8 (they join), and the
    first leaves. The joined texts stay queued, and their room with them: the texts queued never exceed
    the room held. Released, every second caller is answered, and the room is all given back."""
    url = f"{keyed_server.url}/v1/embeddings"
    stamp = time.time_ns()
    seconds: list[asyncio.Task[httpx.Response]] = []
    async with httpx.AsyncClient(timeout=60) as client:
        with keyed_server.hold():
            blocker = asyncio.create_task(client.post(url, json={"input": f"holds the encoder {stamp}"}))
            await asyncio.to_thread(keyed_server.wait_for_metric, "embedding_admitted_texts", 1)
            for round_ in range(12):
                texts = [f"churn {stamp} {round_}-{i}" for i in range(8)]
                shared = keyed_server.metric("embedding_inflight_shared_total")
                first = asyncio.create_task(client.post(url, json={"input": texts, "user": f"first-{round_}"}))
                await asyncio.to_thread(keyed_server.wait_for_metric, "embedding_queue_texts", 8 * (round_ + 1))
                seconds.append(asyncio.create_task(client.post(url, json={"input": texts, "user": f"second-{round_}"})))
                await asyncio.to_thread(keyed_server.wait_for_metric, "embedding_inflight_shared_total", shared + 8)
                left = closed(keyed_server)
                first.cancel()
                await asyncio.to_thread(wait_for_closed, keyed_server, left + 1)  # the server saw it leave
                queued, admitted = (keyed_server.metric(f"embedding_{name}_texts") for name in ("queue", "admitted"))
                assert queued <= admitted, f"round {round_}: {queued} texts queued, room held for {admitted}"
            await asyncio.to_thread(keyed_server.wait_for_metric, "embedding_admitted_texts", 1 + 12 * 8)
        answers = await asyncio.gather(*seconds)
        await blocker
    assert [answer.status_code for answer in answers] == [200] * 12
    keyed_server.wait_for_metric("embedding_admitted_texts", 0)
