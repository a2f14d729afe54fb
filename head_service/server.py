"""The stand-in model server: loads every model, then serves gRPC and REST from one event loop until SIGTERM."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import grpc
import uvicorn

from head_service.config_reload import watch_model_config
from head_service.grpc_api import add_services
from head_service.manager import ModelManager
from head_service.monitoring import Metrics
from head_service.options import ServerOptions
from head_service.rest import create_rest_app
from head_service.runner import Runner

logger = logging.getLogger(__name__)

GRACE_S = 10.0


async def _load_all(manager: ModelManager, poll_wait_s: float) -> None:
    """Like TF Serving, the ports open only once every model has a version available; a model with no
    version directory yet is waited for, one whose versions all failed to load stops the server."""
    while True:
        await manager.sync()
        if manager.all_available():
            return
        waiting = [m for m in manager.models.values() if not m.loaded]
        failed = [m for m in waiting if m.failed]
        if failed:
            reasons = "; ".join(f.message for m in failed for f in m.failed.values())
            raise SystemExit(
                f"Failed to start server. Error: {len(failed)} model(s) did not become available: {reasons}"
            )
        logger.warning(
            "No versions of servable %s found under base path %s. Did you forget to name your leaf "
            "directory as a number (eg. '/1/')?",
            waiting[0].name,
            waiting[0].base_path,
        )
        await asyncio.sleep(max(poll_wait_s, 1.0))


class _RestServer(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` stops both front ends together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(options: ServerOptions) -> None:
    """Runs until SIGINT/SIGTERM, then stops accepting on both ports, lets in-flight calls finish (up to
    GRACE_S) and exits."""
    metrics = Metrics()
    manager = ModelManager(options.models, metrics.count_load)
    await _load_all(manager, options.poll_wait_s)
    runner = Runner(manager, options.batching, metrics)
    grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", 2**31 - 1)])
    add_services(grpc_server, runner)
    grpc_server.add_insecure_port(f"{options.host}:{options.port}")
    await grpc_server.start()
    logger.info("Running gRPC ModelServer at %s:%d ...", options.host, options.port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    tasks: set[asyncio.Task[object]] = {asyncio.create_task(stopping.wait())}
    if options.poll_wait_s > 0:
        tasks.add(asyncio.create_task(manager.poll(options.poll_wait_s)))
    if options.model_config_file is not None and options.config_poll_wait_s > 0:
        tasks.add(
            asyncio.create_task(watch_model_config(options.model_config_file, manager, options.config_poll_wait_s))
        )
    rest = None
    if options.rest_api_port:
        app = create_rest_app(runner, options.prometheus_path, options.rest_api_timeout_ms / 1e3)
        rest = _RestServer(
            uvicorn.Config(
                app,
                host=options.host,
                port=options.rest_api_port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=int(GRACE_S),
            )
        )
        tasks.add(asyncio.create_task(rest.serve(), name="rest"))
        logger.info("Exporting HTTP/REST API at:%s:%d ...", options.host, options.rest_api_port)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a front end or the poller that died brings the server down, loudly
    finally:
        logger.info("stopping: finishing in-flight requests")
        if rest is not None:
            rest.should_exit = True
        await grpc_server.stop(GRACE_S)
        for task in tasks:
            if task.get_name() != "rest":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if rest is not None and rest.server_state.tasks:
            # Requests uvicorn cancelled when its grace ran out answer (503, see rest.py) before the runner and
            # the loop close: uvicorn itself does not wait for them.
            await asyncio.wait(set(rest.server_state.tasks), timeout=1.0)
        runner.close()
