"""Head training: the real CLI, deterministic with a seed, any label set, and the served default head's accuracy."""

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from models.train_head import read_examples
from tests.conftest import HeadServer
from tests.servers import ROOT

pytestmark = pytest.mark.slow

SENTIMENT = ROOT / "models" / "data" / "sentiment"
# Measured held-out accuracy of the default head is 0.881 (see the note on issue 3); this floor guards it.
ACCURACY_FLOOR = 0.85


def train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "models.train_head", "--encoder", str(ROOT / "build" / "encoder"), *args],
        cwd=ROOT,
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


def probabilities(version_dir: Path, x: np.ndarray) -> np.ndarray:
    model = tf.saved_model.load(str(version_dir))
    return np.asarray(model.signatures["serving_default"](embeddings=tf.constant(x))["probabilities"])


def test_the_same_seed_gives_the_same_model(tmp_path: Path) -> None:
    train_file, test_file = small_split(tmp_path, 40)
    for _ in range(2):
        result = train(
            tmp_path,
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
    assert (tmp_path / "m" / "7" / "assets.extra" / "tf_serving_warmup_requests").is_file()


def test_a_malformed_data_file_is_refused_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "bad.tsv").write_text("label\ttext\npositive\tfine\nnegative-without-a-tab\n", encoding="utf-8")
    result = train(tmp_path, "--train", str(tmp_path / "bad.tsv"), "--output", str(tmp_path / "m"))
    assert result.returncode != 0
    assert "bad.tsv:3: expected 'label<TAB>text'" in result.stderr


def test_the_data_set_is_balanced_and_split(tmp_path: Path) -> None:
    train_set, test_set = read_examples(SENTIMENT / "train.tsv"), read_examples(SENTIMENT / "test.tsv")
    assert len(train_set.texts) + len(test_set.texts) >= 600
    for examples in (train_set, test_set):
        assert examples.labels.count("positive") == examples.labels.count("negative")
    assert not set(train_set.texts) & set(test_set.texts)


def test_the_served_default_head_on_its_held_out_split(head_server: HeadServer, encoder_dir: Path) -> None:
    from models.train_head import embed

    test_set = read_examples(SENTIMENT / "test.tsv")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "head"
    request.inputs["embeddings"].CopyFrom(tf.make_tensor_proto(embed(test_set.texts, encoder_dir)))
    with grpc.insecure_channel(head_server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    predicted = tf.make_ndarray(response.outputs["probabilities"]).argmax(axis=1)
    truth = np.array([["negative", "positive"].index(label) for label in test_set.labels])
    accuracy = float(np.mean(predicted == truth))
    recorded = json.loads((head_server.base_path / "1" / "assets.extra" / "metrics.json").read_text())
    assert accuracy == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert accuracy >= ACCURACY_FLOOR
