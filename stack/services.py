"""How each service is started: module, flags and environment, in the one place `make run`, tests and
perf/ share, so they cannot drift apart."""

import functools
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from stack.procs import LOOPBACK

ROOT = Path(__file__).resolve().parent.parent
TFSERVING_CONFIG = ROOT / "head_service" / "tfserving"
MODELS_CONFIG = TFSERVING_CONFIG / "models.config"
MONITORING_CONFIG = TFSERVING_CONFIG / "monitoring.config"
# Where the shipped models.config finds the heads: the models image's /models/heads/<name>/<version>.
SHIPPED_HEADS_ROOT = PurePosixPath("/models/heads")
DEFAULT_HEADS_ROOT = ROOT / "build" / "heads"  # `make models` builds <name>/1 for every shipped head
# TF Serving's flag is whole seconds; tests pass 0.5 to the stand-in.
CONFIG_POLL_WAIT_S = 1.0


def read_config(path: Path) -> model_server_config_pb2.ModelServerConfig:
    """A text ModelServerConfig, as TF Serving reads --model_config_file."""
    return text_format.Parse(path.read_text(encoding="utf-8"), model_server_config_pb2.ModelServerConfig())


def write_config(path: Path, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Replaces `path` in one rename, so a server re-reading it never sees half a file."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text_format.MessageToString(config), encoding="utf-8")
    staging.replace(path)


def read_heads(path: Path = MODELS_CONFIG) -> dict[str, Path]:
    """The config's models: name -> base path, in config order."""
    return {model.name: Path(model.base_path) for model in read_config(path).model_config_list.config}


def write_heads(path: Path, heads: Mapping[str, Path]) -> None:
    """Makes the config at `path` list exactly `heads` (name -> base path), in that order: a head already
    in it keeps its other settings, a new one gets the shipped heads' (latest version only). A server
    polling the file (--model_config_file_poll_wait_seconds) loads the added heads and unloads the others."""
    current = {model.name: model for model in read_config(path).model_config_list.config} if path.exists() else {}
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()
    for name, base_path in heads.items():
        model = config.model_config_list.config.add()
        if name in current:
            model.CopyFrom(current[name])
        else:
            model.model_platform = "tensorflow"
            model.model_version_policy.latest.num_versions = 1
        model.name, model.base_path = name, str(base_path)
    write_config(path, config)


HEADS: tuple[str, ...] = tuple(read_heads())  # the shipped heads, from the one config that ships them
DEFAULT_HEAD = "sentiment"


def local_heads_config(heads_root: Path, path: Path, heads: Iterable[str] = HEADS) -> dict[str, Path]:
    """Writes to `path` the shipped models.config for `heads` (a selection of HEADS), every base path
    /models/heads/<name> moved to `heads_root`/<name>; returns name -> base path."""
    wanted = list(heads)
    unknown = sorted(set(wanted) - set(HEADS))
    if unknown:
        raise ValueError(f"not shipped heads: {unknown} (models.config lists {list(HEADS)})")
    shipped = read_config(MODELS_CONFIG)
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()
    local: dict[str, Path] = {}
    for model in (m for name in wanted for m in shipped.model_config_list.config if m.name == name):
        moved = config.model_config_list.config.add()
        moved.CopyFrom(model)
        local[model.name] = heads_root / PurePosixPath(model.base_path).relative_to(SHIPPED_HEADS_ROOT)
        moved.base_path = str(local[model.name])
    write_config(path, config)
    return local


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    url: str  # where it answers HTTP
    ready_path: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def ready_url(self) -> str:
        return self.url + self.ready_path


def _env(prefix: str, settings: Mapping[str, str]) -> dict[str, str]:
    """{"max_wait_ms": "2"} -> {"EMBEDDING_MAX_WAIT_MS": "2"}."""
    return {f"{prefix}{name.upper()}": value for name, value in settings.items()}


ORCHESTRATOR_LANE = "orchestrator"


@functools.cache
def orchestrator_lane_key() -> str:
    """The orchestrator's lane key, new for each process that starts services (`make run`, a test session):
    the embedding service takes it as a lane key, the orchestrator sends it, so the orchestrator keeps its
    lane and weight with no setup, and no other caller can claim them."""
    return secrets.token_urlsafe(32)


def embedding(port: int, model_dir: Path, **settings: str) -> Service:
    """`settings`: EMBEDDING_* overrides by lower-case name; `lane_keys` defaults to the orchestrator's."""
    settings = {"lane_keys": f"{ORCHESTRATOR_LANE}:{orchestrator_lane_key()}", **settings}
    env = _env("EMBEDDING_", {"host": LOOPBACK, "port": str(port), "model_dir": str(model_dir), **settings})
    return Service("embedding", "embedding_service", f"http://{LOOPBACK}:{port}", "/readyz", env=env)


def tfserving(
    grpc_port: int, rest_port: int, config_path: Path, *flags: str, config_poll_wait_s: float = CONFIG_POLL_WAIT_S
) -> Service:
    """Serves the models of the config file at `config_path`, re-read every `config_poll_wait_s` (edit it
    with `write_heads`); `flags` are more TF Serving flags. Ready once the first listed model has a
    version loaded (its metadata answers): TF Serving opens its ports only once every model has one."""
    first = next(iter(read_heads(config_path)), None)
    if first is None:
        raise ValueError(f"{config_path} lists no model")
    args = (
        *("--port", str(grpc_port), "--rest_api_port", str(rest_port)),
        *("--model_config_file", str(config_path)),
        *("--model_config_file_poll_wait_seconds", f"{config_poll_wait_s:g}"),
        *("--monitoring_config_file", str(MONITORING_CONFIG)),
        *flags,
    )
    return Service("head", "head_service", f"http://{LOOPBACK}:{rest_port}", f"/v1/models/{first}/metadata", args)


def head(
    grpc_port: int,
    rest_port: int,
    heads_root: Path,
    config_path: Path,
    *flags: str,
    heads: Iterable[str] = HEADS,
    config_poll_wait_s: float = CONFIG_POLL_WAIT_S,
) -> Service:
    """The head: TF Serving serving the shipped `heads` (default: all of them) from `heads_root`/<name>,
    from a config written to `config_path` (the shipped models.config, base paths moved) that the caller
    may edit while it serves."""
    local_heads_config(heads_root, config_path, heads)
    return tfserving(grpc_port, rest_port, config_path, *flags, config_poll_wait_s=config_poll_wait_s)


def orchestrator(port: int, embedding_urls: str, head_grpc_port: int, head_rest_port: int, **settings: str) -> Service:
    """`embedding_urls`: comma-separated; `settings`: ORCHESTRATOR_* overrides by lower-case name;
    `embedding_api_key` defaults to its lane key (unless `embedding_api_key_file` is given)."""
    if "embedding_api_key_file" not in settings:
        settings = {"embedding_api_key": orchestrator_lane_key(), **settings}
    env = _env(
        "ORCHESTRATOR_",
        {
            "host": LOOPBACK,
            "port": str(port),
            "embedding_urls": embedding_urls,
            "head_grpc_target": f"{LOOPBACK}:{head_grpc_port}",
            "head_rest_url": f"http://{LOOPBACK}:{head_rest_port}",
            **settings,
        },
    )
    return Service("orchestrator", "orchestrator", f"http://{LOOPBACK}:{port}", "/readyz", env=env)
