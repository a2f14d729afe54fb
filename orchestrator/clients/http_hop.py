"""One HTTP call to a downstream hop over its pooled client: the whole call (retries included) bounded by
the hop's budget, connection failures retried by the hop's rule. Callers map the two failures to their
errors."""

import asyncio
from collections.abc import Mapping

from orchestrator.clients.http_client import ConnectError, HttpResponse, PooledHttpClient, TransportError
from orchestrator.retry import UnreachedRetries
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import Deadline


class HopUnreachable(Exception):
    """The hop could not be reached, or dropped the connection without an answer."""


def connect_retries(hop: str, where: str, settings: OrchestratorSettings) -> UnreachedRetries:
    """The retry rule of the HTTP hop at `where`: only a connection that failed before a request went out."""
    return UnreachedRetries(hop, where, settings, lambda exc: isinstance(exc, ConnectError))


async def request(
    client: PooledHttpClient,
    method: str,
    path: str,
    *,
    retries: UnreachedRetries | None,
    timeout_s: float,
    headers: Mapping[str, str],
    content: bytes = b"",
) -> HttpResponse:
    """Raises TimeoutError past `timeout_s`, HopUnreachable on a transport failure; `retries` None: one try."""
    try:
        async with asyncio.timeout(timeout_s):
            if retries is None:
                return await client.request(method, path, headers=headers, content=content)
            return await retries.call(
                lambda: client.request(method, path, headers=headers, content=content), Deadline(timeout_s)
            )
    except (ConnectError, TransportError) as exc:
        raise HopUnreachable(str(exc)) from None
