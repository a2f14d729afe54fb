"""The identity rule where the orchestrator's features meet: the real coalescer, pipeline, head registry,
version catalog and embedding endpoints on random histories of head versions loaded and unloaded (stamped
with one of three encoders, or not at all), embedding services that start late or change encoder under
the orchestrator, readiness refreshes, and one-head and fan-out requests arriving in between. The stand-ins
for TF Serving and the embedding services are deterministic; each embedding service writes its encoder's
number into the vectors it makes, so the stand-in head sees which encoder made what it is given.

Checked: no head version is ever given vectors of an encoder other than its stamp; every answer names the
encoder that made its vectors, and that is its version's stamp; every request is answered or refused with
a ServiceError (none hangs, none crashes).

Versions are immutable, as TF Serving's are: a loaded version never changes, and a number is served again
for another encoder only after a refresh has seen it gone (a number reused faster than the orchestrator
looks cannot be told apart, behind one API, from the version it was: docs/encoders.md says never to).

The one-line bugs each rule catches: `version_for` matching on the head alone, not its encoder (a version
fed another encoder's vectors); `Classified` built with the routed encoder instead of the one the answer
named (an answer naming the wrong encoder); `retain` dropped from a look (a version number served again
with another stamp taken for what it was)."""

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.clients.embedding import Embedded
from orchestrator.clients.head import (
    ENCODER_SIGNATURE,
    LABELS_SIGNATURE,
    PROBABILITIES_SIGNATURE,
    ModelNotFoundError,
    Signatures,
)
from orchestrator.coalescer import Coalescer
from orchestrator.encoders import EmbeddingEndpoints
from orchestrator.heads import HeadRegistry
from orchestrator.pipeline import Classified, Pipeline
from orchestrator.versions import VersionCatalog
from service_common.deadline import Deadline
from service_common.errors import ServiceError, UnavailableError
from tests.orchestrator.test_heads import write_config

ENCODERS = ("e0" * 8, "e1" * 8, "e2" * 8)
HEADS = ("sentiment", "topic")


@dataclass
class Serving:
    """TF Serving: each head's available versions and their stamps (None: none), version 1 of each on the
    first encoder to begin with; every predict recorded as (head, version, its stamp, the encoder that made
    the vectors)."""

    models: dict[str, dict[int, str | None]] = field(default_factory=lambda: {h: {1: ENCODERS[0]} for h in HEADS})
    fed: list[tuple[str, int, str | None, str]] = field(default_factory=list)
    down: str | None = None  # never down: no call fails unreached

    async def versions(self, model: str, timeout_s: float) -> list[int]:
        await asyncio.sleep(0)
        return sorted(self.models[model])

    async def signatures(self, model: str, version: int, timeout_s: float) -> Signatures:
        await asyncio.sleep(0)
        if version not in self.models[model]:
            raise ModelNotFoundError(f"no version {version}", code="head_model_not_found")
        stamped = {ENCODER_SIGNATURE} if self.models[model][version] is not None else set()
        return Signatures(2, frozenset({PROBABILITIES_SIGNATURE, LABELS_SIGNATURE} | stamped))

    async def constants(
        self, model: str, version: int, signature: str, dimensions: int, deadline: Deadline
    ) -> list[str]:
        await asyncio.sleep(0)
        if version not in self.models[model]:
            raise ModelNotFoundError(f"no version {version}", code="head_model_not_found")
        return [str(self.models[model][version])] if signature == ENCODER_SIGNATURE else ["a", "b"]

    async def predict(self, model: str, version: int, embeddings: np.ndarray, deadline: Deadline) -> np.ndarray:
        await asyncio.sleep(0)
        if version not in self.models[model]:
            raise ModelNotFoundError(f"no version {version}", code="head_model_not_found")
        for made_by in {ENCODERS[int(code)] for code in embeddings[:, 0]}:
            self.fed.append((model, version, self.models[model][version], made_by))
        return np.full((len(embeddings), 2), 0.5, np.float32)


class Service:
    """An embedding service: serves `encoder` once started; names it on every answer."""

    def __init__(self, url: str, encoder: str | None) -> None:
        self.url = url
        self.encoder = encoder  # None: not started yet
        self.identity: str | None = None  # what the orchestrator last learned
        self.limits = None

    async def check_ready(self, timeout_s: float) -> None:
        await asyncio.sleep(0)
        if self.encoder is None:
            raise UnavailableError("the embedding service is not ready: starting", code="embedding_unavailable")

    async def describe(self, timeout_s: float) -> None:
        self.identity = self.encoder

    async def embed(self, texts: list[str], deadline: Deadline, *, chunk: bool) -> Embedded:
        await asyncio.sleep(0)
        if self.encoder is None:
            raise UnavailableError("the embedding service is unavailable", code="embedding_unavailable")
        encoder = self.encoder  # what this answer's header names, learned as the client learns it
        self.identity = encoder
        vectors = np.full((len(texts), 2), ENCODERS.index(encoder), np.float32)
        return Embedded(vectors, encoder, [], [])


