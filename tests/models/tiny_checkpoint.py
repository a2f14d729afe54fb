"""Builds a tiny randomly initialised BERT checkpoint in Hugging Face's on-disk layout, without torch."""

from pathlib import Path

from transformers import BertTokenizerFast, TFBertModel

from models.random_checkpoint import Shape, write_checkpoint

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
    """A 2-layer checkpoint (models.random_checkpoint) at `path`; returns the TF model the weights came
    from, as the ground truth. `tokenizer_from`: a tokenizer directory whose vocabulary to use instead of
    the tiny one (each word its own vector)."""
    if tokenizer_from is None:
        path.mkdir(parents=True, exist_ok=True)
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
        (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    shape = Shape(layers=2, hidden=hidden_size, heads=4, intermediate=64)
    return write_checkpoint(
        path,
        shape,
        tokenizer_from=tokenizer_from or path,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
    )
