"""A head version's facts (labels, encoder stamp): one shared fetch per version, each caller bounded by its
own deadline."""

import asyncio

import pytest

from orchestrator.clients.head import ENCODER_SIGNATURE, LABELS_SIGNATURE, PROBABILITIES_SIGNATURE, Signatures
from orchestrator.versions import VersionCatalog
from service_common.deadline import Deadline
from service_common.errors import DeadlineExceededError, UnavailableError


class SlowHead:
    def __init__(self, delay_s: float, failures: int = 0) -> None:
        self.delay_s = delay_s
        self.failures = failures
        self.fetches: list[int] = []

    async def signatures(self, model: str, version: int, timeout_s: float) -> Signatures:
        self.fetches.append(version)
        await asyncio.sleep(self.delay_s)
        if self.failures:
            self.failures -= 1
            raise UnavailableError("the head at x is unavailable", code="head_unavailable")
        stamped = {ENCODER_SIGNATURE} if version % 2 else set()  # even versions: exported before stamps
        return Signatures(384, frozenset({PROBABILITIES_SIGNATURE, LABELS_SIGNATURE} | stamped))

    async def constants(
        self, model: str, version: int, signature: str, dimensions: int, deadline: Deadline
    ) -> list[str]:
        if signature == ENCODER_SIGNATURE:
            return [f"{model}-encoder"]
        return [f"v{version}-negative", f"v{version}-positive"]


async def labels(catalog: VersionCatalog, model: str, version: int, deadline: Deadline) -> list[str]:
    return (await catalog.get(model, version, deadline)).labels


async def test_a_short_deadline_does_not_fail_the_fetch_others_wait_on() -> None:
    head = SlowHead(delay_s=0.1)
    catalog = VersionCatalog(head, fetch_timeout_s=5)  # type: ignore[arg-type]
    impatient = asyncio.create_task(labels(catalog, "sentiment", 2, Deadline(0.01)))
    patient = asyncio.create_task(labels(catalog, "sentiment", 2, Deadline(5)))
    with pytest.raises(DeadlineExceededError) as timed_out:
        await impatient
    assert timed_out.value.code == "head_timeout"
    assert await patient == ["v2-negative", "v2-positive"]
    assert await labels(catalog, "sentiment", 2, Deadline(0.001)) == ["v2-negative", "v2-positive"]  # cached now
    assert head.fetches == [2]


async def test_each_version_has_its_own_names_and_a_failed_fetch_is_tried_again() -> None:
    head = SlowHead(delay_s=0, failures=1)
    catalog = VersionCatalog(head, fetch_timeout_s=5)  # type: ignore[arg-type]
    with pytest.raises(UnavailableError):
        await labels(catalog, "sentiment", 1, Deadline(5))
    assert await labels(catalog, "sentiment", 1, Deadline(5)) == ["v1-negative", "v1-positive"]
    assert await labels(catalog, "sentiment", 3, Deadline(5)) == ["v3-negative", "v3-positive"]
    assert head.fetches == [1, 1, 3]


async def test_each_head_has_its_own_names_for_the_same_version() -> None:
    head = SlowHead(delay_s=0)
    catalog = VersionCatalog(head, fetch_timeout_s=5)  # type: ignore[arg-type]
    await labels(catalog, "sentiment", 1, Deadline(5))
    await labels(catalog, "topic", 1, Deadline(5))
    assert head.fetches == [1, 1]  # one fetch per (head, version)


async def test_a_stamped_version_names_its_encoder_and_one_from_before_stamps_none() -> None:
    catalog = VersionCatalog(SlowHead(delay_s=0), fetch_timeout_s=5)  # type: ignore[arg-type]
    assert (await catalog.get("sentiment", 1, Deadline(5))).encoder == "sentiment-encoder"
    assert (await catalog.get("sentiment", 2, Deadline(5))).encoder is None
