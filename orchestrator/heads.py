"""The heads: which ones TF Serving serves, what each one's versions are, and which version answers for
vectors of which encoder.

Names come from TF Serving's own model config file (the one it is started with): none of its APIs lists
the models it serves. Each head's AVAILABLE versions come from its status, and each version's facts (input
size, labels, encoder stamp) from that version itself, read once (orchestrator.versions). The readiness
monitor refreshes it all, so /classify never waits on a lookup and `GET /v1/heads` always shows what TF
Serving serves now; a version found gone under a call is looked up again at once (`reread`).

A head is routed to the encoder of its newest version whose encoder is served (`route`), and given vectors
only through the version stamped with the encoder that made them (`version_for`): never another's."""

import asyncio
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from orchestrator.clients import tfserving_messages as pb
from orchestrator.clients.embedding import IDENTITY
from orchestrator.clients.head import HeadClient
from orchestrator.single_flight import SingleFlight
from orchestrator.versions import HeadVersion, VersionCatalog
from service_common.deadline import Deadline
from service_common.errors import (
    BadGatewayError,
    DeadlineExceededError,
    NotFoundError,
    ServiceError,
    UnavailableError,
)

logger = logging.getLogger(__name__)

# What a head name may be: safe in a URL path and a log line (TF Serving takes more, we need no more).
HEAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
STAMP_COMMAND = "python -m models.stamp_head"


@dataclass(frozen=True)
class Head:
    name: str
    versions: list[HeadVersion]  # AVAILABLE, ascending (as last read, if it cannot be read now)
    problem: str | None = None  # why it could not be read; None: it was


def configured_heads(config_file: Path) -> list[str]:
    """The model names of a TF Serving model config file (text ModelServerConfig)."""
    config = pb.ModelServerConfig()
    text_format.Parse(config_file.read_text(encoding="utf-8"), config, allow_unknown_field=True)
    return [model.name for model in config.model_config_list.config]


def version_problem(version: HeadVersion, encoders: Collection[str]) -> str | None:
    """Why this version cannot be given vectors: it has no stamp, or its encoder is not served."""
    if version.encoder is None:
        return f"has no encoder stamp (exported before stamps): stamp it with `{STAMP_COMMAND}` or train anew"
    if not IDENTITY.fullmatch(version.encoder):
        return f"has a malformed encoder stamp {version.encoder[:32]!r}: train it anew"
    if version.encoder not in encoders:
        return f"was trained on encoder {version.encoder}, which no embedding service serves"
    return None


