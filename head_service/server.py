"""The stand-in model server: loads every model, then serves gRPC and REST from one event loop until SIGTERM."""

import asyncio
import contextlib
import logging

import grpc
import uvicorn

from head_service.grpc_api import add_services
from head_service.manager import ModelManager
from head_service.monitoring import Metrics
from head_service.options import ServerOptions
from head_service.rest import create_rest_app
from head_service.runner import Runner

logger = logging.getLogger(__name__)

GRACE_S = 10.0


async def _load_all(manager: ModelManager, poll_wait_s: float) -> None:
    """Like TF Serving, the ports open only once every model's aspired versions are available."""
    while True:
        await manager.sync()
        if manager.all_available():
            return
        waiting = [m.name for m in manager.models.values() if not m.loaded]
        logger.warning(
            "no servable version of %s yet; did you forget to name your leaf directory as a number "
            "(eg. '/1/')? retrying",
            ", ".join(waiting),
        )
        await asyncio.sleep(max(poll_wait_s, 1.0))


async def serve(options: ServerOptions) -> None:
    manager = ModelManager(options.models)
    await _load_all(manager, options.poll_wait_s)
    runner = Runner(manager, options.batching, Metrics())
    grpc_server = grpc.aio.server()
    add_services(grpc_server, runner)
    grpc_server.add_insecure_port(f"{options.host}:{options.port}")
    await grpc_server.start()
    logger.info("Running gRPC ModelServer at %s:%d ...", options.host, options.port)
    poller = asyncio.create_task(manager.poll(options.poll_wait_s)) if options.poll_wait_s > 0 else None
    try:
        if options.rest_api_port:
            app = create_rest_app(runner, options.prometheus_path, options.rest_api_timeout_ms / 1e3)
            config = uvicorn.Config(
                app,
                host=options.host,
                port=options.rest_api_port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=int(GRACE_S),
            )
            logger.info("Exporting HTTP/REST API at:%s:%d ...", options.host, options.rest_api_port)
            await uvicorn.Server(config).serve()  # returns on SIGINT/SIGTERM, in-flight requests done
        else:
            await grpc_server.wait_for_termination()
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await grpc_server.stop(GRACE_S)
        runner.close()
