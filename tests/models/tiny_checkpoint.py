"""Builds a tiny randomly initialised BERT checkpoint in Hugging Face's on-disk layout, without torch."""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from transformers import BertConfig, BertTokenizerFast, TFBertModel
from transformers.modeling_tf_pytorch_utils import TransposeType, convert_tf_weight_name_to_pt_weight_name

WORDS = [
    "the",
    "good",
    "bad",
    "film",
    "food",
    "service",
    "great",
    "terrible",
    "love",
    "hate",
    "very",
    "not",
    "is",
    "was",
    "it",
    "this",
    "and",
    "or",
]


def write_tiny_checkpoint(
    path: Path,
    *,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 32,
    hidden_size: int = 32,
    tokenizer_from: Path | None = None,
) -> TFBertModel:
    """Writes config.json, model.safetensors (PyTorch names), tokenizer and sentence-transformers
    extras to `path`; returns the TF model the weights came from, as the ground truth. `tokenizer_from`:
    a tokenizer directory whose vocabulary to use instead of the tiny one (each word its own vector)."""
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is None:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
        (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    else:
        vocab = (tokenizer_from / "vocab.txt").read_text(encoding="utf-8").splitlines()
        BertTokenizerFast.from_pretrained(str(tokenizer_from)).save_pretrained(str(path))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max(64, max_seq_length),
    )
    config.save_pretrained(str(path))
    model = TFBertModel(config, add_pooling_layer=False)
    model(model.dummy_inputs, training=False)
    rng = np.random.default_rng(0)
    state = {}
    for weight in model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(weight.name, tf_weight_shape=weight.shape)
        value = weight.numpy() + rng.normal(0, 0.02, weight.shape).astype(np.float32)
        weight.assign(value)
        state[name] = np.ascontiguousarray(value.T if transpose is TransposeType.SIMPLE else value)
    save_file(state, str(path / "model.safetensors"))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    (path / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = {
        f"pooling_mode_{key}": key.startswith(pooling) for key in ("mean_tokens", "cls_token", "max_tokens")
    }
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    modules = [
        {"type": "sentence_transformers.models.Transformer"},
        {"type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"type": "sentence_transformers.models.Normalize"})
    (path / "modules.json").write_text(json.dumps(modules))
    return model
