"""Encoders and heads kept together, end to end with the real services: an encoder with the default's name
and size but other vectors is refused, two encoders serve side by side with each head fed its own, and an
encoder upgrade under looping clients loses no request and never answers from a mismatched pair.

The other encoder is a tiny random BERT with the default's vocabulary, exported under the default's name at
its 384 dimensions; the heads on it are trained by `models.train_head --all` from the shipped data."""

import dataclasses
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
from models.export_encoder import DEFAULT_MODEL_NAME
from stack import services
from stack.procs import free_port
from tests.conftest import (
    HeadServer,
    copy_heads,
    looping,
    publish_version,
    running_embedding,
    running_head,
    running_orchestrator,
)
from tests.models.tiny_checkpoint import write_tiny_checkpoint
from tests.servers import Server, running

pytestmark = pytest.mark.slow

GOOD = "What a wonderful, warm and funny film, I loved every minute."
SPORTS = "The striker scored twice in the cup final and the fans went wild."


@dataclass(frozen=True)
class Other:
    encoder: Path
    identity: str
    trained: Path  # its heads root: <head>/1 of every shipped head, trained on it
    server: Server


@pytest.fixture(scope="module")
def other(encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Other]:
    work = tmp_path_factory.mktemp("other-encoder")
    write_tiny_checkpoint(
        work / "checkpoint", hidden_size=384, max_seq_length=128, tokenizer_from=encoder_dir / TOKENIZER_DIR
    )
    export = [sys.executable, "-m", "models.export_encoder", "--checkpoint", str(work / "checkpoint")]
    subprocess.run([*export, "--output", str(work / "encoder"), "--name", DEFAULT_MODEL_NAME], check=True)
    subprocess.run(
        [sys.executable, "-m", "models.train_head", "--all", "--encoder", str(work / "encoder"), "--epochs", "5"],
        cwd=work,
        check=True,
    )
    identity = EncoderManifest.read(work / "encoder").identity
    with running_embedding(work / "encoder", xla_cache_dir, work / "embedding.log") as server:
        yield Other(work / "encoder", identity, work / "build" / "heads", server)


@dataclass(frozen=True)
class SideBySide:
    head: HeadServer  # sentiment version 1 on the default encoder, topic version 2 on the other
    both: Server  # an orchestrator given both embedding services
    other_only: Server  # an orchestrator given only the other one


@pytest.fixture(scope="module")
def side_by_side(
    embedding_server: Server, other: Other, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SideBySide]:
    work = tmp_path_factory.mktemp("side-by-side")
    root = copy_heads(work / "heads", ["sentiment"])
    shutil.copytree(other.trained / "topic" / "1", root / "topic" / "2")
    urls = f"{embedding_server.url},{other.server.url}"
    with (
        running_head(root, work / "head.log") as head,
        running_orchestrator(urls, head, work / "both.log", ready_interval_s="0.5") as both,
        unready_orchestrator(other.server.url, head, work / "other.log") as other_only,
    ):
        yield SideBySide(head, both, other_only)


@contextmanager
def unready_orchestrator(urls: str, head: HeadServer, log: Path) -> Iterator[Server]:
    """An orchestrator that is never ready (the default head's encoder is not served): waited on at
    /healthz, then until its readiness monitor has read both hops."""
    grpc_port, rest_port = (int(url.rsplit(":", 1)[1]) for url in (head.grpc_target, head.rest_url))
    service = services.orchestrator(
        free_port(), urls, grpc_port, rest_port, head_config_file=str(head.config_path), ready_interval_s="0.5"
    )
    with running(dataclasses.replace(service, ready_path="/healthz"), log, ready_timeout_s=60) as server:
        deadline = time.monotonic() + 30
        while "encoder" not in httpx.get(f"{server.url}/readyz").text:
            assert time.monotonic() < deadline, httpx.get(f"{server.url}/readyz").text
            time.sleep(0.1)
        yield server


