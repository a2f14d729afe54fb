"""An encoder's identity: 16 hex digits of a SHA-256 over what determines its vectors, and nothing else
(not its name, its source path or its files' bytes), so heads can be stamped with the encoder they fit."""

import hashlib
import json
from pathlib import Path
from typing import Any

from models.checkpoint import Checkpoint

# Part of the hashed description: bump it when the recipe changes, so every identity changes with it.
FORMAT_VERSION = 1
# What the graph does that the weights' shapes do not say (BertConfig's defaults fill what config.json omits).
ARCHITECTURE_KEYS = (
    "hidden_act",
    "layer_norm_eps",
    "num_attention_heads",
    "num_hidden_layers",
    "position_embedding_type",
)
# The embedding service turns these off and cuts texts itself (embedding_service/tokenizer.py).
_TOKENIZER_RUNTIME_KEYS = ("truncation", "padding")


def tokenizer_description(path: Path) -> dict[str, Any]:
    """The fast tokenizer's own JSON, as the embedding service loads it from `path` (normaliser and lower-
    casing, pre-tokeniser, vocabulary, special tokens and how they are put around a text), less the
    truncation and padding the service turns off."""
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(str(path), use_fast=True).backend_tokenizer
    description: dict[str, Any] = json.loads(backend.to_str())
    for key in _TOKENIZER_RUNTIME_KEYS:
        description.pop(key, None)
    return description


def architecture(checkpoint: Checkpoint) -> dict[str, Any]:
    from transformers import BertConfig

    config = BertConfig.from_dict(checkpoint.config)
    return {key: getattr(config, key) for key in ARCHITECTURE_KEYS}


def description(checkpoint: Checkpoint) -> dict[str, Any]:
    """The canonical description the identity digests: weights by name, dtype, shape and content."""
    weights = [
        [name, str(value.dtype), list(value.shape), hashlib.sha256(value.tobytes()).hexdigest()]
        for name, value in sorted(checkpoint.tensors().items())
    ]
    return {
        "format": FORMAT_VERSION,
        "weights": weights,
        "architecture": architecture(checkpoint),
        "tokenizer": tokenizer_description(checkpoint.path),
        "pooling": checkpoint.pooling,
        "normalize": checkpoint.normalize,
        "max_seq_length": checkpoint.max_seq_length,
    }


def digest(described: dict[str, Any]) -> str:
    canonical = json.dumps(described, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


def encoder_identity(checkpoint: Checkpoint) -> str:
    return digest(description(checkpoint))
