"""Stamping a head version exported before stamps (models.stamp_head), in-process on tiny encoders: the next
version serves what the old one did plus its `encoder`; a stamped version, a version that does not score on
the encoder, and one with no recorded accuracy and no --min-accuracy are refused, and nothing is written."""

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from embedding_service.manifest import EncoderManifest
from head_service.servable import Servable
from models import stamp_head, train_head
from models.head_graph import METRICS_FILE

GOOD, BAD = ["good", "great", "love"], ["bad", "terrible", "hate"]
FILLER = ["the", "film", "food", "service", "is", "was", "it", "this", "very"]


def sentences(words: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """Two of the class's words and one filler word, in random order: a strong signal even in a tiny random
    encoder's vectors."""
    return [" ".join(rng.permutation([*rng.choice(words, 2), rng.choice(FILLER)])) for _ in range(count)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A sentiment set in the tiny vocabulary, which a head on a tiny encoder's vectors learns."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("stamp-data")
    for split, count in (("train", 40), ("test", 20)):
        rows = [f"positive\t{t}" for t in sentences(GOOD, count, rng)]
        rows += [f"negative\t{t}" for t in sentences(BAD, count, rng)]
        (root / f"{split}.tsv").write_text("\n".join(["label\ttext", *rows]) + "\n", encoding="utf-8")
    return root / "train.tsv", root / "test.tsv"


@pytest.fixture(scope="module")
def trained(data: tuple[Path, Path], tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base path whose version 1 was trained (and stamped) on the tiny encoder."""
    base = tmp_path_factory.mktemp("trained") / "mood"
    train, test = data
    train_head.main(
        [
            "--head",
            "mood",
            "--encoder",
            str(tiny_encoder),
            "--train",
            str(train),
            "--test",
            str(test),
            "--output",
            str(base),
        ]
    )
    return base


def save_unstamped(stamped: Path, target: Path) -> None:
    """`stamped` as a version exported before stamps: its `serving_default` and `labels` only, and a
    metrics.json without `encoder`."""
    loaded = tf.saved_model.load(str(stamped))
    module = tf.Module()
    module.head = loaded
    spec = tf.TensorSpec([None, 32], tf.float32, name="embeddings")

    def calling(signature: Any) -> Any:
        return tf.function(lambda embeddings: signature(embeddings=embeddings), input_signature=[spec])

    module.serve, module.labels = calling(loaded.signatures["serving_default"]), calling(loaded.signatures["labels"])
    signatures = {"serving_default": module.serve.get_concrete_function()}
    signatures["labels"] = module.labels.get_concrete_function()
    tf.saved_model.save(module, str(target), signatures=signatures)
    shutil.copytree(stamped / "assets.extra", target / "assets.extra")
    metrics = json.loads((target / METRICS_FILE).read_text(encoding="utf-8"))
    del metrics["encoder"]
    (target / METRICS_FILE).write_text(json.dumps(metrics), encoding="utf-8")


@pytest.fixture(scope="module")
def unstamped_template(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("unstamped") / "1"
    save_unstamped(trained / "1", target)
    return target


@pytest.fixture
def unstamped(unstamped_template: Path, tmp_path: Path) -> Path:
    """A base path of the test's own holding only the unstamped version 1."""
    shutil.copytree(unstamped_template, tmp_path / "mood" / "1")
    return tmp_path / "mood"


def stamp(base: Path, version: int, encoder: Path, test: Path, *extra: str) -> None:
    where = ["--base", str(base), "--test", str(test)]
    stamp_head.main(["--head", "mood", "--version", str(version), "--encoder", str(encoder), *where, *extra])


def refusal(base: Path, version: int, encoder: Path, test: Path, *extra: str) -> str:
    versions = sorted(p.name for p in base.iterdir())
    with pytest.raises(SystemExit) as exited:
        stamp(base, version, encoder, test, *extra)
    assert sorted(p.name for p in base.iterdir()) == versions, "a refused stamp wrote a version"
    return str(exited.value.code)


def metrics_of(version: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((version / METRICS_FILE).read_text(encoding="utf-8"))
    return loaded


def test_the_unstamped_version_is_the_trained_one_without_its_stamp(trained: Path, unstamped: Path) -> None:
    loaded = tf.saved_model.load(str(unstamped / "1"))
    assert set(loaded.signatures) == {"serving_default", "labels"}
    assert "encoder" not in metrics_of(unstamped / "1")
    assert metrics_of(trained / "1")["accuracy"] >= 0.9  # the tiny encoder's vectors tell the classes apart


def test_stamping_writes_the_next_version_serving_the_same_plus_its_encoder(
    unstamped: Path, tiny_encoder: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bugs caught: stamping in place (versions are immutable), a signature dropped or changed, a stamp not
    batch-aligned or not the encoder's identity, metrics not carried over, no warm-up record."""
    stamp(unstamped, 1, tiny_encoder, data[1])
    identity = EncoderManifest.read(tiny_encoder).identity
    assert f"stamped head mood version 1 with encoder {identity}: version 2 at {unstamped / '2'}" in (
        capsys.readouterr().out
    )
    old, new = tf.saved_model.load(str(unstamped / "1")), tf.saved_model.load(str(unstamped / "2"))
    assert set(old.signatures) == {"serving_default", "labels"}
    assert set(new.signatures) == {"serving_default", "labels", "encoder"}
    x = tf.constant(np.random.default_rng(1).normal(size=(5, 32)).astype(np.float32))
    for key in ("serving_default", "labels"):
        before, after = old.signatures[key](embeddings=x), new.signatures[key](embeddings=x)
        assert set(before) == set(after)
        for name in before:
            np.testing.assert_array_equal(before[name].numpy(), after[name].numpy())
    assert new.signatures["encoder"](embeddings=x)["encoder"].numpy().tolist() == [[identity.encode()]] * 5

    recorded, stamped = metrics_of(unstamped / "1"), metrics_of(unstamped / "2")
    assert stamped == {
        **recorded,
        "accuracy": pytest.approx(recorded["accuracy"], abs=1e-6),
        "macro_f1": pytest.approx(recorded["macro_f1"], abs=1e-6),
        "encoder": identity,
        "stamped_from_version": 1,
        "stamped_from_accuracy": recorded["accuracy"],
    }
    servable = Servable("mood", 2, unstamped / "2")  # as the head service loads it
    assert servable.warm_up() == 1
    encoder_output = servable.signature_def_map().signature_def["encoder"].outputs["encoder"]
    assert [d.size for d in encoder_output.tensor_shape.dim] == [-1, 1]


def test_an_already_stamped_version_is_refused_naming_its_encoder(
    trained: Path, tiny_encoder: Path, data: tuple[Path, Path]
) -> None:
    identity = EncoderManifest.read(tiny_encoder).identity
    assert f"already stamped with encoder {identity}" in refusal(trained, 1, tiny_encoder, data[1])


def test_a_version_that_does_not_score_on_the_encoder_is_refused(
    unstamped: Path, other_tiny_encoder: Path, data: tuple[Path, Path]
) -> None:
    """Stamping against an encoder it was not trained on. Bug caught: the accuracy check skipped or compared
    the wrong way, which would stamp a head with vectors it cannot read."""
    message = refusal(unstamped, 1, other_tiny_encoder, data[1])
    assert "below" in message and "tolerance 0.02" in message and "not stamped" in message


def test_without_a_recorded_accuracy_a_floor_must_be_given(
    unstamped: Path, tiny_encoder: Path, data: tuple[Path, Path]
) -> None:
    """Bug caught: a missing accuracy read as 0 (or as passing), so any version would be stamped."""
    metrics = metrics_of(unstamped / "1")
    del metrics["accuracy"]
    (unstamped / "1" / METRICS_FILE).write_text(json.dumps(metrics), encoding="utf-8")
    assert "pass --min-accuracy" in refusal(unstamped, 1, tiny_encoder, data[1])
    assert "--min-accuracy 1.01" in refusal(unstamped, 1, tiny_encoder, data[1], "--min-accuracy", "1.01")
    stamp(unstamped, 1, tiny_encoder, data[1], "--min-accuracy", "0.5")
    assert "stamped_from_accuracy" not in metrics_of(unstamped / "2")
