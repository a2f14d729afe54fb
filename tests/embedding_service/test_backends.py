"""Both encoder backends hold the fidelity contract: cosine >= 0.9999 to sentence-transformers on the
parity set, and switching backends changes no answer beyond 1e-5: in-process (sentence and token vectors),
and served (the session's server runs the CPU default, OpenVINO; one more runs TensorFlow with XLA)."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openvino as ov
import pytest

from embedding_service.backend_choice import load_encoder
from embedding_service.buckets import Buckets
from embedding_service.encoder import Encoder
from embedding_service.manifest import TOKENIZER_DIR
from embedding_service.ov_encoder import OpenVINOEncoder
from embedding_service.settings import EmbeddingSettings
from embedding_service.tokenizer import Tokenizer
from tests.conftest import running_embedding
from tests.embedding_service.test_parity import REFERENCE, cosines
from tests.servers import Server

pytestmark = pytest.mark.slow

TF_BATCH = 4


@pytest.fixture(scope="module")
def encoders(encoder_dir: Path) -> dict[str, Encoder]:
    return {
        backend: load_encoder(backend, encoder_dir, precision="fp32", max_batch_size=32, threads=0, xla=True)
        for backend in ("tensorflow", "openvino")
    }


@pytest.fixture(scope="module")
def reference_ids(encoder_dir: Path) -> list[np.ndarray]:
    return [t.ids for t in Tokenizer(encoder_dir / TOKENIZER_DIR, 256)(REFERENCE["texts"])]


@pytest.mark.parametrize("backend", ["tensorflow", "openvino"])
def test_each_backend_matches_sentence_transformers(
    encoders: dict[str, Encoder], reference_ids: list[np.ndarray], backend: str
) -> None:
    got = [e.sentence for e in encoders[backend](reference_ids)]
    assert cosines(got, REFERENCE["embeddings"]).min() >= 0.9999


def test_switching_backends_changes_no_vector_beyond_1e_5(
    encoders: dict[str, Encoder], reference_ids: list[np.ndarray]
) -> None:
    tf, ov = (encoders[b](reference_ids, token_vectors=True) for b in ("tensorflow", "openvino"))
    for a, b in zip(tf, ov, strict=True):
        assert a.length == b.length
        np.testing.assert_allclose(a.sentence, b.sentence, atol=1e-5)
        np.testing.assert_allclose(a.token_vectors(), b.token_vectors(), atol=1e-5)


def test_each_backend_reports_the_precision_it_runs_at(encoders: dict[str, Encoder], encoder_dir: Path) -> None:
    """fp32 unless asked; OpenVINO asked for bf16 reports what the compiled model runs: bf16 where the CPU has
    it, fp32 (the hint ignored) where it does not."""
    assert {name: e.precision for name, e in encoders.items()} == {"tensorflow": "fp32", "openvino": "fp32"}
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    bf16 = OpenVINOEncoder(encoder_dir, Buckets.exact(4, 256), precision="bf16")
    assert bf16.precision == ("bf16" if has_bf16 else "fp32")


@pytest.mark.parametrize("backend", ["tensorflow", "openvino"])
def test_a_pooled_batch_carries_no_token_vectors(
    encoders: dict[str, Encoder], reference_ids: list[np.ndarray], backend: str
) -> None:
    pooled = encoders[backend](reference_ids[:4])
    assert all(e.tokens is None for e in pooled)
    with_tokens = encoders[backend](reference_ids[:4], token_vectors=True)
    for a, b in zip(pooled, with_tokens, strict=True):
        np.testing.assert_allclose(a.sentence, b.sentence, atol=1e-6)


# The service's own modules and the OpenVINO encoder loaded through them, in a fresh interpreter.
OPENVINO_ONLY = """
import sys
from pathlib import Path

import embedding_service.app
from embedding_service.settings import EmbeddingSettings, chosen_encoder

chosen_encoder(EmbeddingSettings(backend="openvino", model_dir=Path(sys.argv[1])))
print(sorted({name.split(".")[0] for name in sys.modules} & {"tensorflow", "tf_keras", "keras"}))
"""


def test_the_openvino_service_never_imports_tensorflow(encoder_dir: Path) -> None:
    """Only the chosen backend is imported (embedding_service.backend_choice): a CPU service does not pay for
    TensorFlow's import, its memory or its threads."""
    found = subprocess.run(
        [sys.executable, "-c", OPENVINO_ONLY, str(encoder_dir)], capture_output=True, text=True, check=True, timeout=300
    )
    assert found.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture(scope="module")
def tensorflow_server(
    encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """TensorFlow with XLA, as a GPU host runs it: every bucket shape compiled at start-up (batches of at
    most 4 here, so that it compiles 27 shapes, not 54)."""
    log = tmp_path_factory.mktemp("tensorflow") / "embedding.log"
    with running_embedding(
        encoder_dir, xla_cache_dir, log, backend="tensorflow", cache_bytes="0", max_batch_size=str(TF_BATCH)
    ) as server:
        yield server


def test_the_served_backends_agree_and_say_which_they_are(embedding_server: Server, tensorflow_server: Server) -> None:
    answers = {}
    for server in (embedding_server, tensorflow_server):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            runtime = client.get("/v1/models").json()["data"][0]["runtime"]
            vectors = client.post("/v1/embeddings", json={"input": REFERENCE["texts"]}).json()["data"]
            tokens = client.post("/embed", json={"inputs": REFERENCE["texts"][:3], "pooling": "none"}).json()
        answers[runtime["backend"]] = ([row["embedding"] for row in vectors], tokens["embeddings"])
        assert runtime["encoder_threads"] >= 1 and runtime["ready_s"] > 0
        assert runtime["precision"] == "fp32"  # EMBEDDING_PRECISION's default, on either backend
        assert f"backend {runtime['backend']} on" in server.log.read_text("utf-8")  # the start-up log says it
    assert answers.keys() == {"openvino", "tensorflow"}
    (ov_vectors, ov_tokens), (tf_vectors, tf_tokens) = answers["openvino"], answers["tensorflow"]
    assert cosines(tf_vectors, REFERENCE["embeddings"]).min() >= 0.9999
    np.testing.assert_allclose(ov_vectors, tf_vectors, atol=1e-5)
    for a, b in zip(ov_tokens, tf_tokens, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_xla_cache_setting_takes_effect(tensorflow_server: Server, xla_cache_dir: Path) -> None:
    shapes = Buckets.default(TF_BATCH, 256).shapes(EmbeddingSettings().max_batch_tokens)
    assert len(list(xla_cache_dir.iterdir())) >= len(shapes)  # one compiled program per warmed shape


def test_the_tensorflow_server_pads_to_its_buckets(tensorflow_server: Server) -> None:
    before = tensorflow_server.metric("embedding_padded_tokens_total")
    httpx.post(f"{tensorflow_server.url}/v1/embeddings", json={"input": "seventeen " * 15}, timeout=30)
    assert tensorflow_server.metric("embedding_padded_tokens_total") - before == 24  # 17 tokens, bucket 24
