"""Bounded, jittered retries only for calls that never reached their server, and none while the hop is down."""

from collections.abc import Coroutine
from typing import Any

import pytest

from orchestrator import retry
from orchestrator.retry import UnreachedRetries
from orchestrator.settings import OrchestratorSettings
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


def _rule(retries: int, backoff_s: float = 0.001) -> UnreachedRetries:
    settings = OrchestratorSettings(connect_retries=retries, retry_backoff_ms=backoff_s * 1e3)
    return UnreachedRetries("test", "127.0.0.1:1", settings, lambda exc: isinstance(exc, Refused))


def _retry(call: Flaky, retries: int, deadline_s: float = 5.0, backoff_s: float = 0.001) -> Coroutine[Any, Any, str]:
    return _rule(retries, backoff_s).call(call, Deadline(deadline_s))


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


async def test_a_hop_down_is_tried_once_a_call_until_it_answers() -> None:
    rule = _rule(retries=2)
    outage = Flaky([Refused()] * 3)
    with pytest.raises(Refused):
        await rule.call(outage, Deadline(5.0))
    assert (outage.calls, rule.down) == (3, True)  # the retries spent: down
    again = Flaky([Refused()])
    with pytest.raises(Refused):
        await rule.call(again, Deadline(5.0))
    assert again.calls == 1  # no retries while down
    answered = Flaky([ValueError("the server answered an error")])
    with pytest.raises(ValueError):
        await rule.call(answered, Deadline(5.0))
    assert not rule.down  # an answer, even an error, is the hop reached
    blip = Flaky([Refused(), Refused()])
    assert await rule.call(blip, Deadline(5.0)) == "ok"
    assert blip.calls == 3  # retries again


async def test_a_deadline_that_cuts_the_retries_short_is_no_outage() -> None:
    rule = _rule(retries=2, backoff_s=10.0)
    with pytest.raises(Refused):
        await rule.call(Flaky([Refused()]), Deadline(0.0))
    assert not rule.down


async def test_down_lapses_a_moment_after_the_last_failed_try_but_retries_wait_for_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller that skips a hop while it is down (the orchestrator, for a head) tries it again once
    DOWN_S has passed, even with no readiness check to find it; until an answer, that try has no retries."""
    monkeypatch.setattr(retry, "DOWN_S", 0.0)
    rule = _rule(retries=2)
    with pytest.raises(Refused):
        await rule.call(Flaky([Refused()] * 3), Deadline(5.0))
    assert not rule.down  # lapsed at once here
    probe = Flaky([Refused()])
    with pytest.raises(Refused):
        await rule.call(probe, Deadline(5.0))
    assert probe.calls == 1  # still failing: one try
    monkeypatch.setattr(retry, "DOWN_S", 60.0)
    with pytest.raises(Refused):
        await rule.call(Flaky([Refused()]), Deadline(5.0))
    assert rule.down  # each failed try makes it down again
