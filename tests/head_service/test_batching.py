"""Server-side batching (--enable_batching): concurrent calls share model runs and each gets its own rows."""

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import HeadServer, running_head

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batching_head(default_head: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadServer]:
    base = tmp_path_factory.mktemp("batching-base")
    shutil.copytree(default_head / "1", base / "1")
    params = base.parent / "batching.config"
    params.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 20000 }\n"
        "max_enqueued_batches { value: 4 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
    )
    extra = ("--enable_batching", "--batching_parameters_file", str(params))
    with running_head(base, base.parent / "head.log", *extra) as server:
        yield server


def predict(server: HeadServer, rows: list[list[float]]) -> httpx.Response:
    return httpx.post(f"{server.rest_url}/v1/models/head:predict", content=json.dumps({"instances": rows}), timeout=30)


def wrapped_runs(server: HeadServer) -> float:
    text = httpx.get(f"{server.rest_url}/monitoring/prometheus/metrics").text
    prefix = ":tensorflow:serving:batching_session:wrapped_run_count{} "
    return float(next(line for line in text.splitlines() if line.startswith(prefix)).removeprefix(prefix))


def test_concurrent_requests_get_their_own_rows(batching_head: HeadServer) -> None:
    rng = np.random.default_rng(3)
    rows = [rng.normal(size=384).round(3).tolist() for _ in range(6)]
    alone = [predict(batching_head, [row]).json()["predictions"][0] for row in rows]
    runs_before = wrapped_runs(batching_head)
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda row: predict(batching_head, [row]), rows))
    assert all(r.status_code == 200 for r in together)
    np.testing.assert_allclose([r.json()["predictions"][0] for r in together], alone, rtol=1e-5)
    assert wrapped_runs(batching_head) - runs_before < len(rows), "6 concurrent requests never shared a model run"


def test_a_request_larger_than_max_batch_size_is_refused(batching_head: HeadServer) -> None:
    response = predict(batching_head, [[0.1] * 384] * 9)
    assert response.status_code == 400
    assert response.json()["error"] == "Task size 9 is larger than maximum input batch size 8"
