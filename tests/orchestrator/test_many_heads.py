"""Many heads on one embedding, end to end with the real services: chosen per request, fanned out from
one embedding, listed from TF Serving's own status, swapped, added and removed while serving, and a head
trained on an encoder no embedding service serves refused while the others serve."""

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from embedding_service.manifest import EncoderManifest
from models.head_graph import export_head, train_head
from stack import services
from tests.conftest import (
    DEFAULT_ENCODER,
    HeadServer,
    copy_heads,
    looping,
    publish_version,
    running_head,
    running_orchestrator,
)
from tests.servers import Server

pytestmark = pytest.mark.slow

SPORTS = "The striker scored twice in the cup final and the fans went wild."
TRAVEL = "Our flight to Lisbon was delayed, so we missed the train to Porto."
GOOD = "What a wonderful, warm and funny film, I loved every minute."
BAD = "The service was awful and the food was cold, never again."


@dataclass(frozen=True)
class Heads:
    orchestrator: Server
    head: HeadServer


@pytest.fixture(scope="module")
def heads(embedding_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Heads]:
    """Its own head (copies of every shipped head) and orchestrator, checking them twice a second."""
    work = tmp_path_factory.mktemp("many-heads")
    root = copy_heads(work / "heads")
    with (
        running_head(root, work / "head.log") as head,
        running_orchestrator(embedding_server.url, head, work / "orchestrator.log", ready_interval_s="0.5") as orch,
    ):
        yield Heads(orch, head)


