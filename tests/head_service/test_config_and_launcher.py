"""The TF Serving config files parse as TF Serving's own text protos; the launcher hands off to the real binary."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from head_service.config_protos import BatchingParameters, MonitoringConfig
from head_service.options import parse
from tests.servers import ROOT

CONFIG_DIR = ROOT / "head_service" / "tfserving"


def test_model_config_parses_as_model_server_config() -> None:
    config = text_format.Parse((CONFIG_DIR / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    [model] = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("head", "/models/head", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1


def test_batching_and_monitoring_configs_parse_as_their_protos() -> None:
    batching = text_format.Parse((CONFIG_DIR / "batching.config").read_text(), BatchingParameters())
    assert batching.max_batch_size.value == 256 and batching.num_batch_threads.value == 2
    monitoring = text_format.Parse((CONFIG_DIR / "monitoring.config").read_text(), MonitoringConfig())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_flags_read_the_config_files() -> None:
    options = parse(
        [
            "--model_config_file",
            str(CONFIG_DIR / "models.config"),
            "--enable_batching",
            "--batching_parameters_file",
            str(CONFIG_DIR / "batching.config"),
            "--monitoring_config_file",
            str(CONFIG_DIR / "monitoring.config"),
        ]
    )
    assert [m.name for m in options.models] == ["head"]
    assert options.batching is not None and options.batching.max_batch_size.value == 256
    assert options.prometheus_path == "/monitoring/prometheus/metrics"
    assert (options.port, options.rest_api_port, options.poll_wait_s) == (8500, 8501, 1.0)


@pytest.mark.slow
def test_the_real_binary_is_used_when_on_path(tmp_path: Path) -> None:
    """A `tensorflow_model_server` on PATH gets our flags, less the stand-in's own."""
    record = tmp_path / "argv"
    binary = tmp_path / "tensorflow_model_server"
    binary.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    flags = ["--port=9000", "--host", "127.0.0.1", "--model_name=head", "--model_base_path=/models/head"]
    subprocess.run(
        [sys.executable, "-m", "head_service", *flags],
        cwd=ROOT,
        check=True,
        timeout=120,
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
        capture_output=True,
    )
    assert record.read_text().split() == [
        "--port=9000",
        "--model_name=head",
        "--model_base_path=/models/head",
        "--rest_api_port=8501",
    ]


@pytest.mark.slow
def test_batching_file_without_enable_batching_is_refused() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "head_service",
            "--model_base_path=/x",
            f"--batching_parameters_file={CONFIG_DIR / 'batching.config'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "--batching_parameters_file requires --enable_batching" in result.stderr
