"""CLI: the int8 encoder, built ahead of time beside an export (`<export>/int8/`, docs/precision.md).

`python -m models.quantize_encoder --encoder build/encoder [--heads build/heads]` (what `make models-int8`
runs) quantizes the export's OpenVINO graph with NNCF's post-training quantization, calibrated on the texts
shipped for it (models/data/calibration/texts.txt: neither benchmark nor held-out texts), then measures it
against fp32 on the shipped heads' held-out sets: every text's cosine, and each head's held-out accuracy.
It writes the OpenVINO IR and a manifest of those figures only when they hold the contract (min cosine at
least 0.99, no head more than 1 point of accuracy below fp32); otherwise it says by how much they missed and
writes nothing."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embedding_service.encoder import sentence_vectors
from embedding_service.int8_manifest import INT8_DIR, INT8_MODEL, MAX_ACCURACY_DROP, MIN_COSINE, CheckedHead, Fidelity
from models.staging import staged
from models.train_head import DATA, HEADS_DIR, SHIPPED_HEADS, Examples, next_version, read_examples

CALIBRATION = DATA / "calibration" / "texts.txt"
BATCH = 32
# BERT's feed-forward down-projections (the second dense layer of each block) carry the activation outliers
# that int8 cannot hold: kept in fp32, they lift the worst held-out cosine from about 0.990 to 0.996.
FP32_LAYERS = r".*layer_\._\d+/output/dense/.*"

Vectors = npt.NDArray[np.float32]


def contract_misses(fidelity: Fidelity, heads: list[CheckedHead], min_cosine: float = MIN_COSINE) -> list[str]:
    """What the build misses of the contract, each with by how much; empty when it holds."""
    misses = []
    if fidelity.min_cosine < min_cosine:
        misses.append(
            f"min cosine to fp32 {fidelity.min_cosine:.4f} is {min_cosine - fidelity.min_cosine:.4f} below {min_cosine}"
        )
    for head in heads:
        drop = head.fp32_accuracy - head.int8_accuracy
        if drop > MAX_ACCURACY_DROP + 1e-9:  # accuracies are ratios of counts: 0.93 - 0.92 is 0.0100000001
            misses.append(
                f"head {head.name} version {head.version}: held-out accuracy {head.int8_accuracy:.4f} at int8 is "
                f"{drop * 100:.2f} points below fp32's {head.fp32_accuracy:.4f}, "
                f"{(drop - MAX_ACCURACY_DROP) * 100:.2f} over the {MAX_ACCURACY_DROP * 100:.0f}-point limit"
            )
    return misses


def quantize(model: Any, calibration: list[npt.NDArray[np.int32]]) -> Any:
    """NNCF's post-training quantization for transformers, one calibration text per sample (unpadded)."""
    import nncf

    samples = [{"input_ids": ids[None, :], "attention_mask": np.ones((1, len(ids)), np.int32)} for ids in calibration]
    return nncf.quantize(
        model,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(patterns=[FP32_LAYERS]),
    )


def check_head(
    name: str, base: Path, identity: str, x_fp32: Vectors, x_int8: Vectors, held_out: Examples
) -> CheckedHead:
    """The newest version of head `name` under `base`, scored on both precisions' vectors; it must be
    stamped with this encoder (a head is only ever checked on its own encoder's vectors)."""
    import tensorflow as tf

    from models.head_graph import ENCODER_SIGNATURE
    from models.stamp_head import input_dimension, measure

    version = next_version(base) - 1
    source = base / str(version)
    loaded = tf.saved_model.load(str(source))
    dim = input_dimension(loaded, source)
    stamp = None
    if ENCODER_SIGNATURE in loaded.signatures:
        answer = loaded.signatures[ENCODER_SIGNATURE](embeddings=tf.zeros((1, dim)))[ENCODER_SIGNATURE]
        stamp = answer.numpy()[0, 0].decode()
    if stamp != identity:
        sys.exit(f"error: {source} is stamped with encoder {stamp}, not {identity}: it cannot be checked on this one")
    fp32 = measure(loaded, x_fp32, held_out.labels, source)
    int8 = measure(loaded, x_int8, held_out.labels, source)
    return CheckedHead(
        name=name, version=version, fp32_accuracy=fp32.accuracy, int8_accuracy=int8.accuracy, examples=fp32.examples
    )