def classify(server: Server, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/classify", json=body, timeout=30)


def listed(server: Server) -> dict[str, Any]:
    return {head["name"]: head for head in httpx.get(f"{server.url}/v1/heads").json()["heads"]}


def wait_until(check: Any, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the change was not seen in time")
        time.sleep(0.2)


def labels(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["predictions"]]


def test_each_head_answers_its_obvious_cases(heads: Heads) -> None:
    assert labels(classify(heads.orchestrator, {"texts": [GOOD, BAD]})) == ["positive", "negative"]
    assert labels(classify(heads.orchestrator, {"texts": [GOOD, BAD], "head": "sentiment"})) == ["positive", "negative"]
    topic = classify(heads.orchestrator, {"texts": [SPORTS, TRAVEL], "head": "topic"})
    assert labels(topic) == ["sports", "travel"]
    assert topic.json()["model"]["name"] == "topic"


def test_two_heads_from_one_embedding_equal_the_single_head_answers(heads: Heads, embedding_server: Server) -> None:
    texts = [GOOD, SPORTS, TRAVEL]
    alone = {h: classify(heads.orchestrator, {"texts": texts, "head": h}).json() for h in ("sentiment", "topic")}
    embedded_before = embedding_server.metric("embedding_texts_total")
    both = classify(heads.orchestrator, {"texts": texts, "heads": ["topic", "sentiment"]})
    assert embedding_server.metric("embedding_texts_total") - embedded_before == len(texts)  # embedded once
    answer = both.json()
    assert list(answer["heads"]) == ["topic", "sentiment"]
    for name, single in alone.items():
        entry = answer["heads"][name]
        assert entry["model"] == single["model"]
        for got, expected in zip(entry["predictions"], single["predictions"], strict=True):
            assert got["label"] == expected["label"]
            np.testing.assert_allclose(list(got["scores"].values()), list(expected["scores"].values()), atol=1e-6)


@pytest.mark.parametrize(
    ("selection", "status", "param"),
    [
        ({"head": "nope"}, 404, "head"),
        ({"heads": ["sentiment", "nope"]}, 404, "heads[1]"),
        ({"head": "../x"}, 400, "head"),
        ({"head": "a/b"}, 400, "head"),
        ({"head": "%2F"}, 400, "head"),
        ({"head": "x" * 10_000}, 400, "head"),
        ({"head": ""}, 400, "head"),
        ({"heads": ["topic", "topic"]}, 400, "heads[1]"),
        ({"heads": []}, 400, "heads"),
        ({"heads": ["sentiment", "topic", "sentiment", "a"]}, 400, "heads"),
        ({"heads": ["a/b"]}, 400, "heads[0]"),
        ({"head": "sentiment", "heads": ["topic"]}, 400, "heads"),
        ({"head": 5}, 400, "head"),
        ({"heads": "topic"}, 400, "heads"),
    ],
)
def test_hostile_head_selections_name_the_field(
    heads: Heads, selection: dict[str, Any], status: int, param: str
) -> None:
    response = classify(heads.orchestrator, {"text": GOOD, **selection})
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_heads_are_listed_with_their_versions_labels_and_encoder(heads: Heads, embedding_server: Server) -> None:
    answer = httpx.get(f"{heads.orchestrator.url}/v1/heads").json()
    identity = EncoderManifest.read(DEFAULT_ENCODER).identity
    found = {head["name"]: head for head in answer["heads"]}
    assert set(found) == set(services.HEADS)
    assert found["sentiment"]["default"] and not found["topic"]["default"]
    assert found["topic"]["versions"] == [
        {
            "version": 1,
            "labels": ["business", "health", "sports", "technology", "travel"],
            "input_dimension": 384,
            "encoder": identity,
            "problem": None,
        }
    ]
    assert all(head["ready"] and head["problem"] is None for head in found.values())
    assert answer["encoders"] == [
        {
            "identity": identity,
            "url": embedding_server.url,
            "dimensions": 384,
            "ready": True,
            "problem": None,
            "head_versions": ["sentiment/1", "topic/1"],
        }
    ]


def test_a_new_topic_version_under_looping_clients_loses_nothing(heads: Heads) -> None:
    versions: dict[str, Counter[str]] = {"sentiment": Counter(), "topic": Counter()}
    failures: list[str] = []

    def client(http: httpx.Client) -> None:
        response = http.post(
            f"{heads.orchestrator.url}/classify", json={"text": SPORTS, "heads": ["sentiment", "topic"]}
        )
        if response.status_code != 200:
            failures.append(response.text)
            return
        for name, entry in response.json()["heads"].items():
            if "error" in entry:
                failures.append(str(entry))
            else:
                versions[name][entry["model"]["version"]] += 1

    with looping(client, client, client):
        time.sleep(1.0)
        base = heads.head.heads_root / "topic"
        publish_version(base / "1", base, 2)
        wait_until(lambda: versions["topic"]["2"] > 0)
        time.sleep(1.0)
    assert failures == []
    assert set(versions["sentiment"]) == {"1"}  # only topic's version changed
    assert versions["topic"]["1"] > 0 and versions["topic"]["2"] > 0
    wait_until(lambda: [v["version"] for v in listed(heads.orchestrator)["topic"]["versions"]] == [2])


def test_a_head_added_to_the_config_appears_and_answers_and_a_removed_one_goes(heads: Heads) -> None:
    config = heads.head.config_path
    served = services.read_heads(config)
    shutil.copytree(heads.head.heads_root / "sentiment" / "1", heads.head.heads_root / "mood" / "1")
    services.write_heads(config, {**served, "mood": heads.head.heads_root / "mood"})
    try:
        wait_until(lambda: listed(heads.orchestrator).get("mood", {}).get("ready", False))
        assert labels(classify(heads.orchestrator, {"text": BAD, "head": "mood"})) == ["negative"]
    finally:
        services.write_heads(config, served)
    wait_until(lambda: "mood" not in listed(heads.orchestrator))
    assert classify(heads.orchestrator, {"text": BAD, "head": "mood"}).status_code == 404
    assert labels(classify(heads.orchestrator, {"text": BAD})) == ["negative"]


def test_a_head_trained_on_an_encoder_no_service_serves_is_refused_and_the_others_serve(
    heads: Heads, tmp_path: Path
) -> None:
    """Same dimensions as the served encoder, another stamp: refused (never fed), whatever its size."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 384)).astype(np.float32)
    model = train_head(x, (x[:, 0] > 0).astype(np.int64), 2, hidden=0, epochs=1, seed=0)
    elsewhere = "00000000000000e1"
    base = heads.head.heads_root / "elsewhere"
    export_head(model, ["no", "yes"], base / "1", "elsewhere", {}, encoder=elsewhere)
    config = heads.head.config_path
    served = services.read_heads(config)
    services.write_heads(config, {**served, "elsewhere": base})
    try:
        wait_until(lambda: listed(heads.orchestrator).get("elsewhere", {}).get("versions"))
        entry = listed(heads.orchestrator)["elsewhere"]
        assert not entry["ready"] and elsewhere in entry["problem"]
        assert entry["versions"][0]["encoder"] == elsewhere and entry["versions"][0]["problem"]
        refused = classify(heads.orchestrator, {"text": GOOD, "head": "elsewhere"})
        error = refused.json()["error"]
        assert refused.status_code == 502 and error["code"] == "encoder_mismatch" and elsewhere in error["message"]
        mixed = classify(heads.orchestrator, {"text": GOOD, "heads": ["sentiment", "elsewhere"]}).json()["heads"]
        assert mixed["sentiment"]["predictions"][0]["label"] == "positive"
        assert mixed["elsewhere"]["error"]["code"] == "encoder_mismatch"
        assert mixed["elsewhere"]["error"]["param"] == "heads[1]"
        ready = httpx.get(f"{heads.orchestrator.url}/readyz")
        assert ready.status_code == 200
    finally:
        services.write_heads(config, served)
