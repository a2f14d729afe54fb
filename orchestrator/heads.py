"""The heads: which ones TF Serving serves, and what each one's versions need and give.

Names come from TF Serving's own model config file (the one it is started with): none of its APIs lists
the models it serves. Each head's AVAILABLE versions come from its status, and each version's input
dimension and label names from that version itself (metadata and its `labels` signature), read once per
version (versions are immutable). The readiness monitor refreshes it all, so /classify never waits on a
lookup and `GET /v1/heads` always shows what TF Serving serves now."""

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from orchestrator.clients import tfserving_messages as pb
from orchestrator.clients.head import HeadClient
from orchestrator.labels import LabelCatalog
from service_common.deadline import Deadline
from service_common.errors import BadGatewayError, NotFoundError, ServiceError

logger = logging.getLogger(__name__)

# What a head name may be: safe in a URL path and a log line (TF Serving takes more, we need no more).
HEAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)


@dataclass(frozen=True)
class HeadVersion:
    version: int
    input_dimension: int | None
    labels: list[str]


@dataclass(frozen=True)
class Head:
    name: str
    versions: list[HeadVersion]  # AVAILABLE, ascending
    problem: str | None = None  # why it cannot answer now; None: it can

    def mismatch(self) -> ServiceError | None:
        """A head that answers, but not for this encoder: its answers would be garbage, so it is refused.
        Any other problem (unreachable, no version yet) is the call's to find: the registry may be a
        second old, and the call reports it exactly."""
        if self.problem is None or not self.versions:
            return None
        return BadGatewayError(f"head {self.name!r} {self.problem}", param="head", code="head_mismatch")


def configured_heads(config_file: Path) -> list[str]:
    """The model names of a TF Serving model config file (text ModelServerConfig)."""
    config = pb.ModelServerConfig()
    text_format.Parse(config_file.read_text(encoding="utf-8"), config, allow_unknown_field=True)
    return [model.name for model in config.model_config_list.config]


class HeadRegistry:
    def __init__(self, config_file: Path, default: str) -> None:
        self.config_file = config_file
        self.default = default
        self._heads: dict[str, Head] = {}
        self._versions: dict[tuple[str, int], HeadVersion] = {}  # versions are immutable: read once
        self._config_error: str | None = None
        self._loaded = False  # the config file was read at least once: only then is a name unknown
        self.encoder_dimension: int | None = None  # as of the last refresh

    @property
    def heads(self) -> list[Head]:
        return list(self._heads.values())

    def get(self, name: str) -> Head | None:
        return self._heads.get(name)

    def problems(self) -> dict[str, str]:
        return {head.name: head.problem for head in self._heads.values() if head.problem}

    def not_ready_reason(self) -> str | None:
        """Ready when the default head can answer; other heads' problems are reported, not fatal."""
        if self._config_error is not None and not self._heads:
            return self._config_error
        head = self._heads.get(self.default)
        if head is None:
            return f"the default head {self.default!r} is not in {self.config_file}"
        return None if head.problem is None else f"the default head {self.default!r} {head.problem}"

    def check(self, name: str, param: str) -> Head:
        """`name` as the head to call for `param` (`head` or `heads[1]`): a 404 if the config does not list
        it, a 502 if it takes another embedding size than the encoder's."""
        head = self._heads.get(name)
        if head is None and not self._loaded:
            return Head(name, [])  # not read yet: the call itself will say whether it exists
        if head is None:
            served = ", ".join(sorted(self._heads)) or "none"
            raise NotFoundError(
                f"{param}: no head {name!r} is served (served: {served})", param=param, code="head_not_found"
            )
        error = head.mismatch()
        if error is not None:
            raise error
        return head

    async def refresh(self, client: HeadClient, labels: LabelCatalog, dimensions: int | None, timeout_s: float) -> None:
        """One look at the config file and at every head in it; a head that fails to answer says why.
        `dimensions`: the encoder's, None while it is not known (then no head is judged on it)."""
        self.encoder_dimension = dimensions
        try:
            names = configured_heads(self.config_file)
            self._config_error = None
        except (OSError, text_format.ParseError, UnicodeDecodeError) as exc:
            self._config_error = f"cannot read the head config {self.config_file}: {exc}"
            logger.warning("%s; keeping the heads known before", self._config_error)
            names = list(self._heads)
        looked = await asyncio.gather(*(self._look(client, labels, name, dimensions, timeout_s) for name in names))
        for head in looked:
            known = self._heads.get(head.name)
            if known is None or known.problem != head.problem or known.versions != head.versions:
                logger.info(
                    "head %s: versions %s%s",
                    head.name,
                    [v.version for v in head.versions],
                    f"; {head.problem}" if head.problem else "",
                )
        gone = set(self._heads) - set(names)
        for name in gone:
            logger.info("head %s is no longer served", name)
        self._heads = {head.name: head for head in looked}
        self._loaded = self._loaded or self._config_error is None  # names are unknown only once these are known
        self._versions = {key: value for key, value in self._versions.items() if key[0] in self._heads}

    async def _look(
        self, client: HeadClient, labels: LabelCatalog, name: str, dimensions: int | None, timeout_s: float
    ) -> Head:
        if not HEAD_NAME.fullmatch(name):
            return Head(name, [], "has a name the orchestrator cannot route to (letters, digits, - and _ only)")
        try:
            versions = [
                await self._version(client, labels, name, v, timeout_s) for v in await client.versions(name, timeout_s)
            ]
        except ServiceError as exc:
            return Head(name, [], f"cannot be read: {exc.message}")
        if not versions:
            return Head(name, [], "has no available version")
        mismatched = [v for v in versions if dimensions is not None and v.input_dimension not in (None, dimensions)]
        if mismatched:
            got = mismatched[-1].input_dimension
            problem = f"takes {got}-dimensional embeddings, and the encoder gives {dimensions}"
            return Head(name, versions, problem)
        return Head(name, versions)

    async def _version(
        self, client: HeadClient, labels: LabelCatalog, name: str, version: int, timeout_s: float
    ) -> HeadVersion:
        known = self._versions.get((name, version))
        if known is not None:
            return known
        dimension = await client.input_dimension(name, version, timeout_s)
        names = await labels.names(name, version, dimension or 1, Deadline(timeout_s))
        self._versions[(name, version)] = found = HeadVersion(version, dimension, names)
        return found
