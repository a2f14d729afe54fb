"""The whole model (encoder, pooling and head as one SavedModel on token ids): the same probabilities as the
encoder and head in turn, in-process and served by the head service over TF Serving REST."""

from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf

from embedding_service.manifest import SAVED_MODEL_DIR, TOKENIZER_DIR, EncoderManifest
from embedding_service.tokenizer import Tokenizer
from head_service.servable import WARMUP_FILE
from models.export_whole import export
from stack.services import DEFAULT_HEAD
from tests.conftest import running_head

pytestmark = pytest.mark.slow

TEXTS = ["A warm, funny and beautifully acted film", "Cold food and a rude waiter", "ok"]


@pytest.fixture(scope="module")
def whole_base(encoder_dir: Path, default_head: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model base path holding the whole model (on the default head) as version 1, inside a heads root of its
    own, where the head service finds it under the default head's name."""
    base = tmp_path_factory.mktemp("whole-heads") / DEFAULT_HEAD
    export(encoder_dir, default_head / "1", base / "1")
    return base


@pytest.fixture(scope="module")
def token_ids(encoder_dir: Path) -> list[np.ndarray]:
    manifest = EncoderManifest.read(encoder_dir)
    return [text.ids for text in Tokenizer(encoder_dir / TOKENIZER_DIR, manifest.max_seq_length)(TEXTS)]


def padded(token_ids: list[np.ndarray]) -> dict[str, tf.Tensor]:
    ids = np.zeros((len(token_ids), max(map(len, token_ids))), np.int32)
    mask = np.zeros_like(ids)
    for row, text in enumerate(token_ids):
        ids[row, : len(text)], mask[row, : len(text)] = text, 1
    return {"input_ids": tf.constant(ids), "attention_mask": tf.constant(mask)}


@pytest.fixture(scope="module")
def probabilities(whole_base: Path, token_ids: list[np.ndarray]) -> np.ndarray:
    whole = tf.saved_model.load(str(whole_base / "1"))
    return np.asarray(whole.signatures["serving_default"](**padded(token_ids))["probabilities"])


def test_the_whole_model_is_the_encoder_then_the_head(
    whole_base: Path, probabilities: np.ndarray, token_ids: list[np.ndarray], encoder_dir: Path, default_head: Path
) -> None:
    encoder = tf.saved_model.load(str(encoder_dir / SAVED_MODEL_DIR)).signatures["serving_default"]
    head = tf.saved_model.load(str(default_head / "1")).signatures["serving_default"]
    expected = head(embeddings=encoder(**padded(token_ids))["sentence_embedding"])["probabilities"]
    assert probabilities.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    assert not (whole_base / "1" / WARMUP_FILE).exists()


def test_the_head_service_serves_it_on_token_ids(
    whole_base: Path, probabilities: np.ndarray, token_ids: list[np.ndarray], tmp_path: Path
) -> None:
    ids = token_ids[0].tolist()
    body = {"instances": [{"input_ids": ids, "attention_mask": [1] * len(ids)}]}
    with running_head(whole_base.parent, tmp_path / "head.log", heads=[DEFAULT_HEAD]) as head:
        response = httpx.post(f"{head.rest_url}/v1/models/{DEFAULT_HEAD}:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], probabilities[:1], rtol=0, atol=1e-5)
