"""VersionCatalog: what each head version is, read once from TF Serving, keyed by head and version.

A version's facts travel with it (versions are immutable): the embedding size it takes (metadata), its
label names (its `labels` signature) and the identity of the encoder it was trained on (its `encoder`
signature; a version exported before stamps has none). They are read from the version itself, never kept
apart from it, so a new version with other labels or another encoder cannot be misread."""

from dataclasses import dataclass

from orchestrator.clients.head import ENCODER_SIGNATURE, LABELS_SIGNATURE, HeadClient
from orchestrator.single_flight import SingleFlight
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
        self._fetching: SingleFlight[tuple[str, int], HeadVersion] = SingleFlight()

    async def get(self, model: str, version: int, deadline: Deadline) -> HeadVersion:
        """Concurrent callers for a new version share one fetch, on the head's timeout; each waits at
        most until its own deadline."""
        key = (model, version)
        if key in self._known:
            return self._known[key]
        return await self._fetching.run(
            key,
            lambda: self._fetch(model, version, Deadline(self._fetch_timeout_s)),
            deadline,
            lambda: DeadlineExceededError(
                f"the head did not describe {model} version {version} within the request's deadline",
                code="head_timeout",
            ),
        )

    def retain(self, model: str, versions: list[int]) -> None:
        """Forgets `model`'s versions that are no longer available: were one of their numbers served
        again, it would be read anew, not taken for what it was."""
        self._known = {key: value for key, value in self._known.items() if key[0] != model or key[1] in versions}

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
        self._known[(model, version)] = found = HeadVersion(version, signatures.input_dimension, labels, encoder)
        return found
