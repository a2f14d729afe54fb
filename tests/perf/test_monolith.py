"""The monolith (benchmark scheme 1) as a subprocess: the orchestrator's /classify answer, with the probabilities
of the encoder and head called in-process one text at a time."""

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tensorflow as tf

from embedding_service.manifest import SAVED_MODEL_DIR, TOKENIZER_DIR, EncoderManifest
from embedding_service.tokenizer import Tokenizer
from stack.procs import LOOPBACK, free_port
from stack.services import Service
from tests.servers import running

pytestmark = pytest.mark.slow

TEXTS = [
    "An absolute delight from start to finish, I loved it.",
    "The worst film I have seen, boring and far too long.",
    "The train leaves at nine.",
]


def reference_scores(encoder_dir: Path, head_version: Path) -> list[dict[str, float]]:
    """Each text alone through the encoder's and the head's SavedModels, with no padding: label -> probability."""
    manifest = EncoderManifest.read(encoder_dir)
    encoder: Any = tf.saved_model.load(str(encoder_dir / SAVED_MODEL_DIR))
    head: Any = tf.saved_model.load(str(head_version))
    scores = []
    for text in Tokenizer(encoder_dir / TOKENIZER_DIR, manifest.max_seq_length)(TEXTS):
        ids = tf.constant(text.ids[np.newaxis])
        embedding = encoder.signatures["serving_default"](input_ids=ids, attention_mask=tf.ones_like(ids))
        embedding = embedding["sentence_embedding"]
        [row] = head.signatures["serving_default"](embeddings=embedding)["probabilities"].numpy()
        [names] = head.signatures["labels"](embeddings=embedding)["labels"].numpy()
        scores.append(dict(zip((name.decode() for name in names), row.tolist(), strict=True)))
    return scores


def test_a_batch_gets_the_heads_predictions_in_input_order(
    encoder_dir: Path, default_head: Path, tmp_path: Path
) -> None:
    port = free_port()
    args = ("--port", str(port), "--encoder", str(encoder_dir), "--head", str(default_head / "1"))
    service = Service("monolith", "perf.monolith", f"http://{LOOPBACK}:{port}", "/readyz", args)
    with running(service, tmp_path / "monolith.log") as server:
        response = httpx.post(f"{server.url}/classify", json={"texts": TEXTS}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "sentiment", "version": "1", "encoder": EncoderManifest.read(encoder_dir).identity}
    assert body["truncated"] == []
    predictions = body["predictions"]
    assert len(predictions) == len(TEXTS)
    for prediction in predictions:
        scores = prediction["scores"]
        assert set(scores) == {"negative", "positive"}
        assert prediction["label"] == max(scores, key=scores.get)
        assert prediction["score"] == scores[prediction["label"]]
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert [p["label"] for p in predictions[:2]] == ["positive", "negative"]
    expected = reference_scores(encoder_dir, default_head / "1")
    assert [p["scores"] for p in predictions] == [pytest.approx(row, abs=1e-4) for row in expected]
