"""CLI: stamp a head version exported before stamps with the encoder it was trained on, as its next version.

`python -m models.stamp_head --head NAME --version V --encoder DIR` checks the claim before it writes it: it
embeds the head's held-out set with DIR's encoder (exactly as models.train_head does), and refuses unless
version V scores there what its metrics.json recorded (at most --tolerance below). The stamped copy, version
V+1 or whatever is next (versions are immutable), serves the same `serving_default` and `labels` signatures
plus `encoder`, with a warm-up record and V's metrics (re-measured, plus the stamp and where it came from)."""

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.staging import staged
from models.train_head import DATA, HEADS_DIR, head_name, load_encoder, macro_f1, next_version, read_examples

EMBEDDINGS_INPUT = "embeddings"


@dataclass(frozen=True)
class Measured:
    accuracy: float
    macro_f1: float
    examples: int


def input_dimension(loaded: Any, source: Path) -> int:
    """The embedding size `serving_default` takes; exits unless it takes exactly [-1, D] `embeddings`."""
    from models.head_graph import SERVING_SIGNATURE

    specs = loaded.signatures[SERVING_SIGNATURE].structured_input_signature[1]
    spec = specs.get(EMBEDDINGS_INPUT)
    if len(specs) != 1 or spec is None or spec.shape.rank != 2 or spec.shape[-1] is None:
        sys.exit(f"error: {source}'s {SERVING_SIGNATURE} does not take one [-1, D] input {EMBEDDINGS_INPUT!r}")
    return int(spec.shape[-1])


def load_unstamped(source: Path) -> Any:
    """The version's SavedModel; exits if it is missing, already stamped, or not a head."""
    import tensorflow as tf

    from models.head_graph import ENCODER_SIGNATURE, LABELS_SIGNATURE, SERVING_SIGNATURE

    if not (source / "saved_model.pb").is_file():
        sys.exit(f"error: {source} is not a head version (no saved_model.pb)")
    loaded = tf.saved_model.load(str(source))
    if ENCODER_SIGNATURE in loaded.signatures:
        dim = input_dimension(loaded, source)
        stamp = loaded.signatures[ENCODER_SIGNATURE](embeddings=tf.zeros((1, dim)))[ENCODER_SIGNATURE]
        sys.exit(f"error: {source} is already stamped with encoder {stamp.numpy()[0, 0].decode()}; nothing to do")
    missing = {SERVING_SIGNATURE, LABELS_SIGNATURE} - set(loaded.signatures)
    if missing:
        sys.exit(f"error: {source} is not a head version: no {', '.join(sorted(missing))} signature")
    return loaded


def measure(loaded: Any, x: np.ndarray, truth: list[str], source: Path) -> Measured:
    """The version's held-out accuracy and macro F1, from its own signatures (its label names included)."""
    import tensorflow as tf

    from models.head_graph import LABELS_SIGNATURE, SERVING_SIGNATURE

    row = loaded.signatures[LABELS_SIGNATURE](embeddings=tf.constant(x[:1]))[LABELS_SIGNATURE].numpy()[0]
    labels = [label.decode() for label in row]
    if unknown := sorted(set(truth) - set(labels)):
        sys.exit(f"error: the held-out set has labels {unknown} that {source} does not know ({labels})")
    probabilities = loaded.signatures[SERVING_SIGNATURE](embeddings=tf.constant(x))["probabilities"]
    predicted = np.asarray(probabilities).argmax(axis=1)
    y = np.array([labels.index(label) for label in truth])
    return Measured(float(np.mean(predicted == y)), macro_f1(y, predicted, len(labels)), len(truth))


def check(measured: Measured, recorded: dict[str, Any], tolerance: float, min_accuracy: float | None) -> str:
    """Exits unless the measured accuracy holds up; returns what it was held against."""
    expected = recorded.get("accuracy")
    if isinstance(expected, int | float):
        floor, against = float(expected) - tolerance, f"recorded {expected:.4f}, tolerance {tolerance}"
    elif min_accuracy is not None:
        floor, against = min_accuracy, f"--min-accuracy {min_accuracy}"
    else:
        sys.exit("error: the version's metrics.json records no accuracy to check against: pass --min-accuracy")
    if measured.accuracy < floor:
        sys.exit(
            f"error: held-out accuracy {measured.accuracy:.4f} on this encoder is below {floor:.4f} ({against}): "
            "the version was not trained on this encoder's vectors; not stamped"
        )
    return against


