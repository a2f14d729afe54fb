"""The model config file (`--model_config_file`), read at start-up and, with
`--model_config_file_poll_wait_seconds N`, re-read every N seconds while serving, as TF Serving does.

Each change replaces the whole model list (see `ModelManager.reconfigure`). As in TF Serving, a file
that cannot be read, does not parse or lists a model twice is logged and the config in force kept,
and a file with no `model_config_list` at all changes nothing ("Taking no action for empty config")."""

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

if TYPE_CHECKING:  # the manager loads TensorFlow; reading the flags needs no model code
    from head_service.manager import ModelManager

logger = logging.getLogger(__name__)

ModelConfigs = list[model_server_config_pb2.ModelConfig]


class ConfigError(ValueError):
    """A model config file TF Serving would refuse."""


def parse_model_config(text: str) -> ModelConfigs | None:
    """The models of a text ModelServerConfig; None when it has no model_config_list (nothing to do)."""
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as exc:
        raise ConfigError(str(exc)) from exc
    kind = config.WhichOneof("config")
    if kind is None:
        return None
    if kind != "model_config_list":
        raise ConfigError(f"{kind}: the stand-in serves a model_config_list only")
    names: set[str] = set()
    for model in config.model_config_list.config:
        if model.name in names:  # TF Serving's ValidateModelConfigList
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
    return list(config.model_config_list.config)


def read_model_config(path: Path) -> ModelConfigs | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(exc)) from exc
    return parse_model_config(text)


def _snapshot(path: Path) -> tuple[str, ModelConfigs | ConfigError | None]:
    """(what the file says now: its text or why it cannot be read, what that means)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc}", ConfigError(str(exc))
    try:
        return text, parse_model_config(text)
    except ConfigError as exc:
        return text, exc


async def watch_model_config(path: Path, manager: "ModelManager", interval_s: float) -> None:
    """Re-reads `path` every `interval_s` and applies what changed. Never ends by itself; a file left
    broken is logged once, not at every poll."""
    seen: str | None = None
    while True:
        await asyncio.sleep(interval_s)
        now, parsed = await asyncio.to_thread(_snapshot, path)
        if now == seen:
            continue
        seen = now
        if isinstance(parsed, ConfigError):
            logger.error("Failed to read ModelServerConfig file %s: %s; keeping the config in force", path, parsed)
        elif parsed is None:
            logger.info("%s: Taking no action for empty config.", path)
        else:
            try:
                await manager.reconfigure(parsed)
            except Exception:
                logger.exception("applying the model config %s failed", path)
