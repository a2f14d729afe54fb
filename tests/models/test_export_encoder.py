"""Encoder export: the real CLI on a tiny random BERT checkpoint, and its errors for bad directories."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from embedding_service.manifest import SAVED_MODEL_DIR, TOKENIZER_DIR, EncoderManifest
from models import export_encoder
from models.checkpoint import Checkpoint, CheckpointError
from models.encoder_graph import pool
from models.encoder_identity import encoder_identity, tokenizer_description
from tests.models.tiny_checkpoint import write_tiny_checkpoint
from tests.servers import ROOT


def export(checkpoint: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "models.export_encoder",
            "--checkpoint",
            str(checkpoint),
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize(("pooling", "normalize"), [("mean", True), ("cls", False), ("max", True)])
def test_export_matches_the_checkpoint_model(tmp_path: Path, pooling: str, normalize: bool) -> None:
    model = write_tiny_checkpoint(tmp_path / "ckpt", pooling=pooling, normalize=normalize, max_seq_length=24)
    result = export(tmp_path / "ckpt", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "[4/4]" in result.stdout

    manifest = EncoderManifest.read(tmp_path / "out")
    assert (manifest.pooling, manifest.normalize, manifest.max_seq_length) == (pooling, normalize, 24)
    assert (manifest.embedding_dim, manifest.model_name) == (32, "ckpt")
    assert (tmp_path / "out" / TOKENIZER_DIR / "tokenizer.json").is_file()
    # The identity is the checkpoint's, and describes the tokenizer the service will load from the export.
    assert manifest.identity == encoder_identity(Checkpoint.read(tmp_path / "ckpt"))
    assert f"encoder identity {manifest.identity}" in result.stdout
    assert tokenizer_description(tmp_path / "out" / TOKENIZER_DIR) == tokenizer_description(tmp_path / "ckpt")

    ids = np.array([[2, 5, 6, 7, 3, 0, 0], [2, 8, 9, 10, 11, 12, 3]], dtype=np.int32)
    mask = (ids != 0).astype(np.int32)
    signature = tf.saved_model.load(str(tmp_path / "out" / SAVED_MODEL_DIR)).signatures["serving_default"]
    exported = signature(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))

    hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids), training=False)
    expected = pool(hidden.last_hidden_state, tf.constant(mask), pooling).numpy()  # type: ignore[arg-type]
    if normalize:
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(exported["sentence_embedding"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(exported["token_embeddings"].numpy()[0, :5], hidden.last_hidden_state[0, :5], atol=1e-5)


def test_re_exporting_the_same_checkpoint_keeps_its_identity(tmp_path: Path) -> None:
    """In-process (the CLI is tested above). Bug caught: anything of one export run (its output or staging
    path, a time) in the identity."""
    write_tiny_checkpoint(tmp_path / "ckpt")
    for output in ("first", "second"):
        export_encoder.export(tmp_path / "ckpt", tmp_path / output, "ckpt")
    assert EncoderManifest.read(tmp_path / "first").identity == EncoderManifest.read(tmp_path / "second").identity


def test_missing_directory_is_named(tmp_path: Path) -> None:
    result = export(tmp_path / "nowhere", tmp_path / "out")
    assert result.returncode != 0
    assert "nowhere does not exist" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match=r"missing \*\.safetensors \(weights\), tokenizer\.json or vocab\.txt"):
        Checkpoint.read(tmp_path / "ckpt")


def test_non_bert_checkpoint_is_refused(tmp_path: Path) -> None:
    write_tiny_checkpoint(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="model_type 'gpt2'"):
        Checkpoint.read(tmp_path / "ckpt")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    write_tiny_checkpoint(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    result = export(tmp_path / "ckpt", tmp_path / "out")
    assert result.returncode != 0
    assert "does not fit" in result.stderr


def test_without_sentence_transformers_extras_defaults_apply(tmp_path: Path) -> None:
    write_tiny_checkpoint(tmp_path / "ckpt", pooling="cls")
    for extra in ("1_Pooling", "modules.json", "sentence_bert_config.json"):
        target = tmp_path / "ckpt" / extra
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    checkpoint = Checkpoint.read(tmp_path / "ckpt")
    assert (checkpoint.pooling, checkpoint.normalize, checkpoint.max_seq_length) == ("mean", False, 64)


def test_default_checkpoint_honours_its_sentence_transformers_config(encoder_dir: Path) -> None:
    manifest = EncoderManifest.read(encoder_dir)
    assert (manifest.pooling, manifest.normalize, manifest.max_seq_length, manifest.embedding_dim) == (
        "mean",
        True,
        256,
        384,
    )


def test_the_default_export_records_its_checkpoint_identity(encoder_dir: Path) -> None:
    """Bug caught: a build/ exported before identities, or an identity not of the checkpoint exported."""
    manifest = EncoderManifest.read(encoder_dir)
    assert manifest.identity == encoder_identity(Checkpoint.read(Path(manifest.source)))
