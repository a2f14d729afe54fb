"""`make run`'s launcher: all three services up and answering, then Ctrl-C stops every one of them."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from embedding_service.settings import EmbeddingSettings
from orchestrator.settings import OrchestratorSettings
from service_common.auth import matched_key
from stack import services
from stack.procs import free_port, server_env
from stack.services import HEADS, ROOT, read_heads
from tests.conftest import copy_heads

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_run_starts_all_three_and_ctrl_c_stops_them(encoder_dir: Path, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("embedding", "grpc", "rest", "orchestrator")}
    heads_root, config = copy_heads(tmp_path / "heads"), tmp_path / "models.config"
    command = [
        *(sys.executable, "-m", "stack"),
        *("--embedding-port", str(ports["embedding"]), "--orchestrator-port", str(ports["orchestrator"])),
        *("--head-grpc-port", str(ports["grpc"]), "--head-rest-port", str(ports["rest"])),
        *("--encoder", str(encoder_dir), "--heads", str(heads_root), "--head-config", str(config)),
    ]
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        # No XLA: the launcher is under test here, not the compile time.
        launcher = subprocess.Popen(command, cwd=ROOT, env=server_env({"EMBEDDING_XLA": "false"}), stderr=out)
    try:
        started = time.perf_counter()
        while "all three are ready" not in log.read_text():
            assert launcher.poll() is None, log.read_text()[-3000:]
            assert time.perf_counter() - started < 300, log.read_text()[-3000:]
            time.sleep(0.5)
        printed = log.read_text()
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", printed)]
        assert len(pids) == 3
        url = f"http://127.0.0.1:{ports['orchestrator']}"
        assert f"curl -s {url}/classify" in printed
        response = httpx.post(f"{url}/classify", json={"text": "I loved it."}, timeout=30)
        assert response.status_code == 200, response.text
        embeddings = httpx.post(f"http://127.0.0.1:{ports['embedding']}/v1/embeddings", json={"input": "hi"})
        assert embeddings.status_code == 200
        # Every shipped head, from the heads root, by a config the launcher wrote for the head to re-read.
        assert read_heads(config) == {name: heads_root / name for name in HEADS}
        for name in HEADS:
            assert httpx.get(f"http://127.0.0.1:{ports['rest']}/v1/models/{name}/metadata").status_code == 200

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=90) == 0
        assert not [pid for pid in pids if _alive(pid)]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for pid in map(int, re.findall(r"\(pid (\d+)\)", log.read_text())):
            if _alive(pid):  # only when the test failed: the launcher stops its children itself
                os.kill(pid, signal.SIGKILL)


def test_make_run_refuses_to_start_without_every_head(tmp_path: Path) -> None:
    """TF Serving would wait forever for a head with no version: the launcher says what to do instead."""
    copy_heads(tmp_path / "heads", HEADS[:1])
    result = subprocess.run(
        [sys.executable, "-m", "stack", "--heads", str(tmp_path / "heads"), "--head-config", str(tmp_path / "m")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f"no version of {', '.join(HEADS[1:])} under {tmp_path / 'heads'}: run `make models`" in result.stderr
    assert not (tmp_path / "m").exists()


def settings_of(service: services.Service, prefix: str) -> dict[str, str]:
    return {name.removeprefix(prefix).lower(): value for name, value in service.env.items()}


def test_the_builders_give_the_orchestrator_a_lane_key_that_the_embedding_service_takes(tmp_path: Path) -> None:
    """What `make run` and every test pipeline start with: the orchestrator's priority with no setup, from a
    key new to this process, which no other caller can know."""
    embedding = EmbeddingSettings.model_validate(settings_of(services.embedding(8081, tmp_path), "EMBEDDING_"))
    orchestrator = OrchestratorSettings.model_validate(
        settings_of(services.orchestrator(8080, "http://127.0.0.1:8081", 8500, 8501), "ORCHESTRATOR_")
    )
    key = services.orchestrator_lane_key()
    assert orchestrator.embedding_key == key and len(key) >= 32
    matched = matched_key(key.encode(), embedding.identity_key_digests)
    assert matched is not None and embedding.identity_key_names[matched] == "orchestrator"
    assert embedding.api_key_digests == ()  # auth stays off: anyone else is served, as anonymous
    # A caller's own choice wins.
    assert services.embedding(8081, tmp_path, lane_keys="").env["EMBEDDING_LANE_KEYS"] == ""
    own = services.orchestrator(8080, "http://x", 1, 2, embedding_api_key_file="/run/key").env
    assert "ORCHESTRATOR_EMBEDDING_API_KEY" not in own and own["ORCHESTRATOR_EMBEDDING_API_KEY_FILE"] == "/run/key"
