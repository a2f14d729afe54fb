"""create_app: the orchestrator's FastAPI app, whose lifespan owns its downstream clients (one per embedding
service, and the head's)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from orchestrator.api import classify_route, router
from orchestrator.clients.embedding import EmbeddingClient
from orchestrator.clients.head import HeadClient
from orchestrator.clients.head_grpc import HeadGrpcClient
from orchestrator.clients.head_rest import HeadRestClient
from orchestrator.coalescer import Coalescer
from orchestrator.encoders import EmbeddingEndpoints
from orchestrator.heads import HeadRegistry
from orchestrator.pipeline import Pipeline
from orchestrator.readiness import DownstreamMonitor
from orchestrator.settings import OrchestratorSettings
from orchestrator.versions import VersionCatalog
from service_common.app import cancel, drain_budget_s, service_app, stopping_event


async def _drain_when(stopping: asyncio.Event, coalescer: Coalescer, grace_s: float) -> None:
    """Drains the coalescer as soon as the server stops accepting, within its grace period."""
    await stopping.wait()
    await coalescer.aclose(grace_s)


def create_app(settings: OrchestratorSettings) -> FastAPI:
    registry = HeadRegistry(Path(settings.head_config_file), settings.default_head)
    monitor = DownstreamMonitor(settings.ready_interval_s, settings.ready_timeout_s)
    clients = [EmbeddingClient(settings, url) for url in settings.embedding_url_list]
    endpoints = EmbeddingEndpoints(clients, settings.ready_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for client in clients:
                await stack.enter_async_context(client)
            head: HeadClient = await stack.enter_async_context(
                HeadGrpcClient(settings) if settings.head_protocol == "grpc" else HeadRestClient(settings)
            )
            catalog = VersionCatalog(head, settings.head_timeout_s)
            pipeline = Pipeline(endpoints, head, catalog, registry, settings.head_timeout_s)
            app.state.coalescer = coalescer = Coalescer(
                pipeline,
                max_batch_texts=settings.max_batch_texts,
                max_in_flight=settings.max_in_flight_batches,
                max_queue_texts=settings.max_queue_texts,
            )
            watching = asyncio.create_task(monitor.watch(pipeline))
            draining = asyncio.create_task(_drain_when(stopping_event(app), coalescer, drain_budget_s(settings)))
            yield
            await cancel(watching)
            await cancel(draining)
            await coalescer.aclose(grace_s=0)  # before the clients it calls are closed

    app = service_app(
        "Orchestrator",
        settings,
        lifespan,
        monitor.not_ready_reason,
        router,
        direct=[classify_route(registry, settings.request_timeout_s)],
    )
    app.state.heads = registry
    app.state.endpoints = endpoints
    return app
