"""How each service is started: module, flags and environment, in the one place `make run`, tests and
perf/ share, so they cannot drift apart."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stack.procs import LOOPBACK

ROOT = Path(__file__).resolve().parent.parent
HEAD_MODEL_NAME = "head"
MONITORING_CONFIG = ROOT / "head_service" / "tfserving" / "monitoring.config"


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    url: str  # where it answers HTTP
    ready_path: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def ready_url(self) -> str:
        return self.url + self.ready_path


def _env(prefix: str, settings: Mapping[str, str]) -> dict[str, str]:
    """{"max_wait_ms": "2"} -> {"EMBEDDING_MAX_WAIT_MS": "2"}."""
    return {f"{prefix}{name.upper()}": value for name, value in settings.items()}


def embedding(port: int, model_dir: Path, **settings: str) -> Service:
    """`settings`: EMBEDDING_* overrides by lower-case name."""
    env = _env("EMBEDDING_", {"host": LOOPBACK, "port": str(port), "model_dir": str(model_dir), **settings})
    return Service("embedding", "embedding_service", f"http://{LOOPBACK}:{port}", "/readyz", env=env)


def head(grpc_port: int, rest_port: int, base_path: Path, *flags: str) -> Service:
    """Serves model `head` from `base_path`; `flags` are more TF Serving flags. Ready once a version is
    loaded (its metadata answers), not merely when the model is known."""
    args = (
        *("--port", str(grpc_port), "--rest_api_port", str(rest_port)),
        *("--model_name", HEAD_MODEL_NAME, "--model_base_path", str(base_path)),
        *("--monitoring_config_file", str(MONITORING_CONFIG)),
        *flags,
    )
    return Service(
        "head", "head_service", f"http://{LOOPBACK}:{rest_port}", f"/v1/models/{HEAD_MODEL_NAME}/metadata", args
    )


def orchestrator(port: int, embedding_url: str, head_grpc_port: int, head_rest_port: int, **settings: str) -> Service:
    """`settings`: ORCHESTRATOR_* overrides by lower-case name."""
    env = _env(
        "ORCHESTRATOR_",
        {
            "host": LOOPBACK,
            "port": str(port),
            "embedding_url": embedding_url,
            "head_grpc_target": f"{LOOPBACK}:{head_grpc_port}",
            "head_rest_url": f"http://{LOOPBACK}:{head_rest_port}",
            **settings,
        },
    )
    return Service("orchestrator", "orchestrator", f"http://{LOOPBACK}:{port}", "/readyz", env=env)