def check_heads(
    root: Path, identity: str, heads: dict[str, Examples], fp32: Vectors, int8: Vectors
) -> list[CheckedHead]:
    """Each head with a version under `root`, on its rows of the held-out vectors (in `heads`' order)."""
    checked, start = [], 0
    for name, examples in heads.items():
        rows = slice(start, start + len(examples.texts))
        start = rows.stop
        if next_version(root / name) == 1:
            print(f"head {name}: no version under {root / name}; not checked (int8 vectors will not feed it)")
            continue
        head = check_head(name, root / name, identity, fp32[rows], int8[rows], examples)
        print(
            f"head {name} version {head.version}: accuracy {head.fp32_accuracy:.4f} fp32, {head.int8_accuracy:.4f} int8"
        )
        checked.append(head)
    return checked


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=Path, required=True, help="the exported encoder (int8/ is written in it)")
    parser.add_argument("--heads", type=Path, default=HEADS_DIR, help="the heads' base paths, HEADS/<name>")
    parser.add_argument("--calibration", type=Path, default=CALIBRATION, help="calibration texts, one per line")
    parser.add_argument(
        "--min-cosine", type=float, default=MIN_COSINE, help=f"a stricter floor than the contract's {MIN_COSINE}"
    )
    args = parser.parse_args(argv)
    if args.min_cosine < MIN_COSINE:
        parser.error(f"--min-cosine: the contract is {MIN_COSINE}; a build may only ask for more")

    import nncf
    import openvino as ov

    from embedding_service.buckets import Buckets
    from embedding_service.int8_manifest import Int8Manifest
    from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
    from embedding_service.ov_encoder import OpenVINOEncoder, read_model
    from embedding_service.tokenizer import Tokenizer

    try:
        manifest = EncoderManifest.read(args.encoder)
    except (OSError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    tokenizer = Tokenizer(args.encoder / TOKENIZER_DIR, manifest.max_seq_length)
    texts = [line for line in args.calibration.read_text(encoding="utf-8").splitlines() if line.strip()]
    model = read_model(args.encoder, "fp32")
    quantized = quantize(model, [t.ids for t in tokenizer(texts)])

    heads = {name: read_examples(DATA / name / "test.tsv") for name in SHIPPED_HEADS}
    held_out = [t.ids for examples in heads.values() for t in tokenizer(examples.texts)]
    buckets = Buckets.exact(BATCH, manifest.max_seq_length)
    fp32 = sentence_vectors(OpenVINOEncoder(args.encoder, buckets, precision="fp32", model=model), held_out)
    int8 = sentence_vectors(OpenVINOEncoder(args.encoder, buckets, precision="int8", model=quantized), held_out)
    cosines = (fp32 * int8).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1))
    fidelity = Fidelity(min_cosine=float(cosines.min()), mean_cosine=float(cosines.mean()), texts=len(cosines))
    print(f"int8 against fp32 on {fidelity.texts} held-out texts: min cosine {fidelity.min_cosine:.4f}")
    checked = check_heads(args.heads, manifest.identity, heads, fp32, int8)

    if misses := contract_misses(fidelity, checked, args.min_cosine):
        sys.exit("error: the int8 model misses its contract; not written:\n  " + "\n  ".join(misses))
    with staged(args.encoder / INT8_DIR) as staging:
        ov.save_model(quantized, str(staging / INT8_MODEL), compress_to_fp16=False)
        Int8Manifest(
            identity=manifest.identity,
            fidelity=fidelity,
            heads=checked,
            calibration_texts=len(texts),
            quantizer=f"nncf {nncf.__version__} (transformer, {FP32_LAYERS} in fp32), openvino {ov.get_version()}",
        ).write(staging)
    print(f"wrote the int8 encoder to {args.encoder / INT8_DIR}")


if __name__ == "__main__":
    main()