events = st.one_of(
    st.tuples(st.just("load"), st.sampled_from(HEADS), st.integers(1, 4), st.sampled_from((*ENCODERS, None))),
    st.tuples(st.just("unload"), st.sampled_from(HEADS), st.integers(1, 4)),
    st.tuples(st.just("serve"), st.integers(0, 1), st.sampled_from(ENCODERS)),
    st.tuples(st.just("refresh")),
    *[st.tuples(st.just("request"), st.sampled_from([("sentiment",), ("topic",), HEADS]), st.booleans())] * 3,
    st.tuples(st.just("yield"), st.integers(1, 5)),
)


async def history(steps: list[tuple[object, ...]], config: Path) -> None:
    serving = Serving()
    services = [Service("http://a", ENCODERS[0]), Service("http://b", None)]
    write_config(config, *HEADS)
    registry = HeadRegistry(config, "sentiment")
    catalog = VersionCatalog(serving, 1.0)  # type: ignore[arg-type]
    endpoints = EmbeddingEndpoints(services, 1.0)  # type: ignore[arg-type]
    pipeline = Pipeline(endpoints, serving, catalog, registry, 1.0)  # type: ignore[arg-type]
    coalescer = Coalescer(pipeline, max_batch_texts=4, max_in_flight=2, max_queue_texts=64)
    await registry.refresh(serving, catalog, 1.0)  # type: ignore[arg-type]
    used: dict[tuple[str, int], str | None] = {(head, 1): ENCODERS[0] for head in HEADS}  # ever served
    seen_gone: set[tuple[str, int]] = set()  # unloaded, and a refresh has seen it
    requests = []
    for step in steps:
        match step:
            case ("load", head, version, stamp):
                key = (str(head), int(version))  # type: ignore[call-overload]
                if key in used and used[key] != stamp and key[1] in serving.models[key[0]]:
                    continue  # a loaded version is immutable
                if key in used and used[key] != stamp and key not in seen_gone:
                    continue  # a number is served again for another encoder only once the orchestrator saw it go
                serving.models[key[0]][key[1]] = used[key] = stamp  # type: ignore[assignment]
                seen_gone.discard(key)
            case ("unload", head, version):
                serving.models[str(head)].pop(int(version), None)  # type: ignore[call-overload]
            case ("serve", index, encoder):
                services[int(index)].encoder = str(encoder)  # type: ignore[call-overload]
            case ("refresh",):
                await endpoints.check(1.0)
                await registry.refresh(serving, catalog, 1.0)  # type: ignore[arg-type]
                seen_gone.update(key for key in used if key[1] not in serving.models[key[0]])
            case ("request", heads, fan_out):
                ask = coalescer.classify(["x", "y"], Deadline(5), "texts", heads, fan_out=bool(fan_out))  # type: ignore[arg-type]
                requests.append(asyncio.ensure_future(ask))
            case ("yield", times):
                for _ in range(int(times)):  # type: ignore[call-overload]
                    await asyncio.sleep(0)
    answers = await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), timeout=10)
    await coalescer.aclose(grace_s=0)
    for model, version, stamp, made_by in serving.fed:
        assert stamp == made_by, f"{model} version {version} (stamped {stamp}) was fed vectors of {made_by}"
    for answer in answers:
        if isinstance(answer, BaseException):
            assert isinstance(answer, ServiceError), repr(answer)
            continue
        for result in answer.values():
            if isinstance(result, Classified):
                made = {made_by for m, v, _, made_by in serving.fed if (m, v) == (result.head, result.version)}
                assert result.encoder in made, (result, made)  # its version was fed that encoder's vectors


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(events, min_size=1, max_size=30))
@example(  # a number served again for another encoder, after the orchestrator saw it go
    steps=[
        ("serve", 1, ENCODERS[1]),
        ("load", "sentiment", 2, ENCODERS[1]),
        ("refresh",),
        ("unload", "sentiment", 2),
        ("refresh",),
        ("load", "sentiment", 2, ENCODERS[2]),
        ("refresh",),
        ("request", ("sentiment",), False),
    ]
)
def test_no_head_version_is_ever_fed_another_encoders_vectors(steps: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as work:
        asyncio.run(history(steps, Path(work) / "models.config"))
