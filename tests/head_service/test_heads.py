"""Several heads in one server, from one model config file that is re-read while serving
(--model_config_file_poll_wait_seconds): heads added and removed with no restart, as TF Serving does."""

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from head_service.errors import HeadError
from head_service.manager import ModelManager
from stack.services import DEFAULT_HEAD, HEADS, read_heads, write_heads
from tests.conftest import HeadServer, built_head, copy_heads, running_head

pytestmark = pytest.mark.slow

DIM = 384
ROWS = np.random.default_rng(11).normal(size=(2, DIM)).astype(np.float32)
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
CONFIG_ERROR = "Failed to read ModelServerConfig file"


def predict(target: str, name: str) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["embeddings"].CopyFrom(tf.make_tensor_proto(ROWS))
    with grpc.insecure_channel(target) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)


def grpc_status(target: str, name: str) -> list[tuple[int, int]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    with grpc.insecure_channel(target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    return [(status.version, status.state) for status in response.model_version_status]


def grpc_error(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def rest_metadata(server: HeadServer, name: str) -> httpx.Response:
    return httpx.get(f"{server.rest_url}/v1/models/{name}/metadata", timeout=10)


def rest_predict(server: HeadServer, name: str) -> httpx.Response:
    return httpx.post(f"{server.rest_url}/v1/models/{name}:predict", json={"instances": ROWS.tolist()}, timeout=30)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> float:
    """Seconds until `condition()` held; the config is polled every 0.5 s, a head loads in about 1 s."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s:.0f}s: {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def loaded(server: HeadServer, name: str) -> bool:
    return rest_metadata(server, name).status_code == 200


def replace_text(path: Path, text: str) -> None:
    """In one rename, as an editor or a ConfigMap update does: the server never reads half a file."""
    staging = path.with_name(f".{path.name}.new")
    staging.write_text(text)
    staging.replace(path)


def edit_config(server: HeadServer, edit: Callable[[dict[str, Path]], None]) -> None:
    heads = read_heads(server.config_path)
    edit(heads)
    write_heads(server.config_path, heads)


class Looper(threading.Thread):
    """Predicts on one head back to back over gRPC, recording every failure."""

    def __init__(self, target: str, name: str) -> None:
        super().__init__(daemon=True)
        self.target, self.name = target, name
        self.answers = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                predict(self.target, self.name)
                self.answers += 1
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")

    def __enter__(self) -> "Looper":
        self.start()
        wait_for(lambda: self.answers > 0, f"{self.name} answers")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.join(15)


@pytest.fixture
def heads_server(tmp_path: Path) -> Iterator[HeadServer]:
    """Both shipped heads served from copies, and a third head on disk that the config does not list yet."""
    heads_root = copy_heads(tmp_path / "heads")
    shutil.copytree(built_head(DEFAULT_HEAD) / "1", heads_root / "third" / "1")
    with running_head(heads_root, tmp_path / "head.log") as server:
        yield server


@pytest.mark.parametrize("name", HEADS)
def test_every_shipped_head_answers_over_grpc_and_rest_with_its_own_metadata(
    head_server: HeadServer, name: str
) -> None:
    assert list(read_heads(head_server.config_path)) == list(HEADS) == ["sentiment", "topic"]
    response = predict(head_server.grpc_target, name)
    assert (response.model_spec.name, response.model_spec.version.value) == (name, 1)
    assert tf.make_ndarray(response.outputs["probabilities"]).shape[0] == len(ROWS)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = name
    with grpc.insecure_channel(head_server.grpc_target) as channel:
        metadata = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=10)
    assert (metadata.model_spec.name, metadata.model_spec.version.value) == (name, 1)
    assert grpc_status(head_server.grpc_target, name) == [(1, AVAILABLE)]

    rest = rest_predict(head_server, name)
    assert rest.status_code == 200 and len(rest.json()["predictions"]) == len(ROWS)
    assert rest_metadata(head_server, name).json()["model_spec"] == {"name": name, "signature_name": "", "version": "1"}


def test_heads_added_and_removed_in_the_config_while_serving(heads_server: HeadServer) -> None:
    target, pid = heads_server.grpc_target, heads_server.process.pid
    assert grpc_error(lambda: grpc_status(target, "third")) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model third",
    )
    assert rest_metadata(heads_server, "third").json() == {"error": "Servable not found for request: Latest(third)"}

    with Looper(target, DEFAULT_HEAD) as sentiment:
        edit_config(heads_server, lambda heads: heads.update(third=heads_server.heads_root / "third"))
        added_s = wait_for(lambda: loaded(heads_server, "third"), "third loaded")
        assert grpc_status(target, "third") == [(1, AVAILABLE)]
        assert rest_metadata(heads_server, "third").json()["model_spec"]["name"] == "third"
        assert predict(target, "third").model_spec.name == "third"
        assert rest_predict(heads_server, "third").status_code == 200

        edit_config(heads_server, lambda heads: heads.pop("topic"))
        removed_s = wait_for(lambda: not loaded(heads_server, "topic"), "topic unloaded")
        gone = rest_metadata(heads_server, "topic")
        assert (gone.status_code, gone.json()) == (404, {"error": "Servable not found for request: Latest(topic)"})
        assert rest_predict(heads_server, "topic").json() == {"error": "Servable not found for request: Latest(topic)"}
        assert grpc_error(lambda: predict(target, "topic")) == (
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(topic)",
        )
        # TF Serving's state monitor remembers what it unloaded: the status says END, not NOT_FOUND.
        assert grpc_status(target, "topic") == [(1, END)]
        answered = sentiment.answers
        assert predict(target, "third").model_spec.name == "third"
        wait_for(lambda: sentiment.answers > answered, "sentiment still answering")
    assert sentiment.failures == []
    assert heads_server.process.poll() is None and heads_server.process.pid == pid  # no restart
    assert added_s < 10 and removed_s < 10


def test_a_config_that_becomes_invalid_is_ignored_and_the_next_valid_one_applies(
    heads_server: HeadServer, tmp_path: Path
) -> None:
    config, log = heads_server.config_path, tmp_path / "head.log"
    valid = config.read_text()
    replace_text(config, valid.replace("model_config_list {", "model_config_list {{", 1))  # a parse error
    time.sleep(2.0)  # four polls
    assert log.read_text().count(CONFIG_ERROR) == 1, log.read_text()[-3000:]
    for name in HEADS:
        assert predict(heads_server.grpc_target, name).model_spec.name == name

    replace_text(config, valid.replace('name: "topic"', 'name: "sentiment"'))  # TF Serving refuses it whole
    time.sleep(1.5)
    assert log.read_text().count(CONFIG_ERROR) == 2
    assert "Illegal to list model sentiment multiple times in config list" in log.read_text()
    assert all(loaded(heads_server, name) for name in HEADS)

    replace_text(config, valid)
    edit_config(heads_server, lambda heads: heads.pop("topic"))  # and polling goes on
    wait_for(lambda: not loaded(heads_server, "topic"), "topic unloaded")
    assert loaded(heads_server, DEFAULT_HEAD)


def test_a_call_running_on_a_removed_head_finishes(tmp_path: Path) -> None:
    """With --enable_batching a call waits in the batch queue for the batch timeout (4 s here), holding the
    version it resolved: the head is removed meanwhile, new calls get NOT_FOUND, the waiting one answers."""
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 4000000 }\n")
    extra = ("--enable_batching", "--batching_parameters_file", str(params))
    with (
        running_head(copy_heads(tmp_path / "heads"), tmp_path / "head.log", *extra) as server,
        ThreadPoolExecutor(1) as pool,
    ):
        started = time.monotonic()
        held = pool.submit(rest_predict, server, "topic")
        time.sleep(1.0)  # it has reached the batch queue
        edit_config(server, lambda heads: heads.pop("topic"))
        wait_for(lambda: not loaded(server, "topic"), "topic unloaded")
        assert rest_predict(server, "topic").status_code == 404
        assert not held.done(), "the held call ended before the head was removed: the check proves nothing"
        answer = held.result(timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == len(ROWS)
        assert time.monotonic() - started >= 4.0  # it did wait out the batch timeout


def model_config(base_path: Path, *versions: int) -> model_server_config_pb2.ModelConfig:
    config = model_server_config_pb2.ModelConfig(name="m", base_path=str(base_path), model_platform="tensorflow")
    if versions:
        config.model_version_policy.specific.versions.extend(versions)
    return config


async def test_a_changed_base_path_or_version_policy_takes_effect(default_head: Path, tmp_path: Path) -> None:
    """In-process: each version of the new base path replaces the old path's once it has loaded; the version
    policy applies at once; a model left out is unloaded, and a caller holding a version can still run it.
    Each load is counted, by its directory (TF Serving's load_attempt_count)."""
    for base, version in [("a", 1), ("b", 1), ("b", 2)]:
        shutil.copytree(default_head / "1", tmp_path / base / str(version))
    loads: list[tuple[str, bool]] = []
    manager = ModelManager([model_config(tmp_path / "a")], lambda path, loaded: loads.append((path, loaded)))
    await manager.sync()
    held = manager.resolve("m", None, None)
    assert held.path == tmp_path / "a" / "1"

    await manager.reconfigure([model_config(tmp_path / "b", 1)])  # version 1 again, from the new path
    assert manager.resolve("m", None, None).path == tmp_path / "b" / "1"
    await manager.reconfigure([model_config(tmp_path / "b")])  # the default policy: the latest, version 2
    assert manager.resolve("m", None, None).path == tmp_path / "b" / "2"
    assert [(s.version, s.state) for s in manager.model("m").status(None)] == [(2, AVAILABLE), (1, END)]

    await manager.reconfigure([])
    with pytest.raises(HeadError) as raised:
        manager.resolve("m", None, None)
    assert raised.value.message == "Servable not found for request: Latest(m)"
    assert {s.state for s in manager.model("m").status(None)} == {END}
    signature = held.signature("serving_default")
    assert signature is not None and signature.run({"embeddings": ROWS}, [])["probabilities"].shape[0] == len(ROWS)
    assert loads == [(str(tmp_path / base / str(version)), True) for base, version in [("a", 1), ("b", 1), ("b", 2)]]
