"""LabelCatalog: each head version's label names, read once from that version's `labels` signature.

Keyed by head and version.

Label names travel with the model version, so they are looked up by the version that answered a
Predict, never cached apart from it: a new version with other labels cannot be misread."""

import asyncio

from orchestrator.clients.head import HeadClient
from service_common.deadline import Deadline
from service_common.errors import DeadlineExceededError


class LabelCatalog:
    def __init__(self, head: HeadClient, fetch_timeout_s: float) -> None:
        self._head = head
        self._fetch_timeout_s = fetch_timeout_s
        self._names: dict[tuple[str, int], list[str]] = {}
        self._fetching: dict[tuple[str, int], asyncio.Task[list[str]]] = {}

    async def names(self, model: str, version: int, dimensions: int, deadline: Deadline) -> list[str]:
        """Concurrent callers for a new version share one fetch, which has its own budget (the head's
        timeout), so a caller with a short deadline cannot fail it for the others; each caller waits at
        most until its own deadline. A failed fetch is tried again by the next caller."""
        key = (model, version)
        if key in self._names:
            return self._names[key]
        task = self._fetching.get(key)
        if task is None:
            fetch = self._head.label_names(model, version, dimensions, Deadline(self._fetch_timeout_s))
            task = asyncio.create_task(fetch)
            self._fetching[key] = task
            task.add_done_callback(lambda done: self._fetched(key, done))
        try:
            async with asyncio.timeout(deadline.remaining_s()):
                return await asyncio.shield(task)
        except TimeoutError:
            raise DeadlineExceededError(
                f"the head did not give {model} version {version}'s label names within the request's deadline",
                code="head_timeout",
            ) from None

    def _fetched(self, key: tuple[str, int], task: asyncio.Task[list[str]]) -> None:
        self._fetching.pop(key, None)
        if not task.cancelled() and task.exception() is None:  # exception(): also marks a failure as seen
            self._names[key] = task.result()
