"""LabelCatalog: each head version's label names, read once from that version's `labels` signature.

Label names travel with the model version, so they are looked up by the version that answered a
Predict, never cached apart from it: a new version with other labels cannot be misread."""

import asyncio

from orchestrator.clients.head import HeadClient
from service_common.deadline import Deadline


class LabelCatalog:
    def __init__(self, head: HeadClient) -> None:
        self._head = head
        self._names: dict[int, list[str]] = {}
        self._fetching: dict[int, asyncio.Task[list[str]]] = {}

    def known(self, version: int) -> bool:
        return version in self._names

    async def names(self, version: int, dimensions: int, deadline: Deadline) -> list[str]:
        """Concurrent callers for a new version share one fetch; a failed fetch is retried by the next."""
        if version in self._names:
            return self._names[version]
        task = self._fetching.get(version)
        if task is None:
            task = asyncio.create_task(self._head.label_names(version, dimensions, deadline))
            self._fetching[version] = task
            task.add_done_callback(lambda _: self._fetching.pop(version, None))
        names = await asyncio.shield(task)
        self._names[version] = names
        return names
