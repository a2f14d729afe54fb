"""The int8 encoder `make models-int8` builds beside the default export (models.quantize_encoder)."""

from pathlib import Path

import pytest

from embedding_service.int8_manifest import INT8_DIR
from embedding_service.manifest import MANIFEST_FILE


@pytest.fixture(scope="session")
def int8_encoder_dir(encoder_dir: Path) -> Path:
    """The default export, with its int8 model beside it."""
    if not (encoder_dir / INT8_DIR / MANIFEST_FILE).is_file():
        pytest.fail(f"{encoder_dir / INT8_DIR} is missing: run `make models-int8` (make test does)")
    return encoder_dir
