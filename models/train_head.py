"""CLI: train the fastText-style head on encoder embeddings and export it as a TF Serving model version.

The head is averaged (mean-pooled) sentence embedding -> optional small hidden layer -> softmax. The
version directory carries its label names (a `labels` signature) and a warm-up record for TF Serving."""

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

DEFAULT_DATA = Path(__file__).parent / "data" / "sentiment"
EMBED_BATCH = 32


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


def embed(texts: list[str], encoder_dir: Path) -> npt.NDArray[np.float32]:
    """Sentence embeddings from the exported encoder, in-process, exactly as the embedding service computes them."""
    from tqdm import tqdm

    from embedding_service.buckets import Buckets
    from embedding_service.encoder import TFEncoder
    from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
    from embedding_service.tokenizer import Tokenizer

    manifest = EncoderManifest.read(encoder_dir)
    encoder = TFEncoder(
        encoder_dir, Buckets.default(EMBED_BATCH, manifest.max_seq_length), xla=False, mixed_precision=False
    )
    tokenized = Tokenizer(encoder_dir / TOKENIZER_DIR, manifest.max_seq_length)(texts)
    vectors = []
    for start in tqdm(range(0, len(texts), EMBED_BATCH), desc="embedding", unit="batch"):
        vectors += [e.sentence for e in encoder([t.ids for t in tokenized[start : start + EMBED_BATCH]])]
    return np.stack(vectors)


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=Path, default=DEFAULT_DATA / "train.tsv", help="TSV or JSONL")
    parser.add_argument("--test", type=Path, default=DEFAULT_DATA / "test.tsv", help="held-out TSV or JSONL")
    parser.add_argument("--encoder", type=Path, default=Path("build/encoder"), help="exported encoder directory")
    parser.add_argument("--output", type=Path, default=Path("build/head"), help="TF Serving model base path")
    parser.add_argument("--version", type=int, help="version number (default: the next one under --output)")
    parser.add_argument("--model-name", default="head", help="model name in the warm-up record")
    parser.add_argument("--hidden", type=int, default=0, help="hidden layer units (0: none)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train, test = read_examples(args.train), read_examples(args.test)
    label_names = sorted(set(train.labels))
    unknown = sorted(set(test.labels) - set(label_names))
    if len(label_names) < 2 or unknown:
        sys.exit(f"need at least 2 labels in {args.train}, and no test label missing from it (missing: {unknown})")
    print(f"{len(train.texts)} training and {len(test.texts)} held-out examples, labels {label_names}")
    x_train, x_test = embed(train.texts, args.encoder), embed(test.texts, args.encoder)
    y_train = np.array([label_names.index(label) for label in train.labels])
    y_test = np.array([label_names.index(label) for label in test.labels])

    from models.head_graph import export_head, train_head

    model = train_head(x_train, y_train, len(label_names), hidden=args.hidden, epochs=args.epochs, seed=args.seed)
    predicted = model.predict(x_test, verbose=0).argmax(axis=1)
    accuracy = float(np.mean(predicted == y_test))
    f1 = macro_f1(y_test, predicted, len(label_names))
    print(f"held-out accuracy {accuracy:.4f}, macro F1 {f1:.4f}")

    version = args.version or next_version(args.output)
    if (args.output / str(version)).exists():
        sys.exit(f"{args.output / str(version)} exists: versions are immutable, pick another --version")
    with staged(args.output / str(version)) as staging:
        metrics = {
            "accuracy": accuracy,
            "macro_f1": f1,
            "labels": label_names,
            "seed": args.seed,
            "train_examples": len(train.texts),
            "test_examples": len(test.texts),
        }
        export_head(model, label_names, staging, args.model_name, metrics)
    print(f"exported version {version} to {args.output / str(version)}")


if __name__ == "__main__":
    main()
