"""Version lifecycle under load: a new version takes over with zero failed requests; a broken one changes nothing."""

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from stack.services import DEFAULT_HEAD
from tests.conftest import HeadServer, copy_heads, running_head

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_head(tmp_path: Path) -> Iterator[HeadServer]:
    heads_root = copy_heads(tmp_path / "heads", [DEFAULT_HEAD])
    with running_head(heads_root, tmp_path / "head.log", heads=[DEFAULT_HEAD]) as server:
        yield server


def drop_in(source: Path, base: Path, version: int) -> None:
    """As TF Serving's docs advise: write beside the base path, then rename into it in one step."""
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging)
    staging.rename(base / str(version))


class Looper(threading.Thread):
    """Sends Predict back to back, recording the version of every answer and every failure."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.versions: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "sentiment"
        request.inputs["embeddings"].CopyFrom(tf.make_tensor_proto(np.ones((1, 384), np.float32) / 20))
        with grpc.insecure_channel(self.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self.stop.is_set():
                try:
                    self.versions.append(stub.Predict(request, timeout=10).model_spec.version.value)
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code()}: {exc.details()}")

    def wait_for(self, version: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (not self.versions or self.versions[-1] != version):
            time.sleep(0.05)


def test_new_version_takes_over_without_a_failed_request(fresh_head: HeadServer, default_head: Path) -> None:
    looper = Looper(fresh_head.grpc_target)
    looper.start()
    try:
        looper.wait_for(1)
        drop_in(default_head / "1", fresh_head.base_path, 2)
        looper.wait_for(2)
        served_before = len(looper.versions)
        time.sleep(0.5)
    finally:
        looper.stop.set()
        looper.join(15)
    assert looper.failures == []
    first_two = looper.versions.index(2)
    assert set(looper.versions[:first_two]) == {1} and set(looper.versions[first_two:]) == {2}
    assert len(looper.versions) > served_before  # still answering after the switch
    status = httpx.get(f"{fresh_head.rest_url}/v1/models/sentiment").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]


def test_a_broken_version_does_not_take_down_the_serving_one(fresh_head: HeadServer) -> None:
    broken = fresh_head.base_path / ".staging-5"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a saved model")
    broken.rename(fresh_head.base_path / "5")
    url = f"{fresh_head.rest_url}/v1/models/sentiment"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(httpx.get(url).json()["model_version_status"]) < 2:
        time.sleep(0.2)
    status = {s["version"]: s for s in httpx.get(url).json()["model_version_status"]}
    assert status["1"]["state"] == "AVAILABLE"
    assert status["5"]["state"] == "END"
    assert status["5"]["status"]["error_code"] != "OK" and status["5"]["status"]["error_message"]
    answer = httpx.post(f"{url}:predict", json={"instances": [[0.05] * 384]})
    assert answer.status_code == 200
