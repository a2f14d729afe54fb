"""The launcher's flags, named and defaulted as `tensorflow_model_server`'s, and the config files they name."""

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message
from tensorflow_serving.config import model_server_config_pb2

from head_service.config_protos import BatchingParameters, MonitoringConfig
from head_service.config_reload import ConfigError, read_model_config

# Ours alone: the stand-in binds loopback by default; the real binary always binds every interface.
STAND_IN_ONLY_FLAGS = ("--host",)
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    rest_api_port: int
    rest_api_timeout_ms: int
    poll_wait_s: float
    models: list[model_server_config_pb2.ModelConfig]
    model_config_file: Path | None  # re-read every config_poll_wait_s while serving, if that is > 0
    config_poll_wait_s: float
    batching: Message | None  # BatchingParameters when --enable_batching
    prometheus_path: str | None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m head_service", description=__doc__)
    p.add_argument("--port", type=int, default=8500, help="gRPC port")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0: no REST)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000)
    p.add_argument("--model_name", default="default")
    p.add_argument("--model_base_path", default="")
    p.add_argument("--model_config_file", default="")
    # TF Serving's flag is an int32; fractions (tests' 0.5 s) only work with the stand-in.
    p.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="re-read --model_config_file this often (0: read once, at start-up)",
    )
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    p.add_argument("--enable_batching", type=_flag_bool, nargs="?", const=True, default=False)
    p.add_argument("--batching_parameters_file", default="")
    p.add_argument("--monitoring_config_file", default="")
    p.add_argument("--host", default="127.0.0.1", help="(stand-in only) address to bind")
    return p


def _flag_bool(value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _read_text_proto(path: str, message: Message) -> Message:
    try:
        return text_format.Parse(Path(path).read_text(encoding="utf-8"), message)
    except (OSError, text_format.ParseError) as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from exc


def parse(argv: Sequence[str]) -> ServerOptions:
    args = parser().parse_args(argv)
    if args.model_config_file:
        try:
            models = read_model_config(Path(args.model_config_file)) or []
        except ConfigError as exc:
            raise SystemExit(f"cannot read {args.model_config_file}: {exc}") from exc
    elif args.model_base_path:
        models = [model_server_config_pb2.ModelConfig(name=args.model_name, base_path=args.model_base_path)]
    else:
        raise SystemExit(
            "Both server config file and model base path are empty: give --model_base_path or --model_config_file"
        )
    if args.batching_parameters_file and not args.enable_batching:
        raise SystemExit("--batching_parameters_file requires --enable_batching")
    batching = None
    if args.enable_batching:
        batching = BatchingParameters()
        if args.batching_parameters_file:
            batching = _read_text_proto(args.batching_parameters_file, batching)
    prometheus_path = None
    if args.monitoring_config_file:
        monitoring = _read_text_proto(args.monitoring_config_file, MonitoringConfig())
        prometheus = getattr(monitoring, "prometheus_config")  # noqa: B009 - a dynamic message class
        if prometheus.enable:
            prometheus_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    return ServerOptions(
        host=args.host,
        port=args.port,
        rest_api_port=args.rest_api_port,
        rest_api_timeout_ms=args.rest_api_timeout_in_ms,
        poll_wait_s=args.file_system_poll_wait_seconds,
        models=models,
        model_config_file=Path(args.model_config_file) if args.model_config_file else None,
        config_poll_wait_s=args.model_config_file_poll_wait_seconds,
        batching=batching,
        prometheus_path=prometheus_path,
    )
