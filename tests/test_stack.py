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
