"""`python -m stack` (`make run`): the embedding service, the head and the orchestrator on loopback.

Starts all three, waits until each is ready, prints where they are and a request to try, and on
Ctrl-C (or SIGTERM) stops them all gracefully. If one of them dies, the others are stopped too."""

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from embedding_service.settings import EmbeddingSettings
from orchestrator.settings import OrchestratorSettings
from stack import services
from stack.procs import ServerStartError, server_env, start_module, stop, wait_until_ok
from stack.services import DEFAULT_HEADS_ROOT, HEADS, ROOT, Service

READY_TIMEOUT_S = 600.0  # a first start compiles every XLA shape: about a minute on 2 cores


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    p.add_argument("--embedding-port", type=int, default=EmbeddingSettings.model_fields["port"].default)
    p.add_argument("--head-grpc-port", type=int, default=8500)
    p.add_argument("--head-rest-port", type=int, default=8501)
    p.add_argument("--orchestrator-port", type=int, default=OrchestratorSettings.model_fields["port"].default)
    p.add_argument("--encoder", type=Path, default=ROOT / "build" / "encoder", help="exported encoder")
    p.add_argument(
        "--heads", type=Path, default=DEFAULT_HEADS_ROOT, help=f"the heads' root: <root>/<name>/<version> for {HEADS}"
    )
    p.add_argument(
        "--head-config",
        type=Path,
        default=ROOT / "build" / "models.config",
        help="where to write the head's model config (edit it while serving to add or remove heads)",
    )
    return p


def _missing_heads(heads_root: Path) -> list[str]:
    """Shipped heads without a version directory: TF Serving would wait for them forever."""
    versions = {name: [m.parent.name for m in (heads_root / name).glob("*/saved_model.pb")] for name in HEADS}
    return [name for name, found in versions.items() if not any(v.isdigit() for v in found)]


def _say(message: str) -> None:
    print(f"[make run] {message}", file=sys.stderr, flush=True)


def _usage(embedding: Service, orchestrator: Service, head: Service, grpc_port: int, head_config: Path) -> str:
    return f"""
  orchestrator       {orchestrator.url}   POST /classify
  embedding service  {embedding.url}   POST /v1/embeddings, POST /embed
  head (TF Serving)  {head.url}   REST; gRPC on port {grpc_port}; heads {", ".join(HEADS)}
                     from {head_config} (re-read while serving: add or remove heads there)

  curl -s {orchestrator.url}/classify -H 'Content-Type: application/json' \\
    -d '{{"texts": ["What a wonderful film.", "The service was awful."]}}'
  curl -s {embedding.url}/v1/embeddings -H 'Content-Type: application/json' \\
    -d '{{"input": "hello world", "model": "all-MiniLM-L6-v2"}}'
  python -m orchestrator.cli "I loved every minute of it."

Ctrl-C stops all three.
"""


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = _parser().parse_args()
    missing = _missing_heads(args.heads)
    if missing:
        _say(f"no version of {', '.join(missing)} under {args.heads}: run `make models`")
        return 1
    embedding = services.embedding(args.embedding_port, args.encoder)
    head = services.head(args.head_grpc_port, args.head_rest_port, args.heads, args.head_config)
    orchestrator = services.orchestrator(
        args.orchestrator_port,
        embedding.url,
        args.head_grpc_port,
        args.head_rest_port,
        head_config_file=str(args.head_config),  # the heads the head serves, as it re-reads them
    )
    # SIGTERM stops everything as Ctrl-C does; SIGINT explicitly too, since a shell starting us in the
    # background hands us SIGINT ignored, and Python then never raises KeyboardInterrupt.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service in (embedding, head, orchestrator):
            # Own sessions: Ctrl-C reaches only this launcher, which stops each child by PID, in order.
            env = server_env(service.env)
            procs[service.name] = start_module(service.module, service.args, env, start_new_session=True)
            _say(f"started {service.name} (pid {procs[service.name].pid}): python -m {service.module}")
        for service in (head, embedding, orchestrator):
            waited = wait_until_ok(procs[service.name], service.ready_url, READY_TIMEOUT_S)
            _say(f"{service.name} ready ({waited:.0f}s)")
        _say("all three are ready" + _usage(embedding, orchestrator, head, args.head_grpc_port, args.head_config))
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    _say(f"{name} exited with status {proc.returncode}; stopping the others")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except ServerStartError as exc:
        _say(f"could not start: {exc}")
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the stopping short
            signal.signal(signum, signal.SIG_IGN)
        for name, proc in reversed(procs.items()):
            _say(f"stopping {name}")
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
