"""Reads a Hugging Face BERT-family checkpoint directory, with sentence-transformers extras when present."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from embedding_service.manifest import Pooling

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# Weights a sentence encoder does not use: BERT's pooler head and a buffer PyTorch stores.
UNUSED_WEIGHTS = ("pooler.", "embeddings.position_ids")
_ST_POOLING_KEYS: dict[str, Pooling] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
_ST_NORMALIZE = "sentence_transformers.models.Normalize"


class CheckpointError(ValueError):
    """The directory is not a usable BERT checkpoint; the message says what is missing or wrong."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict[str, Any]
    weights: Path
    pooling: Pooling
    normalize: bool
    max_seq_length: int

    @classmethod
    def read(cls, path: Path) -> "Checkpoint":
        if not path.is_dir():
            raise CheckpointError(f"checkpoint directory {path} does not exist")
        missing = []
        if not (path / "config.json").is_file():
            missing.append("config.json")
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            missing.append("*.safetensors (weights)")
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            missing.append(" or ".join(TOKENIZER_FILES) + " (tokenizer)")
        if missing:
            raise CheckpointError(f"{path} is not a Hugging Face checkpoint: missing {', '.join(missing)}")
        if len(weights) > 1:
            raise CheckpointError(f"{path} holds sharded weights {[w.name for w in weights]}; merge them first")
        config = _read_json(path / "config.json")
        if config.get("model_type") != "bert":
            raise CheckpointError(
                f"{path}/config.json has model_type {config.get('model_type')!r}; only 'bert' is supported"
            )
        return cls(
            path=path,
            config=config,
            weights=weights[0],
            pooling=_pooling(path),
            normalize=_normalize(path),
            max_seq_length=_max_seq_length(path, config),
        )

    def tensors(self) -> dict[str, npt.NDArray[Any]]:
        """The weights the encoder uses, named without the `bert.` prefix (UNUSED_WEIGHTS left out)."""
        from safetensors.numpy import load_file

        state = {name.removeprefix("bert."): value for name, value in load_file(str(self.weights)).items()}
        return {name: value for name, value in state.items() if not name.startswith(UNUSED_WEIGHTS)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _pooling(path: Path) -> Pooling:
    """sentence-transformers' 1_Pooling/config.json when present; mean pooling otherwise."""
    config_path = path / "1_Pooling" / "config.json"
    if not config_path.is_file():
        return "mean"
    config = _read_json(config_path)
    chosen = [mode for key, mode in _ST_POOLING_KEYS.items() if config.get(key)]
    others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _ST_POOLING_KEYS]
    if len(chosen) != 1 or others:
        raise CheckpointError(f"{config_path}: exactly one of mean, cls or max pooling is supported")
    return chosen[0]


def _normalize(path: Path) -> bool:
    """True when modules.json lists a Normalize module (as all-MiniLM-L6-v2 does)."""
    modules_path = path / "modules.json"
    if not modules_path.is_file():
        return False
    return any(module.get("type") == _ST_NORMALIZE for module in _read_json(modules_path))


def _max_seq_length(path: Path, config: dict[str, Any]) -> int:
    positions = int(config.get("max_position_embeddings", 512))
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        return min(int(_read_json(st_config)["max_seq_length"]), positions)
    return positions
