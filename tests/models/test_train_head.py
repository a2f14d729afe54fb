"""Head training: heads by name (`--head`, its checks and defaults), deterministic with a seed, any label set,
the scores and the encoder stamp each version records, `--all` (every shipped head into its next version), and
the shipped heads' held-out accuracy (built and served)."""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from embedding_service.manifest import EncoderManifest
from head_service.servable import WARMUP_FILE
from models.head_graph import METRICS_FILE
from models.train_head import SHIPPED_HEADS, HeadPaths, head_name, head_paths, main, read_examples
from stack.services import ROOT
from tests.conftest import HeadServer

DATA = ROOT / "models" / "data"
SENTIMENT = DATA / "sentiment"
ENCODER = ROOT / "build" / "encoder"
HEADS = ROOT / "build" / "heads"
SHIPPED_LABELS = {
    "sentiment": ["negative", "positive"],
    "topic": ["business", "health", "sports", "technology", "travel"],
}
# Measured held-out accuracy (seed 0): sentiment 0.881 (see the note on issue 3), topic 0.930. This floor guards them.
ACCURACY_FLOOR = 0.85


def train(tmp_path: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "models.train_head", "--encoder", str(ENCODER), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def small_split(tmp_path: Path, lines: int) -> tuple[Path, Path]:
    rows = (SENTIMENT / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, body = rows[0], rows[1:]
    picked = body[: lines // 2] + body[-lines // 2 :]
    (tmp_path / "train.tsv").write_text("\n".join([header, *picked]) + "\n", encoding="utf-8")
    (tmp_path / "test.tsv").write_text("\n".join([header, *picked[:6], *picked[-6:]]) + "\n", encoding="utf-8")
    return tmp_path / "train.tsv", tmp_path / "test.tsv"


def warmup_model_name(version_dir: Path) -> str:
    records = list(tf.data.TFRecordDataset(str(version_dir / WARMUP_FILE)))
    assert len(records) == 1
    return str(prediction_log_pb2.PredictionLog.FromString(records[0].numpy()).predict_log.request.model_spec.name)


def held_out_accuracy(version_dir: Path, test_file: Path) -> float:
    """The version's accuracy on a held-out file, recomputed from its saved signatures (labels included)."""
    from models.train_head import embed

    model = tf.saved_model.load(str(version_dir))
    examples = read_examples(test_file)
    x = embed(examples.texts, ENCODER)
    labels = [label.decode() for label in model.signatures["labels"](embeddings=x[:1])["labels"].numpy()[0]]
    predicted = np.asarray(model.signatures["serving_default"](embeddings=tf.constant(x))["probabilities"]).argmax(1)
    return float(np.mean([labels[p] == truth for p, truth in zip(predicted, examples.labels, strict=True)]))


def stamp(version_dir: Path) -> str:
    """The version's `encoder` signature, called in-process: one row per input row, each the identity."""
    model = tf.saved_model.load(str(version_dir))
    dim = model.signatures["serving_default"].structured_input_signature[1]["embeddings"].shape[-1]
    rows = model.signatures["encoder"](embeddings=tf.zeros((3, dim)))["encoder"].numpy()
    assert rows.shape == (3, 1) and len(set(rows.ravel())) == 1
    return str(rows[0, 0].decode())


def probabilities(version_dir: Path, x: np.ndarray) -> np.ndarray:
    model = tf.saved_model.load(str(version_dir))
    return np.asarray(model.signatures["serving_default"](embeddings=tf.constant(x))["probabilities"])


# Heads by name: the checks and defaults, in-process (nothing is trained).


@pytest.mark.parametrize("name", ["sentiment", "topic", "a", "7", "news-2024_v2", "x" * 64])
def test_a_head_name_is_safe_as_a_directory_and_a_model_name(name: str) -> None:
    assert head_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Sentiment", "a.b", "..", "../etc", "a/b", "a b", "-x", "_x", "x" * 65, "héad", "sentiment\n"]
)
def test_an_unsafe_head_name_is_refused(name: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="a head name is 1-64 lowercase letters"):
        head_name(name)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --head --all is required"),
        (["--all", "--head", "topic"], "argument --head: not allowed with argument --all"),
        (["--all", "--train", "t.tsv"], "argument --all: not allowed with --train (--all trains each shipped head"),
        (["--all", "--test", "t.tsv", "--version", "3"], "argument --all: not allowed with --test, --version"),
        (["--all", "--output", "out"], "argument --all: not allowed with --output"),
        (["--head", "../head"], "argument --head: '../head': a head name is"),
        (["--head", "no-such-head"], f"--train: no {DATA / 'no-such-head' / 'train.tsv'}; pass --train"),
        (["--head", "no-such-head", "--train", "t.tsv"], f"--test: no {DATA / 'no-such-head' / 'test.tsv'}"),
    ],
)
def test_the_cli_refuses_a_missing_or_unsafe_head_or_its_missing_data(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_head_name_gives_the_default_data_and_base_path() -> None:
    assert head_paths("topic") == HeadPaths(
        DATA / "topic" / "train.tsv", DATA / "topic" / "test.tsv", Path("build") / "heads" / "topic"
    )
    given = HeadPaths(Path("a.tsv"), Path("b.jsonl"), Path("/srv/heads/x"))
    assert head_paths("mine", given.train, given.test, given.output) == given
    assert head_paths("sentiment", output=Path("out")).output == Path("out")


def test_the_shipped_heads_are_the_makefile_and_model_image_heads() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.findall(r"^HEADS := (.*)$", makefile, re.MULTILINE) == [" ".join(SHIPPED_HEADS)]
    dockerfile = (ROOT / "deploy" / "models.Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    trained = re.findall(
        r'models\.train_head --head (\S+) .*?--output /models/heads/(\S+) --version "\$\{HEAD_VERSION\}"', dockerfile
    )
    assert trained == [(name, name) for name in SHIPPED_HEADS]
    assert sorted(SHIPPED_LABELS) == sorted(SHIPPED_HEADS)


@pytest.mark.parametrize("name", SHIPPED_HEADS)
def test_a_shipped_data_set_is_balanced_and_split(name: str) -> None:
    train_set, test_set = read_examples(DATA / name / "train.tsv"), read_examples(DATA / name / "test.tsv")
    assert len(train_set.texts) + len(test_set.texts) >= 600
    for examples in (train_set, test_set):
        assert sorted(set(examples.labels)) == SHIPPED_LABELS[name]
        assert len({examples.labels.count(label) for label in SHIPPED_LABELS[name]}) == 1, "unbalanced"
    assert not {t.casefold() for t in train_set.texts} & {t.casefold() for t in test_set.texts}
    assert len(test_set.texts) >= 40 * len(SHIPPED_LABELS[name])


# Training (the real encoder, small data sets).


@pytest.mark.slow
def test_the_same_seed_gives_the_same_model(tmp_path: Path) -> None:
    train_file, test_file = small_split(tmp_path, 40)
    for _ in range(2):
        result = train(
            tmp_path,
            "--head",
            "tiny",
            "--train",
            str(train_file),
            "--test",
            str(test_file),
            "--output",
            str(tmp_path / "m"),
            "--epochs",
            "5",
            "--seed",
            "3",
        )
        assert result.returncode == 0, result.stderr
    assert "held-out accuracy" in result.stdout
    x = np.random.default_rng(0).normal(size=(4, 384)).astype(np.float32)
    np.testing.assert_array_equal(probabilities(tmp_path / "m" / "1", x), probabilities(tmp_path / "m" / "2", x))


@pytest.mark.slow
def test_a_named_head_goes_to_build_heads_and_records_its_scores(tmp_path: Path) -> None:
    """No --output: build/heads/NAME under the working directory; the model name in the warm-up record is
    NAME; the printed scores are recorded in the version and are what the exported model scores."""
    train_file, test_file = small_split(tmp_path, 40)
    result = train(tmp_path, "--head", "tiny-2", "--train", str(train_file), "--test", str(test_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    version = tmp_path / "build" / "heads" / "tiny-2" / "1"
    assert (version / "saved_model.pb").is_file()
    assert f"exported head tiny-2 version 1 to {Path('build/heads/tiny-2/1')}" in result.stdout
    assert warmup_model_name(version) == "tiny-2"
    recorded = json.loads((version / METRICS_FILE).read_text(encoding="utf-8"))
    identity = EncoderManifest.read(ENCODER).identity
    assert f"version 1 to {Path('build/heads/tiny-2/1')}, encoder {identity}" in result.stdout
    assert stamp(version) == identity
    assert recorded == {
        "encoder": identity,
        "head": "tiny-2",
        "accuracy": pytest.approx(recorded["accuracy"]),
        "macro_f1": pytest.approx(recorded["macro_f1"]),
        "labels": ["negative", "positive"],
        "hidden": 0,
        "epochs": 60,
        "seed": 0,
        "train_examples": 40,
        "test_examples": 12,
    }
    printed = re.search(r"held-out accuracy ([0-9.]+), macro F1 ([0-9.]+)", result.stdout)
    assert printed, result.stdout
    assert float(printed[1]) == pytest.approx(recorded["accuracy"], abs=5e-5)
    assert float(printed[2]) == pytest.approx(recorded["macro_f1"], abs=5e-5)
    assert held_out_accuracy(version, test_file) == pytest.approx(recorded["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_any_label_set_from_jsonl(tmp_path: Path) -> None:
    texts = {
        "sport": ["The striker scored twice", "A late penalty won the cup final", "The marathon ran in the rain"],
        "food": ["Slow roasted lamb with garlic", "A bowl of ramen with miso", "Fresh bread and salted butter"],
        "tech": ["The new chip doubles battery life", "Update your router firmware", "The app crashes on launch"],
    }
    lines = [json.dumps({"label": label, "text": text}) for label, items in texts.items() for text in items]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = train(
        tmp_path,
        "--head",
        "mixed",
        "--train",
        str(tmp_path / "data.jsonl"),
        "--test",
        str(tmp_path / "data.jsonl"),
        "--output",
        str(tmp_path / "m"),
        "--epochs",
        "30",
        "--version",
        "7",
    )
    assert result.returncode == 0, result.stderr
    model = tf.saved_model.load(str(tmp_path / "m" / "7"))
    labels = model.signatures["labels"](embeddings=tf.zeros((1, 384)))["labels"].numpy()
    assert [label.decode() for label in labels[0]] == ["food", "sport", "tech"]
    assert probabilities(tmp_path / "m" / "7", np.zeros((2, 384), np.float32)).shape == (2, 3)
    assert warmup_model_name(tmp_path / "m" / "7") == "mixed"


@pytest.mark.slow
def test_a_malformed_data_file_is_refused_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "bad.tsv").write_text("label\ttext\npositive\tfine\nnegative-without-a-tab\n", encoding="utf-8")
    result = train(tmp_path, "--head", "bad", "--train", str(tmp_path / "bad.tsv"), "--test", str(tmp_path / "bad.tsv"))
    assert result.returncode != 0
    assert "bad.tsv:3: expected 'label<TAB>text'" in result.stderr


def test_all_retrains_every_shipped_head_into_its_next_version_stamped(
    tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, on a tiny encoder, under a working directory of its own (build/heads/NAME is relative to
    it). Bugs caught: a head left out, a version overwritten instead of the next one taken, a head trained on
    another head's data, a version stamped with anything but the encoder's identity."""
    monkeypatch.chdir(tmp_path)
    heads = tmp_path / "build" / "heads"
    (heads / "sentiment" / "2").mkdir(parents=True)  # an older version: the next is 3
    main(["--all", "--encoder", str(tiny_encoder), "--epochs", "1"])
    identity = EncoderManifest.read(tiny_encoder).identity
    assert {name: sorted(p.name for p in (heads / name).iterdir()) for name in SHIPPED_HEADS} == {
        "sentiment": ["2", "3"],
        "topic": ["1"],
    }
    for name, version in (("sentiment", "3"), ("topic", "1")):
        recorded = json.loads((heads / name / version / METRICS_FILE).read_text(encoding="utf-8"))
        assert (recorded["head"], recorded["labels"], recorded["encoder"]) == (name, SHIPPED_LABELS[name], identity)
        assert recorded["test_examples"] == len(read_examples(DATA / name / "test.tsv").texts)
        assert stamp(heads / name / version) == identity
        assert warmup_model_name(heads / name / version) == name


# The shipped heads as `make models` built them (build/heads/<name>/1).


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_HEADS)
def test_a_shipped_head_records_its_held_out_accuracy(name: str) -> None:
    version = HEADS / name / "1"
    if not (version / "saved_model.pb").is_file():
        pytest.fail(f"{version} is missing: run `make models` (make test does)")
    recorded = json.loads((version / METRICS_FILE).read_text(encoding="utf-8"))
    test_set = read_examples(DATA / name / "test.tsv")
    assert (recorded["head"], recorded["labels"]) == (name, SHIPPED_LABELS[name])
    assert stamp(version) == recorded["encoder"] == EncoderManifest.read(ENCODER).identity
    assert recorded["test_examples"] == len(test_set.texts)
    assert warmup_model_name(version) == name
    assert held_out_accuracy(version, DATA / name / "test.tsv") == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert recorded["accuracy"] >= ACCURACY_FLOOR
    assert recorded["macro_f1"] >= ACCURACY_FLOOR - 0.01


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_HEADS)
def test_a_served_shipped_head_on_its_held_out_split(name: str, head_server: HeadServer, encoder_dir: Path) -> None:
    """Over TF Serving gRPC, by its name: the accuracy its version records."""
    from models.train_head import embed

    test_set = read_examples(DATA / name / "test.tsv")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["embeddings"].CopyFrom(tf.make_tensor_proto(embed(test_set.texts, encoder_dir)))
    with grpc.insecure_channel(head_server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    predicted = tf.make_ndarray(response.outputs["probabilities"]).argmax(axis=1)
    truth = np.array([SHIPPED_LABELS[name].index(label) for label in test_set.labels])
    accuracy = float(np.mean(predicted == truth))
    recorded = json.loads((head_server.heads_root / name / "1" / METRICS_FILE).read_text(encoding="utf-8"))
    assert accuracy == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert accuracy >= ACCURACY_FLOOR
