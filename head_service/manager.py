"""Model versions on disk -> servables in memory, as TF Serving's manager keeps them.

Polls each base path; a new version is loaded and warmed up while the old one serves, becomes the
"latest" atomically, and only then is the old one unloaded. Requests already running on the old
version hold their own reference and finish. A version that fails to load is reported (state END
with its error) and never replaces the serving one; it is retried when its directory changes.

The set of models can change while serving (`reconfigure`, from a re-read config file): a model left
out of the new list is unloaded the same way (running requests finish, new ones get NOT_FOUND; its
status keeps its versions as END, as TF Serving's state monitor does), a new one is loaded, and a
changed entry applies: labels and version policy at once, a new base path by loading its versions,
each replacing the old path's only once it is available."""

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from head_service.errors import invalid_argument, not_found
from head_service.servable import Servable

logger = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State
# Told of each version load: its directory, and whether it loaded (monitoring.Metrics.count_load).
CountLoad = Callable[[str, bool], None]


@dataclass
class _Failure:
    mtime: float
    message: str


# ASCII digits, few enough for the int64 version fields: superscripts and Arabic-Indic digits pass str.isdigit().
_VERSION_NAME = re.compile(r"[0-9]{1,18}", re.ASCII)


@dataclass(frozen=True)
class _OnDisk:
    path: Path
    mtime: float


def _versions_on_disk(base_path: Path) -> tuple[dict[int, _OnDisk], set[str]]:
    """Child directories named by a version number ('001' is version 1), and the names of the others."""
    if not base_path.is_dir():
        return {}, set()
    versions: dict[int, _OnDisk] = {}
    ignored: set[str] = set()
    for child in base_path.iterdir():
        if not child.is_dir():
            continue
        if _VERSION_NAME.fullmatch(child.name):
            versions[int(child.name)] = _OnDisk(child, child.stat().st_mtime)
        else:
            ignored.add(child.name)
    return versions, ignored


def _aspired(config: model_server_config_pb2.ModelConfig, available: list[int]) -> set[int]:
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(available)
    if kind == "specific":
        return set(policy.specific.versions) & set(available)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return set(sorted(available)[-count:])


class Model:
    """One configured model: its loaded versions, failures and labels."""

    def __init__(self, config: model_server_config_pb2.ModelConfig, count_load: CountLoad) -> None:
        self.config = config
        self._count_load = count_load
        self.name = config.name
        self.base_path = Path(config.base_path)
        self.loaded: dict[int, Servable] = {}
        self.failed: dict[int, _Failure] = {}
        self.unloaded: set[int] = set()
        self._ignored: set[str] = set()  # directories that name no version, each logged once

    def reconfigure(self, config: model_server_config_pb2.ModelConfig) -> None:
        """A changed entry for this model; the next `sync` loads and unloads by it."""
        if config.base_path != self.config.base_path:
            self.failed.clear()  # those were the old path's directories
            self._ignored = set()
        self.config = config
        self.base_path = Path(config.base_path)

    def unload_all(self) -> None:
        """Removed from the config: every version unloaded (requests running on one hold it and finish)."""
        self.unloaded |= set(self.loaded)
        self.loaded = {}

    def resolve(self, version: int | None, label: str | None) -> Servable:
        if label is not None:
            if label not in self.config.version_labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = self.config.version_labels[label]
        if version is None:
            if not self.loaded:
                raise not_found(f"Servable not found for request: Latest({self.name})")
            return self.loaded[max(self.loaded)]
        if version not in self.loaded:
            raise not_found(f"Servable not found for request: Specific({self.name}, {version})")
        return self.loaded[version]

    def status(self, version: int | None) -> list[get_model_status_pb2.ModelVersionStatus]:
        """Versions in descending order, as TF Serving lists them."""
        known = {
            **dict.fromkeys(self.unloaded, State.END),
            **dict.fromkeys(self.failed, State.END),
            **dict.fromkeys(self.loaded, State.AVAILABLE),
        }
        if version is not None:
            if version not in known:
                raise not_found(f"Could not find version {version} of model {self.name}")
            known = {version: known[version]}
        if not known:
            raise not_found(f"Could not find any versions of model {self.name}")
        statuses = []
        for number in sorted(known, reverse=True):
            status = get_model_status_pb2.ModelVersionStatus(version=number, state=known[number])
            status.status.SetInParent()  # TF Serving always reports it, OK included
            if number in self.failed and number not in self.loaded:
                status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                status.status.error_message = self.failed[number].message
            statuses.append(status)
        return statuses

    async def sync(self) -> None:
        """One poll: load aspired versions not yet loaded, then unload loaded ones no longer aspired."""
        on_disk, ignored = await asyncio.to_thread(_versions_on_disk, self.base_path)
        for name in sorted(ignored - self._ignored):
            logger.warning("%s: ignoring directory %r under %s: not a version number", self.name, name, self.base_path)
        self._ignored = ignored
        loadable = [v for v, found in on_disk.items() if v not in self.failed or self.failed[v].mtime != found.mtime]
        aspired = _aspired(self.config, loadable)
        for version in sorted(aspired):
            loaded = self.loaded.get(version)
            if loaded is None or loaded.path.parent != self.base_path:  # not yet, or from a former base path
                await self._load(version, on_disk[version])
        if not (aspired & set(self.loaded)):
            return  # nothing aspired could load: keep serving what there is
        for version in sorted(set(self.loaded) - _aspired(self.config, [*self.loaded, *loadable])):
            logger.info("unloading %s version %d", self.name, version)
            del self.loaded[version]
            self.unloaded.add(version)

    async def _load(self, version: int, found: _OnDisk) -> None:
        path = found.path
        logger.info("loading %s version %d from %s", self.name, version, path)
        try:
            servable = await asyncio.to_thread(Servable, self.name, version, path)
            records = await asyncio.to_thread(servable.warm_up)
        except Exception as exc:  # a broken version must never take the server down
            logger.error("%s version %d failed to load: %s", self.name, version, exc)
            self._count_load(str(path), False)
            self.failed[version] = _Failure(found.mtime, f"Failed to load {path}: {exc}")
            return
        self.failed.pop(version, None)
        self.unloaded.discard(version)
        self.loaded[version] = servable
        self._count_load(str(path), True)
        logger.info("%s version %d available (%d warm-up records)", self.name, version, records)


