"""VersionCatalog: what each head version is, read once from TF Serving, keyed by head and version.

A version's facts travel with it (versions are immutable): the embedding size it takes (metadata), its
label names (its `labels` signature) and the identity of the encoder it was trained on (its `encoder`
signature; a version exported before stamps has none). They are read from the version itself, never kept
apart from it, so a new version with other labels or another encoder cannot be misread."""

import asyncio
from dataclasses import dataclass

from orchestrator.clients.head import ENCODER_SIGNATURE, LABELS_SIGNATURE, HeadClient
from service_common.deadline import Deadline
from service_common.errors import DeadlineExceededError


@dataclass(frozen=True)
class HeadVersion:
    version: int
    input_dimension: int | None
    labels: list[str]
    encoder: str | None  # the identity of the encoder it was trained on; None: no stamp


class VersionCatalog:
    def __init__(self, head: HeadClient, fetch_timeout_s: float) -> None:
        self._head = head
        self._fetch_timeout_s = fetch_timeout_s
        self._known: dict[tuple[str, int], HeadVersion] = {}
        self._fetching: dict[tuple[str, int], asyncio.Task[HeadVersion]] = {}

    async def get(self, model: str, version: int, deadline: Deadline) -> HeadVersion:
        """Concurrent callers for a new version share one fetch, which has its own budget (the head's
        timeout), so a caller with a short deadline cannot fail it for the others; each caller waits at
        most until its own deadline. A failed fetch is tried again by the next caller."""
        key = (model, version)
        if key in self._known:
            return self._known[key]
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(model, version, Deadline(self._fetch_timeout_s)))
            self._fetching[key] = task
            task.add_done_callback(lambda done: self._fetched(key, done))
        try:
            async with asyncio.timeout(deadline.remaining_s()):
                return await asyncio.shield(task)
        except TimeoutError:
            raise DeadlineExceededError(
                f"the head did not describe {model} version {version} within the request's deadline",
                code="head_timeout",
            ) from None

    def forget(self, models: set[str]) -> None:
        """Drops what is known of heads no longer served."""
        self._known = {key: value for key, value in self._known.items() if key[0] in models}

    async def _fetch(self, model: str, version: int, deadline: Deadline) -> HeadVersion:
        signatures = await self._head.signatures(model, version, deadline.remaining_s())
        dimension = signatures.input_dimension or 1
        labels = await self._head.constants(model, version, LABELS_SIGNATURE, dimension, deadline)
        encoder = None
        if ENCODER_SIGNATURE in signatures.names:
            stamp = await self._head.constants(model, version, ENCODER_SIGNATURE, dimension, deadline)
            encoder = stamp[0] if stamp else ""
        return HeadVersion(version, signatures.input_dimension, labels, encoder)

    def _fetched(self, key: tuple[str, int], task: asyncio.Task[HeadVersion]) -> None:
        self._fetching.pop(key, None)
        if not task.cancelled() and task.exception() is None:  # exception(): also marks a failure as seen
            self._known[key] = task.result()
