"""One HTTP call to a downstream hop over its pooled client: the whole call (retries included) bounded by
the hop's budget, connection failures retried. Callers map the two failures to their errors."""

import asyncio
from collections.abc import Mapping

from orchestrator.clients.http_client import ConnectError, HttpResponse, PooledHttpClient, TransportError
from orchestrator.retry import retry_unreached
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import Deadline


class HopUnreachable(Exception):
    """The hop could not be reached, or dropped the connection without an answer."""


async def request(
    client: PooledHttpClient,
    method: str,
    path: str,
    *,
    hop: str,
    timeout_s: float,
    settings: OrchestratorSettings,
    headers: Mapping[str, str],
    content: bytes = b"",
) -> HttpResponse:
    """Raises TimeoutError past `timeout_s`, HopUnreachable on a transport failure."""
    try:
        async with asyncio.timeout(timeout_s):
            return await retry_unreached(
                lambda: client.request(method, path, headers=headers, content=content),
                unreached=lambda exc: isinstance(exc, ConnectError),
                hop=hop,
                retries=settings.connect_retries,
                backoff_s=settings.retry_backoff_ms / 1e3,
                deadline=Deadline(timeout_s),
            )
    except (ConnectError, TransportError) as exc:
        raise HopUnreachable(str(exc)) from None
