"""CLI: exported encoder + head version -> one TF Serving SavedModel, token ids in, probabilities out.

Scheme 2 of the deployment comparison: the client tokenises and the head service runs the whole model."""

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from models.export_encoder import step


def export(encoder_dir: Path, head_dir: Path, output: Path) -> None:
    """Writes to a temporary sibling directory and renames it into place, so a reader never sees a
    half-written version. The head's warm-up record is not carried over: its inputs are embeddings."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        with step(1, 3, "importing TensorFlow"):
            import tensorflow as tf

            from models.encoder_graph import INPUT_SIGNATURE
            from models.manifest import SAVED_MODEL_DIR
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
        if output.exists():
            shutil.rmtree(output)
        staging.chmod(0o755)  # mkdtemp makes it owner-only; a server running as another user must read it
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"exported the whole model to {output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", type=Path, required=True, help="exported encoder directory")
    parser.add_argument("--head", type=Path, required=True, help="head version directory, e.g. build/head/1")
    parser.add_argument("--output", type=Path, required=True, help="version directory to write (replaced if it exists)")
    args = parser.parse_args(argv)
    export(args.encoder, args.head, args.output)


if __name__ == "__main__":
    main()
