"""Label names per head version: one shared fetch per version, each caller bounded by its own deadline."""

import asyncio

import pytest

from orchestrator.labels import LabelCatalog
from service_common.deadline import Deadline
from service_common.errors import DeadlineExceededError, UnavailableError


class SlowHead:
    def __init__(self, delay_s: float, failures: int = 0) -> None:
        self.delay_s = delay_s
        self.failures = failures
        self.fetches: list[int] = []

    async def label_names(self, model: str, version: int, dimensions: int, deadline: Deadline) -> list[str]:
        self.fetches.append(version)
        await asyncio.sleep(self.delay_s)
        if self.failures:
            self.failures -= 1
            raise UnavailableError("the head at x is unavailable", code="head_unavailable")
        return [f"v{version}-negative", f"v{version}-positive"]


async def test_a_short_deadline_does_not_fail_the_fetch_others_wait_on() -> None:
    head = SlowHead(delay_s=0.1)
    catalog = LabelCatalog(head, fetch_timeout_s=5)  # type: ignore[arg-type]
    impatient = asyncio.create_task(catalog.names("sentiment", 2, 384, Deadline(0.01)))
    patient = asyncio.create_task(catalog.names("sentiment", 2, 384, Deadline(5)))
    with pytest.raises(DeadlineExceededError) as timed_out:
        await impatient
    assert timed_out.value.code == "head_timeout"
    assert await patient == ["v2-negative", "v2-positive"]
    assert await catalog.names("sentiment", 2, 384, Deadline(0.001)) == ["v2-negative", "v2-positive"]  # cached now
    assert head.fetches == [2]


async def test_each_version_has_its_own_names_and_a_failed_fetch_is_tried_again() -> None:
    head = SlowHead(delay_s=0, failures=1)
    catalog = LabelCatalog(head, fetch_timeout_s=5)  # type: ignore[arg-type]
    with pytest.raises(UnavailableError):
        await catalog.names("sentiment", 1, 384, Deadline(5))
    assert await catalog.names("sentiment", 1, 384, Deadline(5)) == ["v1-negative", "v1-positive"]
    assert await catalog.names("sentiment", 3, 384, Deadline(5)) == ["v3-negative", "v3-positive"]
    assert head.fetches == [1, 1, 3]


async def test_each_head_has_its_own_names_for_the_same_version() -> None:
    head = SlowHead(delay_s=0)
    catalog = LabelCatalog(head, fetch_timeout_s=5)  # type: ignore[arg-type]
    await catalog.names("sentiment", 1, 384, Deadline(5))
    await catalog.names("topic", 1, 384, Deadline(5))
    assert head.fetches == [1, 1]  # one fetch per (head, version)