class HeadRegistry:
    def __init__(self, config_file: Path, default: str) -> None:
        self.config_file = config_file
        self.default = default
        self._heads: dict[str, Head] = {}
        self._config_error: str | None = None
        self._loaded = False  # the config file was read at least once: only then is a name unknown
        self._rereading: SingleFlight[str, None] = SingleFlight()

    @property
    def heads(self) -> list[Head]:
        return list(self._heads.values())

    def get(self, name: str) -> Head | None:
        return self._heads.get(name)

    def not_ready_reason(self, encoders: Collection[str]) -> str | None:
        """Ready when the default head can answer; other heads' problems are reported, not fatal."""
        if self._config_error is not None and not self._heads:
            return self._config_error
        if self._loaded and self.default not in self._heads:
            return f"the default head {self.default!r} is not in {self.config_file}"
        head = self._heads.get(self.default)
        if head is not None and head.problem is not None:  # even with versions known before: it is down
            return f"the default head {self.default!r} {head.problem}"
        try:
            self.route(self.default, "head", encoders)
        except ServiceError as exc:
            return exc.message
        return None

    def known(self, name: str, param: str) -> None:
        """A 404 for a head the config does not list (once it has been read)."""
        if name not in self._heads and self._loaded:
            served = ", ".join(sorted(self._heads)) or "none"
            raise NotFoundError(
                f"{param}: no head {name!r} is served (served: {served})", param=param, code="head_not_found"
            )

    def route(self, name: str, param: str, encoders: Collection[str], ready: Collection[str] | None = None) -> str:
        """The encoder whose vectors `name` takes (`param`: how the request named it): that of its newest
        AVAILABLE version whose encoder is served, by a ready service when one is (`ready`: the encoders
        with one; None: all of `encoders`). 404 unknown, 503 unreadable or unloaded, 502 for a head no
        served encoder can feed."""
        self.known(name, param)
        head = self._heads.get(name)
        if head is None or not head.versions:
            why = "has not been read yet" if head is None else (head.problem or "has no available version")
            raise UnavailableError(f"head {name!r} {why}", code="head_unavailable")
        if not encoders:
            raise UnavailableError("no embedding service has named its encoder yet", code="embedding_unavailable")
        fed = [v.encoder for v in head.versions if v.encoder is not None and v.encoder in encoders]
        if fed:
            up = [encoder for encoder in fed if ready is None or encoder in ready]
            return (up or fed)[-1]
        newest = head.versions[-1]
        if all(v.encoder is None for v in head.versions):
            raise BadGatewayError(
                f"head {name!r} version {newest.version} {version_problem(newest, encoders)}",
                param=param,
                code="unstamped_head",
            )
        stamped = [v for v in head.versions if v.encoder is not None][-1]
        raise BadGatewayError(
            f"head {name!r} version {stamped.version} was trained on encoder {stamped.encoder}; the embedding "
            f"services serve {', '.join(sorted(encoders))}",
            param=param,
            code="encoder_mismatch",
        )

    def version_for(self, name: str, encoder: str) -> HeadVersion | None:
        """The newest AVAILABLE version of `name` trained on `encoder`: the only ones its vectors may feed."""
        head = self._heads.get(name)
        fed = [v for v in head.versions if v.encoder == encoder] if head else []
        return fed[-1] if fed else None

    async def refresh(self, client: HeadClient, catalog: VersionCatalog, timeout_s: float) -> None:
        """One look at the config file and at every head in it; a head that fails to answer says why."""
        try:
            names = configured_heads(self.config_file)
            self._config_error = None
        except (OSError, text_format.ParseError, UnicodeDecodeError) as exc:
            self._config_error = f"cannot read the head config {self.config_file}: {exc}"
            logger.warning("%s; keeping the heads known before", self._config_error)
            names = list(self._heads)
        looked = await asyncio.gather(*(self._look(client, catalog, name, timeout_s) for name in names))
        for head in looked:
            self._log_change(head)
        for name in set(self._heads) - set(names):
            logger.info("head %s is no longer served", name)
        self._heads = {head.name: head for head in looked}
        self._loaded = self._loaded or self._config_error is None  # names are unknown only once these are known
        catalog.forget(set(self._heads))

    async def reread(
        self, client: HeadClient, catalog: VersionCatalog, name: str, deadline: Deadline, timeout_s: float
    ) -> None:
        """Looks at one head again now (a call found its version gone), on a budget of its own
        (`timeout_s`); concurrent callers share one look, each waiting at most until its own deadline."""
        await self._rereading.run(
            name,
            lambda: self._reread(client, catalog, name, timeout_s),
            deadline,
            lambda: DeadlineExceededError(
                f"the head did not describe {name} within the request's deadline", code="head_timeout"
            ),
        )

    async def _reread(self, client: HeadClient, catalog: VersionCatalog, name: str, timeout_s: float) -> None:
        head = await self._look(client, catalog, name, timeout_s)
        self._log_change(head)
        if name in self._heads or not self._loaded:  # kept unless a refresh dropped it meanwhile; any before the first
            self._heads[name] = head

    def _log_change(self, head: Head) -> None:
        known = self._heads.get(head.name)
        if known is None or known.problem != head.problem or known.versions != head.versions:
            versions = ", ".join(f"{v.version} (encoder {v.encoder or 'unstamped'})" for v in head.versions)
            logger.info(
                "head %s: versions %s%s", head.name, versions or "none", f"; {head.problem}" if head.problem else ""
            )

    async def _look(self, client: HeadClient, catalog: VersionCatalog, name: str, timeout_s: float) -> Head:
        if not HEAD_NAME.fullmatch(name):
            return Head(name, [], "has a name the orchestrator cannot route to (letters, digits, - and _ only)")
        try:
            deadline = Deadline(timeout_s)
            available = await client.versions(name, timeout_s)
            catalog.retain(name, available)
            versions = [await catalog.get(name, v, deadline) for v in available]
        except ServiceError as exc:  # the versions known before stay: a call finds out whether they answer
            known = self._heads.get(name)
            return Head(name, known.versions if known else [], f"cannot be read: {exc.message}")
        return Head(name, versions, None if versions else "has no available version")
