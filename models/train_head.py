"""CLI: train a named fastText-style head on encoder embeddings and export it as a TF Serving model version.

A head is averaged (mean-pooled) sentence embedding -> optional small hidden layer -> softmax. `--head NAME`
names it: the data set models/data/NAME/{train,test}.tsv, the base path build/heads/NAME and the model name
in the warm-up record (each overridable but the last). The version directory carries its label names (a
`labels` signature), the identity of the encoder it was trained on (an `encoder` signature: its stamp, from
the encoder's manifest), a warm-up record for TF Serving and its held-out scores (assets.extra/metrics.json).
`--all` retrains every shipped head from its own data into its next version, e.g. after a new encoder."""

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.staging import staged

DATA = Path(__file__).parent / "data"
HEADS_DIR = Path("build") / "heads"
# The heads whose data sets ship in models/data/ (the Makefile's HEADS and the models image train each).
# One set of training defaults serves them all; a head that needed its own would get them here.
SHIPPED_HEADS = ("sentiment", "topic")
EMBED_BATCH = 32
# A directory name and a TF Serving model name (also a URL path segment): no dots, slashes or upper case.
HEAD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Examples:
    labels: list[str]
    texts: list[str]


def read_examples(path: Path) -> Examples:
    """TSV with a `label<TAB>text` header, or JSONL with `label` and `text` fields."""
    labels, texts = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        for number, line in enumerate(lines, start=1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record.get("label"), str) or not isinstance(record.get("text"), str):
                    sys.exit(f"{path}:{number}: each line needs string fields 'label' and 'text'")
                labels.append(record["label"])
                texts.append(record["text"])
    else:
        if not lines or lines[0].split("\t") != ["label", "text"]:
            sys.exit(f"{path}: the first line must be the header 'label<TAB>text'")
        for number, line in enumerate(lines[1:], start=2):
            fields = line.split("\t")
            if len(fields) != 2 or not fields[1].strip():
                sys.exit(f"{path}:{number}: expected 'label<TAB>text'")
            labels.append(fields[0])
            texts.append(fields[1])
    if not texts:
        sys.exit(f"{path}: no examples")
    return Examples(labels, texts)


class Embedder:
    """An exported encoder loaded once, in-process: texts -> sentence embeddings, exactly as the embedding
    service computes them, and the encoder's identity (the stamp of a head trained on them)."""

    def __init__(self, encoder_dir: Path) -> None:
        from embedding_service.buckets import Buckets
        from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
        from embedding_service.tf_encoder import TFEncoder
        from embedding_service.tokenizer import Tokenizer

        manifest = EncoderManifest.read(encoder_dir)
        self.identity = manifest.identity
        self.dimension = manifest.embedding_dim
        self._encoder = TFEncoder(encoder_dir, Buckets.default(EMBED_BATCH, manifest.max_seq_length), xla=False)
        self._tokenizer = Tokenizer(encoder_dir / TOKENIZER_DIR, manifest.max_seq_length)

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        from tqdm import tqdm

        tokenized = self._tokenizer(texts)
        vectors = []
        for start in tqdm(range(0, len(texts), EMBED_BATCH), desc="embedding", unit="batch"):
            vectors += [e.sentence for e in self._encoder([t.ids for t in tokenized[start : start + EMBED_BATCH]])]
        return np.stack(vectors)


def embed(texts: list[str], encoder_dir: Path) -> npt.NDArray[np.float32]:
    """Sentence embeddings from the exported encoder, in-process, exactly as the embedding service computes them."""
    return Embedder(encoder_dir)(texts)


def load_encoder(encoder_dir: Path) -> Embedder:
    """The encoder, or exit with why it cannot be used (not an export, or one made before identities)."""
    try:
        return Embedder(encoder_dir)
    except (OSError, ValueError) as exc:
        sys.exit(f"error: {exc}")