def classify(server: Server, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/classify", json=body, timeout=30)


def embed_calls(server: Server) -> float:
    return metric(server, "orchestrator_stage_duration_seconds_count", stage="embed_call") or 0.0


def metric(server: Server, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


def head_versions(server: Server) -> dict[str, list[str]]:
    """/v1/heads' encoders: each one's identity -> the served head versions trained on it."""
    listed = httpx.get(f"{server.url}/v1/heads").json()
    return {e["identity"]: e["head_versions"] for e in listed["encoders"]}


def default_identity(encoder_dir: Path) -> str:
    return EncoderManifest.read(encoder_dir).identity


def test_the_other_encoder_has_the_defaults_name_and_size_and_another_identity(
    embedding_server: Server, other: Other, encoder_dir: Path
) -> None:
    cards = [httpx.get(f"{s.url}/v1/models").json()["data"][0] for s in (embedding_server, other.server)]
    assert [(c["id"], c["dimensions"]) for c in cards] == [(DEFAULT_MODEL_NAME, 384)] * 2
    assert [c["identity"] for c in cards] == [default_identity(encoder_dir), other.identity]
    assert other.identity != default_identity(encoder_dir)


def test_heads_on_another_encoder_are_refused_naming_both_for_head_and_heads(
    side_by_side: SideBySide, other: Other, encoder_dir: Path
) -> None:
    """Given only the other encoder, the default-encoder head never answers labels; the head trained on
    the other encoder does."""
    server, default = side_by_side.other_only, default_identity(encoder_dir)
    for body in ({"text": GOOD}, {"text": GOOD, "head": "sentiment"}, {"texts": [GOOD, SPORTS]}):
        refused = classify(server, body)
        assert refused.status_code == 502, refused.text
        error = refused.json()["error"]
        assert error["code"] == "encoder_mismatch" and error["param"] == "head"
        assert default in error["message"] and other.identity in error["message"]
    fanned = classify(server, {"text": SPORTS, "heads": ["sentiment", "topic"]})
    assert fanned.status_code == 200, fanned.text
    entries = fanned.json()["heads"]
    assert entries["sentiment"]["error"]["code"] == "encoder_mismatch" and "predictions" not in entries["sentiment"]
    assert entries["sentiment"]["error"]["param"] == "heads[0]"
    assert entries["topic"]["model"] == {"name": "topic", "version": "2", "encoder": other.identity}
    alone = classify(server, {"text": GOOD, "heads": ["sentiment"]}).json()["heads"]["sentiment"]
    assert alone["error"]["code"] == "encoder_mismatch"
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503 and default in ready.text  # the default head's encoder is not served
    sentiment = {h["name"]: h for h in httpx.get(f"{server.url}/v1/heads").json()["heads"]}["sentiment"]
    assert not sentiment["ready"] and sentiment["versions"][0]["encoder"] == default
    assert "no embedding service serves" in sentiment["versions"][0]["problem"]


def test_two_encoders_side_by_side_each_head_fed_its_own_with_one_embedding_call_per_encoder(
    side_by_side: SideBySide, embedding_server: Server, other: Other, encoder_dir: Path
) -> None:
    server, texts = side_by_side.both, [GOOD, SPORTS, "Our flight to Lisbon was delayed again."]
    before = embed_calls(server)
    response = classify(server, {"texts": texts, "heads": ["sentiment", "topic"]})
    assert response.status_code == 200, response.text
    assert embed_calls(server) - before == 2  # one call per encoder, for both heads and all three texts
    entries = response.json()["heads"]
    assert entries["sentiment"]["model"] == {
        "name": "sentiment",
        "version": "1",
        "encoder": default_identity(encoder_dir),
    }
    assert entries["topic"]["model"] == {"name": "topic", "version": "2", "encoder": other.identity}
    assert entries["sentiment"]["predictions"][0]["label"] == "positive"
    # Topic's answer is exactly its version 2 on the other encoder's vectors, computed by hand.
    vectors = [
        d["embedding"] for d in httpx.post(f"{other.server.url}/v1/embeddings", json={"input": texts}).json()["data"]
    ]
    direct = httpx.post(
        f"{side_by_side.head.rest_url}/v1/models/topic/versions/2:predict", json={"instances": vectors}
    ).json()["predictions"]
    got = [[p["scores"][label] for label in sorted(p["scores"])] for p in entries["topic"]["predictions"]]
    np.testing.assert_allclose(got, direct, atol=1e-5)
    single = classify(server, {"texts": texts, "head": "sentiment"}).json()
    assert [p["label"] for p in single["predictions"]] == [p["label"] for p in entries["sentiment"]["predictions"]]
    assert head_versions(server) == {default_identity(encoder_dir): ["sentiment/1"], other.identity: ["topic/2"]}


def test_an_encoder_upgrade_under_looping_clients_loses_nothing_and_never_mixes_a_pair(
    embedding_server: Server, other: Other, encoder_dir: Path, tmp_path: Path
) -> None:
    """The procedure of docs/encoders.md: the new encoder served beside the old, a head version trained on
    it published; every answer's version is checked against the encoder that embedded its texts."""
    default = default_identity(encoder_dir)
    pairs = {"1": default, "2": other.identity}
    root = copy_heads(tmp_path / "heads", ["sentiment"])
    urls = f"{embedding_server.url},{other.server.url}"
    seen: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    bodies = [{"text": GOOD}, {"texts": [GOOD, SPORTS], "head": "sentiment"}, {"text": SPORTS, "heads": ["sentiment"]}]

    def client(body: dict[str, Any]) -> Callable[[httpx.Client], None]:
        def call(http: httpx.Client) -> None:
            response = http.post(f"{orchestrator.url}/classify", json=body)
            entry = response.json() if response.status_code == 200 else {"error": response.text}
            entry = entry["heads"]["sentiment"] if "heads" in entry else entry
            if "error" in entry:
                failures.append(response.text)
            else:
                seen[entry["model"]["version"], entry["model"]["encoder"]] += 1

        return call

    with (
        running_head(root, tmp_path / "head.log", heads=["sentiment"]) as head,
        running_orchestrator(urls, head, tmp_path / "orchestrator.log", ready_interval_s="0.5") as orchestrator,
    ):
        with looping(*(client(body) for body in bodies)):
            time.sleep(1.0)
            publish_version(other.trained / "sentiment" / "1", root / "sentiment", 2)
            deadline = time.monotonic() + 30
            while not any(version == "2" for version, _ in seen) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
        assert failures == []
        assert all(pairs[version] == encoder for version, encoder in seen), seen  # no mismatched pair
        assert seen[("1", default)] > 0 and seen[("2", other.identity)] > 0, seen
        # The old encoder can be retired once version 1 is unloaded: no served head version references it.
        retired = {default: [], other.identity: ["sentiment/2"]}
        deadline = time.monotonic() + 20
        while (found := head_versions(orchestrator)) != retired and time.monotonic() < deadline:
            time.sleep(0.2)
        assert found == retired
        assert metric(orchestrator, "orchestrator_encoder_head_versions", encoder=default) == 0
