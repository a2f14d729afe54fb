"""Tiny exported encoders (random BERT checkpoints, exported in-process): fast stand-ins for the real one
where a test needs an encoder's identity and vectors, not its quality."""

from pathlib import Path

import pytest
import tf_keras

from embedding_service.manifest import EncoderManifest
from models.export_encoder import export
from tests.models.tiny_checkpoint import write_tiny_checkpoint


def tiny_encoder_dir(root: Path, seed: int) -> Path:
    tf_keras.utils.set_random_seed(seed)  # the checkpoint's weights start from the (tf_keras) initialisers
    write_tiny_checkpoint(root / "checkpoint")
    export(root / "checkpoint", root / "encoder", "tiny")
    return root / "encoder"


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_encoder_dir(tmp_path_factory.mktemp("tiny-encoder"), seed=1)


@pytest.fixture(scope="session")
def other_tiny_encoder(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny encoder of the same shape: other random weights, so another identity and other vectors."""
    other = tiny_encoder_dir(tmp_path_factory.mktemp("other-tiny-encoder"), seed=2)
    assert EncoderManifest.read(other).identity != EncoderManifest.read(tiny_encoder).identity
    return other
