"""Bounded retries with full-jitter exponential backoff, for calls to one hop that never reached its server;
none while that hop is down.

A retry rides out a blip: a pooled connection the server had closed, a restarting server's first refusal.
An outage is another matter. Were every call to wait out its backoffs against a server that is gone, each
would hold one of the coalescer's few call slots for them, and the queue behind would overflow into 429s
that hide what is wrong. So once a call has failed unreached through all its retries, the hop counts as
down: later calls try once, and fail at once with the hop's own error, until any call (a readiness check
included) reaches the server again. A caller may skip a call to a hop that is `down` (the orchestrator does
not embed texts for a head that is down); `down` lasts DOWN_S after each failed try, so that some call tries
again that soon, whatever else does."""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from orchestrator.metrics import HOP_RETRIES_TOTAL
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import Deadline

T = TypeVar("T")
DOWN_S = 1.0  # how long a call that found the hop unreachable makes it `down`

logger = logging.getLogger(__name__)


class UnreachedRetries:
    """The retry rule of one hop's client (one server address): `settings`' connect_retries and
    retry_backoff_ms; `unreached` says whether an error means the call never reached the server, so that
    trying again cannot do the work twice."""

    def __init__(
        self, hop: str, where: str, settings: OrchestratorSettings, unreached: Callable[[Exception], bool]
    ) -> None:
        self._hop, self._where = hop, where
        self._unreached = unreached
        self._retries = settings.connect_retries
        self._backoff_s = settings.retry_backoff_ms / 1e3
        self._failing = False  # no call has reached the server since one failed through all its retries
        self._down_until = 0.0  # monotonic time

    @property
    def down(self) -> bool:
        """Failing, and a try found the server unreachable less than DOWN_S ago."""
        return self._failing and time.monotonic() < self._down_until

    async def call(self, call: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        """Calls `call`; after an unreached failure, tries again up to the bound (none while the hop is
        failing) after a random wait in [0, backoff_s * 2**attempt), never past `deadline`. Any other error
        goes straight to the caller."""
        retries = 0 if self._failing else self._retries
        attempt = 0
        while True:
            try:
                answer = await call()
            except Exception as exc:
                if not self._unreached(exc):
                    self._reached()  # it answered, if with an error
                    raise
                pause_s = random.uniform(0, self._backoff_s * 2**attempt)
                if attempt >= retries or pause_s >= deadline.remaining_s():
                    self._unreachable(attempt >= retries)
                    raise
                HOP_RETRIES_TOTAL.labels(self._hop).inc()
                attempt += 1
                await asyncio.sleep(pause_s)
            else:
                self._reached()
                return answer

    def _unreachable(self, retries_spent: bool) -> None:
        if not retries_spent:
            return
        self._down_until = time.monotonic() + DOWN_S
        if not self._failing:
            self._failing = True
            logger.warning(
                "the %s hop at %s is down: calls try once, without retries, until it answers", self._hop, self._where
            )

    def _reached(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("the %s hop at %s answers again: calls retry connection failures again", self._hop, self._where)