class ModelManager:
    def __init__(self, configs: list[model_server_config_pb2.ModelConfig], count_load: CountLoad) -> None:
        self._count_load = count_load
        self.models = {config.name: Model(config, count_load) for config in configs}
        self._removed: dict[str, Model] = {}  # left out of the config: only their status remains
        self._lock = asyncio.Lock()  # one sync or reconfiguration at a time

    def model(self, name: str) -> Model:
        """For status: a configured model, or one since removed (its versions END)."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        found = self.models.get(name) or self._removed.get(name)
        if found is None:
            raise not_found(f"Could not find any versions of model {name}")
        return found

    def resolve(self, name: str, version: int | None, label: str | None) -> Servable:
        if name not in self.models:
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise not_found(f"Servable not found for request: {what}")
        return self.models[name].resolve(version, label)

    async def sync(self) -> None:
        async with self._lock:
            await self._sync()

    async def _sync(self) -> None:
        for model in list(self.models.values()):
            await model.sync()

    async def reconfigure(self, configs: list[model_server_config_pb2.ModelConfig]) -> None:
        """The whole model list replaced, as TF Serving's ReloadConfig does: models left out are unloaded,
        new ones loaded (they answer once a version is available), changed ones updated."""
        async with self._lock:
            wanted = {config.name: config for config in configs}
            for name in [name for name in self.models if name not in wanted]:
                logger.info("%s: no longer in the model config, unloading it", name)
                self._removed[name] = self.models.pop(name)
                self._removed[name].unload_all()
            for name, config in wanted.items():
                model = self.models.get(name)
                if model is None:
                    logger.info("%s: added to the model config, loading it from %s", name, config.base_path)
                    self.models[name] = Model(config, self._count_load)
                    if name in self._removed:  # TF Serving still reports the versions it unloaded
                        self.models[name].unloaded = self._removed.pop(name).unloaded
                elif model.config != config:
                    logger.info("%s: its model config changed, applying it", name)
                    model.reconfigure(config)
            await self._sync()

    def all_available(self) -> bool:
        return all(model.loaded for model in self.models.values())

    async def poll(self, interval_s: float) -> None:
        """Never ends by itself: a failed poll (a directory vanishing mid-scan, permissions) is logged
        and the next one tries again, so new versions are never silently ignored."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception:
                logger.exception("polling the model base paths failed; retrying in %.1fs", interval_s)
