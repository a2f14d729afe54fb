"""CLI: exported encoder + head version -> one TF Serving SavedModel, token ids in, probabilities out.

Scheme 2 of the deployment comparison: the client tokenises and the head service runs the whole model."""

import argparse
from pathlib import Path
from typing import Any

from models.export_encoder import step
from models.staging import staged


def export(encoder_dir: Path, head_dir: Path, output: Path) -> None:
    """Staged, so a reader never sees a half-written version. The head's warm-up record is not carried
    over: its inputs are embeddings."""
    with staged(output) as staging:
        with step(1, 3, "importing TensorFlow"):
            import tensorflow as tf

            from embedding_service.manifest import SAVED_MODEL_DIR
            from models.encoder_graph import INPUT_SIGNATURE
        with step(2, 3, f"loading {encoder_dir} and {head_dir}"):
            encoder = tf.saved_model.load(str(encoder_dir / SAVED_MODEL_DIR))
            head = tf.saved_model.load(str(head_dir))
        with step(3, 3, "tracing and saving the SavedModel"):
            module = tf.Module(name="whole")
            module.encoder, module.head = encoder, head  # tracked, so their variables are saved

            # No control flow to convert, and AutoGraph cannot see this function's locally imported `tf`.
            @tf.function(input_signature=INPUT_SIGNATURE, autograph=False)  # type: ignore[untyped-decorator]
            def serve(input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, Any]:
                encoded = encoder.signatures["serving_default"](input_ids=input_ids, attention_mask=attention_mask)
                embeddings = encoded["sentence_embedding"]
                return {"probabilities": head.signatures["serving_default"](embeddings=embeddings)["probabilities"]}

            tf.saved_model.save(module, str(staging), signatures={"serving_default": serve.get_concrete_function()})
    print(f"exported the whole model to {output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", type=Path, required=True, help="exported encoder directory")
    parser.add_argument("--head", type=Path, required=True, help="head version directory, e.g. build/heads/sentiment/1")
    parser.add_argument("--output", type=Path, required=True, help="version directory to write (replaced if it exists)")
    args = parser.parse_args(argv)
    export(args.encoder, args.head, args.output)


if __name__ == "__main__":
    main()
