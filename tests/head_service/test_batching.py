"""Server-side batching (--enable_batching): concurrent calls share model runs and each gets its own rows."""

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from stack.services import DEFAULT_HEAD
from tests.conftest import HeadServer, copy_heads, running_head

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batching_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadServer]:
    work = tmp_path_factory.mktemp("batching")
    heads_root = copy_heads(work / "heads", [DEFAULT_HEAD])
    params = work / "batching.config"
    # A long window makes batches form predictably: every call within 2 s of the first shares its run.
    params.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000000 }\n"
        "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n"
        "allowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
    )
    extra = ("--enable_batching", "--batching_parameters_file", str(params))
    with running_head(heads_root, work / "head.log", *extra, heads=[DEFAULT_HEAD]) as server:
        yield server


def predict(server: HeadServer, rows: list[list[float]]) -> httpx.Response:
    return httpx.post(
        f"{server.rest_url}/v1/models/sentiment:predict", content=json.dumps({"instances": rows}), timeout=30
    )


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


def test_a_full_queue_refuses_at_once_with_503(batching_head: HeadServer) -> None:
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(predict, batching_head, [[0.1] * 384] * 4)  # one batch, open for 2 s
        time.sleep(0.5)
        started = time.perf_counter()
        refused = predict(batching_head, [[0.1] * 384] * 5)  # 9 rows would need a second batch
        refused_after = time.perf_counter() - started
        assert waiting.result().status_code == 200
    assert refused.status_code == 503
    assert refused.json()["error"] == "The batch scheduling queue to which this task was submitted is full"
    assert refused_after < 1.0  # the open batch holds for 2 s: a queued call would wait that long


def test_labels_survive_batching(batching_head: HeadServer) -> None:
    body = {"signature_name": "labels", "instances": [[0.1] * 384]}
    with ThreadPoolExecutor(3) as pool:
        responses = list(
            pool.map(
                lambda _: httpx.post(f"{batching_head.rest_url}/v1/models/sentiment:predict", json=body, timeout=30),
                range(3),
            )
        )
    assert [r.json() for r in responses] == [{"predictions": [["negative", "positive"]]}] * 3
