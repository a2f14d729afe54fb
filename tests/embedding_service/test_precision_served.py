"""EMBEDDING_PRECISION served: auto measures at the first start, publishes what it chose, the figures and
why (GET /v1/models, the start-up log, every answer's precision header) and decides at once on a restart;
int8 serves the model `make models-int8` built, with the fidelity and the checked heads that build recorded."""

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedding_service.host import native_bf16
from embedding_service.int8_manifest import INT8_DIR, MAX_ACCURACY_DROP, MIN_COSINE, Int8Manifest
from embedding_service.manifest import MANIFEST_FILE, EncoderManifest
from embedding_service.ov_encoder import read_model
from embedding_service.precision import PARITY_MIN_COSINE
from embedding_service.schemas import PRECISION_HEADER
from models.train_head import SHIPPED_HEADS, next_version
from stack.services import DEFAULT_HEADS_ROOT
from tests.conftest import copy_heads, publish_version, running_embedding, running_head, running_orchestrator
from tests.embedding_service.test_parity import REFERENCE, cosines
from tests.servers import Server

pytestmark = pytest.mark.slow


def served(server: Server) -> tuple[dict[str, Any], list[list[float]], str]:
    """The model card's runtime, the reference texts' vectors and the precision their answer names."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        runtime = client.get("/v1/models").json()["data"][0]["runtime"]
        answer = client.post("/v1/embeddings", json={"input": REFERENCE["texts"]})
    return runtime, [d["embedding"] for d in answer.json()["data"]], answer.headers[PRECISION_HEADER]


def test_auto_measures_at_the_first_start_and_decides_at_once_on_a_restart(
    encoder_dir: Path, xla_cache_dir: Path, tmp_path: Path
) -> None:
    """The rule's figures are this CPU's (docs/precision.md); bf16's served vectors hold the parity contract
    wherever auto chooses it."""
    memo = tmp_path / "memo"
    starts = []
    for start in ("first", "second"):
        log = tmp_path / f"{start}.log"
        with running_embedding(
            encoder_dir, xla_cache_dir, log, backend="openvino", precision="auto", precision_memo_dir=str(memo)
        ) as server:
            runtime, vectors, header = served(server)
        choice = runtime["choice"]
        assert (choice["setting"], runtime["precision"], header) == ("auto", choice["chosen"], choice["chosen"])
        assert cosines(vectors, REFERENCE["embeddings"]).min() >= PARITY_MIN_COSINE
        said = next(line for line in log.read_text("utf-8").splitlines() if "EMBEDDING_PRECISION=auto" in line)
        assert choice["reason"] in said
        starts.append(runtime)
    first, second = (runtime["choice"] for runtime in starts)
    if not native_bf16():
        assert first == second and first["chosen"] == "fp32" and first["measurement"] is None
        return
    assert (first["remembered"], second["remembered"]) == (False, True)
    assert first["measured_s"] > 0 and second["measured_s"] is None
    assert first["measurement"] == second["measurement"] and first["chosen"] == second["chosen"]
    measurement = first["measurement"]
    assert measurement["texts"] == 36 and measurement["fp32_ms"] > 0 and measurement["bf16_ms"] > 0
    assert len(list(memo.glob("*.json"))) == 1
    print(
        f"auto: {first['reason']}; ready in {starts[0]['ready_s']}s (measuring {first['measured_s']}s), "
        f"then {starts[1]['ready_s']}s"
    )


@pytest.fixture(scope="module")
def int8_server(
    int8_encoder_dir: Path, xla_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("int8") / "embedding.log"
    with running_embedding(int8_encoder_dir, xla_cache_dir, log, backend="openvino", precision="int8") as server:
        yield server


def test_the_int8_build_holds_its_contract_for_every_shipped_head(int8_encoder_dir: Path) -> None:
    """The heads checked are the versions the heads root serves, each within a point of fp32's accuracy."""
    int8 = Int8Manifest.read(int8_encoder_dir)
    assert int8.identity == EncoderManifest.read(int8_encoder_dir).identity
    assert int8.fidelity.min_cosine >= MIN_COSINE and int8.fidelity.texts >= 300
    served_versions = {name: next_version(DEFAULT_HEADS_ROOT / name) - 1 for name in SHIPPED_HEADS}
    assert {h.name: h.version for h in int8.heads} == served_versions
    for head in int8.heads:
        assert head.fp32_accuracy - head.int8_accuracy <= MAX_ACCURACY_DROP, head


def test_int8_is_served_with_what_its_build_checked(int8_server: Server, int8_encoder_dir: Path) -> None:
    runtime, vectors, header = served(int8_server)
    assert (runtime["precision"], header, runtime["choice"]["chosen"]) == ("int8", "int8", "int8")
    assert runtime["int8"] == json.loads(Int8Manifest.read(int8_encoder_dir).model_dump_json())
    assert cosines(vectors, REFERENCE["embeddings"]).min() >= MIN_COSINE
    tokens = httpx.post(f"{int8_server.url}/embed", json={"inputs": ["int8 tokens"], "pooling": "none"}, timeout=30)
    assert tokens.status_code == 200 and tokens.headers[PRECISION_HEADER] == "int8"


def test_an_int8_model_of_another_export_is_refused(int8_encoder_dir: Path, tmp_path: Path) -> None:
    """A re-export (another identity) beside an old int8 model: the service will not serve the stale one."""
    export = tmp_path / "encoder"
    shutil.copytree(int8_encoder_dir / INT8_DIR, export / INT8_DIR)
    manifest = EncoderManifest.read(int8_encoder_dir).model_copy(update={"identity": "0123456789abcdef"})
    manifest.write(export)
    assert (export / MANIFEST_FILE).is_file()
    with pytest.raises(ValueError, match="was quantized from encoder"):
        read_model(export, "int8")


def test_a_head_takes_int8_vectors_only_where_the_int8_build_checked_its_version(
    int8_server: Server, default_head: Path, tmp_path: Path
) -> None:
    # Version 1 of each shipped head is what the build checked; a version 2 of the same encoder was not.
    heads_root = copy_heads(tmp_path / "heads")
    with (
        running_head(heads_root, tmp_path / "head.log") as head,
        running_orchestrator(int8_server.url, head, tmp_path / "orchestrator.log") as orchestrator,
    ):
        checked = httpx.post(f"{orchestrator.url}/classify", json={"text": "What a wonderful film."}, timeout=30)
        assert checked.status_code == 200, checked.text
        assert checked.json()["model"]["version"] == "1"
        publish_version(default_head / "1", heads_root / "sentiment", 2)
        deadline = time.monotonic() + 30
        while (answer := httpx.post(f"{orchestrator.url}/classify", json={"text": "Fine."}, timeout=30)).is_success:
            assert time.monotonic() < deadline, "the orchestrator never took version 2"
            time.sleep(0.2)
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert error["code"] == "unchecked_precision" and "version 2" in error["message"]
        assert "make models-int8" in error["message"]
