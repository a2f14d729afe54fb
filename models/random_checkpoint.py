"""A randomly initialised BERT checkpoint of any shape, in Hugging Face's on-disk layout with the
sentence-transformers extras, built offline without torch. Random weights cost the same FLOPs as trained
ones: the benchmarks use it to time shapes whose weights cannot be downloaded here (BERT-base).

`python -m models.random_checkpoint --output DIR [--layers 12 --hidden 768 --heads 12 --intermediate 3072]`"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from transformers import BertConfig, BertTokenizerFast, TFBertModel
from transformers.modeling_tf_pytorch_utils import TransposeType, convert_tf_weight_name_to_pt_weight_name

from models.export_encoder import default_checkpoint


@dataclass(frozen=True)
class Shape:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072


BERT_BASE = Shape()


def write_checkpoint(
    path: Path,
    shape: Shape,
    *,
    tokenizer_from: Path,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 256,
    seed: int = 0,
) -> TFBertModel:
    """Writes config.json, model.safetensors (PyTorch names), the tokenizer of `tokenizer_from` and the
    sentence-transformers extras to `path`; returns the TF model the weights came from."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast.from_pretrained(str(tokenizer_from))
    tokenizer.save_pretrained(str(path))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=max(64, max_seq_length),
    )
    config.save_pretrained(str(path))
    model = TFBertModel(config, add_pooling_layer=False)
    model(model.dummy_inputs, training=False)
    rng = np.random.default_rng(seed)
    state = {}
    for weight in model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(weight.name, tf_weight_shape=weight.shape)
        value = weight.numpy() + rng.normal(0, 0.02, weight.shape).astype(np.float32)
        weight.assign(value)
        state[name] = np.ascontiguousarray(value.T if transpose is TransposeType.SIMPLE else value)
    save_file(state, str(path / "model.safetensors"))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    (path / "1_Pooling").mkdir(exist_ok=True)
    modes = {f"pooling_mode_{key}": key.startswith(pooling) for key in ("mean_tokens", "cls_token", "max_tokens")}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(modes))
    modules = [{"type": "sentence_transformers.models.Transformer"}, {"type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"type": "sentence_transformers.models.Normalize"})
    (path / "modules.json").write_text(json.dumps(modules))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    for field, default in vars(BERT_BASE).items():
        parser.add_argument(f"--{field}", type=int, default=default)
    parser.add_argument("--tokenizer-from", type=Path, help="a checkpoint whose tokenizer to use (default: ours)")
    args = parser.parse_args()
    shape = Shape(args.layers, args.hidden, args.heads, args.intermediate)
    write_checkpoint(args.output, shape, tokenizer_from=args.tokenizer_from or default_checkpoint())


if __name__ == "__main__":
    main()
