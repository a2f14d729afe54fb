"""The TF Serving config files parse as TF Serving's own text protos (and are refused where TF Serving refuses
them); the local stack's config is the shipped one, moved; the launcher hands off to the real binary."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from head_service.config_protos import BatchingParameters, MonitoringConfig
from head_service.config_reload import ConfigError, parse_model_config
from head_service.options import parse
from stack.services import DEFAULT_HEAD, HEADS, head, local_heads_config, read_config, read_heads, write_heads
from tests.servers import ROOT

CONFIG_DIR = ROOT / "head_service" / "tfserving"


def test_model_config_parses_as_model_server_config() -> None:
    config = text_format.Parse((CONFIG_DIR / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    models = [(m.name, m.base_path, m.model_platform) for m in config.model_config_list.config]
    assert models == [
        ("sentiment", "/models/heads/sentiment", "tensorflow"),
        ("topic", "/models/heads/topic", "tensorflow"),
    ]
    assert all(m.model_version_policy.latest.num_versions == 1 for m in config.model_config_list.config)
    assert HEADS == ("sentiment", "topic") and HEADS[0] == DEFAULT_HEAD


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("model_config_list { config { name: 'a' } }\nnope: 1", "nope"),
        ("model_config_list { config { name: 'a' } config { name: 'a' } }", "Illegal to list model a multiple times"),
        ("custom_model_config {}", "custom_model_config: the stand-in serves a model_config_list only"),
    ],
)
def test_a_model_config_tf_serving_refuses(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_model_config(text)


def test_an_empty_model_config_is_no_action_and_an_empty_list_serves_nothing() -> None:
    assert parse_model_config("# nothing\n") is None
    assert parse_model_config("model_config_list {}") == []


def test_local_config_moves_the_shipped_base_paths(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    assert local_heads_config(tmp_path / "heads", config, ["topic"]) == {"topic": tmp_path / "heads" / "topic"}
    write_heads(config, {**read_heads(config), "third": tmp_path / "third"})
    [topic, third] = read_config(config).model_config_list.config
    assert (topic.name, topic.base_path, topic.model_version_policy.latest.num_versions) == (
        "topic",
        str(tmp_path / "heads" / "topic"),
        1,
    )
    assert (third.name, third.base_path, third.model_platform) == ("third", str(tmp_path / "third"), "tensorflow")
    service = head(1, 2, tmp_path / "heads", config, heads=["topic"], config_poll_wait_s=0.5)
    assert service.ready_path == "/v1/models/topic/metadata"
    assert f"--model_config_file {config} --model_config_file_poll_wait_seconds 0.5 " in " ".join(service.args)
    assert list(read_heads(config)) == ["topic"]  # rewritten from the shipped config


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
    assert [m.name for m in options.models] == ["sentiment", "topic"]
    assert (options.model_config_file, options.config_poll_wait_s) == (CONFIG_DIR / "models.config", 0.0)
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
