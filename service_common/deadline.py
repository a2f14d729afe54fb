"""The caller's time budget: `X-Request-Timeout-Ms` comes in, and what is left of it goes on to every hop.

A relative budget rather than an absolute time, so the hops need no synchronised clocks (gRPC's
`grpc-timeout` works the same way). Without the header, a request gets the service's own timeout."""

import math
import time
from typing import Annotated

from fastapi import Depends, Request

from service_common.errors import InvalidRequestError

TIMEOUT_HEADER = "X-Request-Timeout-Ms"


class Deadline:
    def __init__(self, budget_s: float) -> None:
        self.expires_at = time.monotonic() + budget_s

    def remaining_s(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def budget_s(self, hop_timeout_s: float) -> float:
        """A hop's timeout, cut to what is left of the request's budget."""
        return min(hop_timeout_s, self.remaining_s())

    @staticmethod
    def header_value(budget_s: float) -> str:
        return str(max(1, math.floor(budget_s * 1e3)))


def deadline_from(header: str | None, default_s: float) -> Deadline:
    if header is None:
        return Deadline(default_s)
    try:
        budget_ms = float(header)
    except ValueError:
        budget_ms = math.nan
    if not (math.isfinite(budget_ms) and budget_ms > 0):
        raise InvalidRequestError(
            f"{TIMEOUT_HEADER} must be a positive number of milliseconds, got {header[:40]!r}",
            param=TIMEOUT_HEADER,
            code="invalid_timeout",
        )
    return Deadline(min(default_s, budget_ms / 1e3))


async def get_deadline(request: Request) -> Deadline:
    """The request's deadline; the app's `state.settings` holds the default (`request_timeout_s`)."""
    return deadline_from(request.headers.get(TIMEOUT_HEADER), request.app.state.settings.request_timeout_s)


DeadlineDep = Annotated[Deadline, Depends(get_deadline)]
