"""The TensorFlow backend's bf16 (its mixed precision) really changes what runs, without changing what the
vectors mean."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.servers import ROOT, Server

pytestmark = pytest.mark.slow

TEXTS = ["The battery died after two days.", "Lovely staff and a quiet room.", "Meh."]

# Runs in its own process: TensorFlow's mixed-precision switch is process-wide.
SCRIPT = """
import json, sys
from pathlib import Path
from embedding_service.buckets import Buckets
from embedding_service.tf_encoder import TFEncoder
from embedding_service.tokenizer import Tokenizer
model_dir, texts = Path(sys.argv[1]), json.loads(sys.argv[2])
encoder = TFEncoder(model_dir, Buckets.default(4, 256), xla=False, precision="bf16")
tokenized = Tokenizer(model_dir / "tokenizer", 256)(texts)
print(encoder.precision)
print(json.dumps([e.sentence.tolist() for e in encoder([t.ids for t in tokenized])]))
"""


def test_bf16_changes_the_arithmetic_but_not_the_meaning(embedding_server: Server, encoder_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(encoder_dir), json.dumps(TEXTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    *_, precision, vectors = result.stdout.strip().splitlines()
    assert precision == "bf16"  # on a CPU: TensorFlow's oneDNN bf16 auto mixed precision
    mixed = np.asarray(json.loads(vectors))
    response = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": TEXTS}).json()
    full = np.asarray([d["embedding"] for d in response["data"]])
    cosine = (mixed * full).sum(1) / (np.linalg.norm(mixed, axis=1) * np.linalg.norm(full, axis=1))
    assert cosine.min() > 0.999
    assert np.abs(mixed - full).max() > 1e-4, "bf16 had no effect: the switch did nothing"


def test_bf16_with_xla_is_refused_by_the_tensorflow_encoder_itself(encoder_dir: Path) -> None:
    """Its rewrite does not reach XLA-compiled functions: pooled batches would run fp32 while it said bf16."""
    from embedding_service.buckets import Buckets
    from embedding_service.tf_encoder import TFEncoder

    with pytest.raises(ValueError, match="mixed precision needs xla=False"):
        TFEncoder(encoder_dir, Buckets.default(4, 256), xla=True, precision="bf16")