def macro_f1(truth: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64], classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = int(np.sum((predicted == c) & (truth == c)))
        fp = int(np.sum((predicted == c) & (truth != c)))
        fn = int(np.sum((predicted != c) & (truth == c)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def next_version(base: Path) -> int:
    """One past the highest version directory ('²' passes str.isdigit() but names no version)."""
    names = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    versions = [int(name) for name in names if re.fullmatch(r"[0-9]{1,18}", name, re.ASCII)]
    return max(versions, default=0) + 1


@dataclass(frozen=True)
class HeadPaths:
    train: Path
    test: Path
    output: Path


def head_paths(name: str, train: Path | None = None, test: Path | None = None, output: Path | None = None) -> HeadPaths:
    """The head's data files and base path: those given, else models/data/NAME/{train,test}.tsv and
    build/heads/NAME (relative to the working directory). ValueError names a default data file that is missing."""
    defaults = {"train": DATA / name / "train.tsv", "test": DATA / name / "test.tsv"}
    for split, given in (("train", train), ("test", test)):
        if given is None and not defaults[split].is_file():
            shipped = ", ".join(SHIPPED_HEADS)
            raise ValueError(f"--{split}: no {defaults[split]}; pass --{split} (heads with data sets here: {shipped})")
    return HeadPaths(train or defaults["train"], test or defaults["test"], output or HEADS_DIR / name)


def head_name(value: str) -> str:
    """argparse type of --head: a name safe as a directory and as a TF Serving model name."""
    if not HEAD_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: a head name is 1-64 lowercase letters, digits, '-' and '_', starting with a letter or digit"
        )
    return value


def labelled(train: Examples, test: Examples, paths: HeadPaths) -> list[str]:
    """The label names (sorted): at least two, and every held-out label among them."""
    label_names = sorted(set(train.labels))
    unknown = sorted(set(test.labels) - set(label_names))
    if len(label_names) < 2 or unknown:
        sys.exit(f"need at least 2 labels in {paths.train}, and no test label missing from it (missing: {unknown})")
    return label_names


@dataclass(frozen=True)
class Training:
    hidden: int
    epochs: int
    seed: int


def train_and_export(name: str, paths: HeadPaths, version: int | None, embedder: Embedder, training: Training) -> None:
    """Trains head `name` on `embedder`'s vectors and exports it as `version` (default: the next) under
    paths.output, stamped with the embedder's identity."""
    train, test = read_examples(paths.train), read_examples(paths.test)
    label_names = labelled(train, test, paths)
    print(f"head {name}: {len(train.texts)} training, {len(test.texts)} held-out examples, labels {label_names}")
    x_train, x_test = embedder(train.texts), embedder(test.texts)
    y_train = np.array([label_names.index(label) for label in train.labels])
    y_test = np.array([label_names.index(label) for label in test.labels])

    from models.head_graph import export_head, train_head

    model = train_head(
        x_train, y_train, len(label_names), hidden=training.hidden, epochs=training.epochs, seed=training.seed
    )
    predicted = model.predict(x_test, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(predicted == y_test))
    f1 = macro_f1(y_test, predicted, len(label_names))
    print(f"held-out accuracy {accuracy:.4f}, macro F1 {f1:.4f}")

    output = paths.output
    version = version or next_version(output)
    if (output / str(version)).exists():
        sys.exit(f"{output / str(version)} exists: versions are immutable, pick another --version")
    with staged(output / str(version)) as staging:
        metrics = {
            "head": name,
            "accuracy": accuracy,
            "macro_f1": f1,
            "labels": label_names,
            "hidden": training.hidden,
            "epochs": training.epochs,
            "seed": training.seed,
            "train_examples": len(train.texts),
            "test_examples": len(test.texts),
        }
        export_head(model, label_names, staging, name, metrics, encoder=embedder.identity)
    print(f"exported head {name} version {version} to {output / str(version)}, encoder {embedder.identity}")


# What --all decides itself: each shipped head's own data and its next version under build/heads/NAME.
_NOT_WITH_ALL = ("train", "test", "output", "version")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--head",
        type=head_name,
        help=f"the head's name, also its TF Serving model name (shipped: {', '.join(SHIPPED_HEADS)})",
    )
    which.add_argument(
        "--all",
        action="store_true",
        help="retrain every shipped head from its own data into its next version under build/heads/HEAD",
    )
    parser.add_argument("--train", type=Path, help="TSV or JSONL (default: models/data/HEAD/train.tsv)")
    parser.add_argument("--test", type=Path, help="held-out TSV or JSONL (default: models/data/HEAD/test.tsv)")
    parser.add_argument("--encoder", type=Path, default=Path("build/encoder"), help="exported encoder directory")
    parser.add_argument("--output", type=Path, help="TF Serving model base path (default: build/heads/HEAD)")
    parser.add_argument("--version", type=int, help="version number (default: the next one under --output)")
    parser.add_argument("--hidden", type=int, default=0, help="hidden layer units (0: none)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.all and (given := [f"--{flag}" for flag in _NOT_WITH_ALL if getattr(args, flag) is not None]):
        parser.error(
            f"argument --all: not allowed with {', '.join(given)} (--all trains each shipped head from "
            "models/data/HEAD into its next version under build/heads/HEAD)"
        )
    names = SHIPPED_HEADS if args.all else (args.head,)
    try:
        plans = [(name, head_paths(name, args.train, args.test, args.output)) for name in names]
    except ValueError as error:
        parser.error(str(error))

    embedder = load_encoder(args.encoder)
    training = Training(args.hidden, args.epochs, args.seed)
    for name, paths in plans:
        train_and_export(name, paths, args.version, embedder, training)


if __name__ == "__main__":
    main()