def save_stamped(loaded: Any, source: Path, target: Path, name: str, identity: str, metrics: dict[str, Any]) -> None:
    """A new SavedModel around the loaded one: its own signatures, and `encoder` beside them."""
    import tensorflow as tf

    from models.head_graph import (
        ENCODER_SIGNATURE,
        LABELS_SIGNATURE,
        SERVING_SIGNATURE,
        embeddings_spec,
        encoder_function,
        write_extras,
    )

    dim = input_dimension(loaded, source)
    module = tf.Module(name="head")
    module.head = loaded  # tracked, so its variables are saved
    module.serve = _calling(loaded.signatures[SERVING_SIGNATURE], embeddings_spec(dim))
    module.labels = _calling(loaded.signatures[LABELS_SIGNATURE], embeddings_spec(dim))
    module.encoder = encoder_function(identity, dim)
    signatures = {
        SERVING_SIGNATURE: module.serve.get_concrete_function(),
        LABELS_SIGNATURE: module.labels.get_concrete_function(),
        ENCODER_SIGNATURE: module.encoder.get_concrete_function(),
    }
    tf.saved_model.save(module, str(target), signatures=signatures)
    if (source / "assets.extra").is_dir():
        shutil.copytree(source / "assets.extra", target / "assets.extra")
    write_extras(target, name, dim, metrics)


def _calling(signature: Any, spec: Any) -> Any:
    """A tf.function that calls a loaded signature, with the same input and outputs."""
    import tensorflow as tf

    # No control flow to convert, and AutoGraph cannot see this function's locally imported `tf`.
    return tf.function(lambda embeddings: signature(embeddings=embeddings), input_signature=[spec], autograph=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", type=head_name, required=True, help="the head's name (its TF Serving model name)")
    parser.add_argument("--version", type=int, required=True, help="the unstamped version to stamp")
    parser.add_argument("--encoder", type=Path, required=True, help="the exported encoder it was trained on")
    parser.add_argument("--base", type=Path, help="the head's model base path (default: build/heads/HEAD)")
    parser.add_argument("--test", type=Path, help="held-out TSV or JSONL (default: models/data/HEAD/test.tsv)")
    parser.add_argument(
        "--tolerance", type=float, default=0.02, help="how far below its recorded accuracy it may score (0.02)"
    )
    parser.add_argument("--min-accuracy", type=float, help="the floor when metrics.json records no accuracy")
    args = parser.parse_args(argv)
    base = args.base or HEADS_DIR / args.head
    source = base / str(args.version)
    test = args.test or DATA / args.head / "test.tsv"
    if not test.is_file():
        parser.error(f"--test: no {test}; pass --test with the head's held-out set")

    from models.head_graph import METRICS_FILE

    loaded = load_unstamped(source)
    metrics_file = source / METRICS_FILE
    recorded = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    examples = read_examples(test)
    embedder = load_encoder(args.encoder)
    dim = input_dimension(loaded, source)
    if embedder.dimension != dim:
        sys.exit(f"error: {source} takes {dim}-dimensional embeddings; {args.encoder} makes {embedder.dimension}")
    measured = measure(loaded, embedder(examples.texts), examples.labels, source)
    against = check(measured, recorded, args.tolerance, args.min_accuracy)
    print(f"head {args.head} version {args.version}: held-out accuracy {measured.accuracy:.4f} ({against})")

    version = next_version(base)
    metrics = {
        **recorded,
        "accuracy": measured.accuracy,
        "macro_f1": measured.macro_f1,
        "test_examples": measured.examples,
        "stamped_from_version": args.version,
        "encoder": embedder.identity,
    }
    if "accuracy" in recorded:
        metrics["stamped_from_accuracy"] = recorded["accuracy"]  # what the version claimed before
    with staged(base / str(version)) as staging:
        save_stamped(loaded, source, staging, args.head, embedder.identity, metrics)
    print(
        f"stamped head {args.head} version {args.version} with encoder {embedder.identity}: "
        f"version {version} at {base / str(version)}"
    )


if __name__ == "__main__":
    main()
