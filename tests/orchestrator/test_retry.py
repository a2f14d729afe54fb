"""Bounded, jittered retries only for calls that never reached their server."""

from collections.abc import Coroutine
from typing import Any

import pytest

from orchestrator.retry import retry_unreached
from service_common.deadline import Deadline


class Refused(Exception):
    pass


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def _retry(call: Flaky, retries: int, deadline_s: float = 5.0, backoff_s: float = 0.001) -> Coroutine[Any, Any, str]:
    return retry_unreached(
        call,
        unreached=lambda exc: isinstance(exc, Refused),
        hop="test",
        retries=retries,
        backoff_s=backoff_s,
        deadline=Deadline(deadline_s),
    )


async def test_connection_failures_are_retried_up_to_the_bound() -> None:
    call = Flaky([Refused(), Refused()])
    assert await _retry(call, retries=2) == "ok"
    assert call.calls == 3
    call = Flaky([Refused(), Refused(), Refused()])
    with pytest.raises(Refused):
        await _retry(call, retries=2)
    assert call.calls == 3


async def test_other_failures_are_never_retried() -> None:
    call = Flaky([ValueError("the server answered an error")])
    with pytest.raises(ValueError, match="answered"):
        await _retry(call, retries=5)
    assert call.calls == 1


async def test_no_retry_that_would_end_past_the_deadline() -> None:
    call = Flaky([Refused(), Refused()])
    with pytest.raises(Refused):  # a spent budget leaves no time for any pause
        await _retry(call, retries=2, deadline_s=0.0, backoff_s=10.0)
    assert call.calls == 1
