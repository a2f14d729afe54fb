"""create_app: the embedding service's FastAPI app, whose lifespan loads, warms up and drains the model."""

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware import Middleware

from embedding_service.admission import AdmissionMiddleware
from embedding_service.api import router
from embedding_service.batcher import DynamicBatcher
from embedding_service.cache import EmbeddingCache
from embedding_service.embedder import Embedder
from embedding_service.encoder import Encoder
from embedding_service.encoder_thread import gated
from embedding_service.lanes import Lanes
from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
from embedding_service.metrics import ENCODER_INFO
from embedding_service.precision import describe
from embedding_service.schemas import IDENTITY_HEADER, PRECISION_HEADER, Runtime
from embedding_service.settings import EmbeddingSettings, chosen_encoder
from embedding_service.tokenizer import Tokenizer
from service_common.app import cancel, drain_budget_s, service_app, stopping_event

logger = logging.getLogger(__name__)


class ModelSlot:
    """Holds the embedder once it is loaded and warm; the server answers health checks meanwhile."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.settings = settings
        self.manifest = EncoderManifest.read(settings.model_dir)
        self.embedder: Embedder | None = None
        self.batcher: DynamicBatcher | None = None
        self.failure: str | None = None
        self.runtime: Runtime | None = None

    def has_room(self) -> bool:
        """Whether the queue could take a request now (until the model is loaded, the route answers 503)."""
        return self.embedder is None or self.embedder.has_room()

    def closing(self) -> bool:
        """Whether the service is draining: its batcher refuses every new text."""
        return self.batcher is not None and self.batcher.closing

    def not_ready_reason(self) -> str | None:
        if self.embedder is not None:
            return None
        return self.failure or "the model is loading and warming up"

    async def drain_when(self, stopping: asyncio.Event) -> None:
        """Drains the batcher as soon as the server stops accepting, within its grace period."""
        await stopping.wait()
        if self.batcher is not None:
            await self.batcher.drain()

    async def load(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        started = time.perf_counter()
        try:
            chosen = await asyncio.to_thread(chosen_encoder, settings)
            encoder: Encoder = chosen.encoder
            # The manifest read with the weights: what the model card, headers, metric and cache say is theirs.
            self.manifest = manifest = encoder.manifest
            tokenizer = await asyncio.to_thread(Tokenizer, settings.model_dir / TOKENIZER_DIR, manifest.max_seq_length)
            if settings.chunk_overlap_tokens * 2 > tokenizer.max_content:
                raise ValueError(
                    f"chunk_overlap_tokens {settings.chunk_overlap_tokens} is over half of a window "
                    f"({tokenizer.max_content} tokens)"
                )
            pool = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="tokenizer")
            stack.callback(pool.shutdown, wait=False, cancel_futures=True)
            gate = settings.test_encoder_gate
            cache = None
            if settings.cache_bytes:
                store = EmbeddingCache(settings.cache_bytes)
                cache = store.for_encoder(manifest.identity, encoder.precision)
            batcher = DynamicBatcher(  # built before the long warm-up, so a bad budget fails at once
                gated(encoder, Path(gate)) if gate else encoder,
                encoder.buckets,
                max_batch_tokens=settings.max_batch_tokens,
                max_wait_s=settings.max_wait_ms / 1e3,
                max_queue_texts=settings.max_queue_texts,
                drain_timeout_s=drain_budget_s(settings),
                lanes=Lanes(settings.lane_policy),
                cache=cache,
                group_window=settings.group_window,
            )
            await asyncio.to_thread(encoder.warm_up, settings.max_batch_tokens)
            self.batcher = await stack.enter_async_context(batcher)
        except Exception as exc:
            self.failure = f"model failed to load: {exc}"
            logger.exception("model failed to load; stopping")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        # TensorFlow and transformers leave ~500k long-lived objects; a full collection walking them
        # stalls every request for ~250 ms (measured: it was the service's p99). Freezing moves them out
        # of the collector's reach; only objects created from here on are scanned.
        gc.collect()
        gc.freeze()
        self.runtime = Runtime(
            backend=encoder.backend,
            device=encoder.device,
            precision=encoder.precision,
            choice=chosen.choice,
            int8=encoder.int8,
            encoder_threads=encoder.threads,
            tokenizer_threads=settings.tokenizer_threads,
            group_window=settings.group_window,
            ready_s=round(time.perf_counter() - started, 2),
        )
        self.embedder = Embedder(manifest, tokenizer, batcher, settings, pool)
        runtime = self.runtime
        ENCODER_INFO.info(
            {
                "model": manifest.model_name,
                "identity": manifest.identity,
                "precision": runtime.precision,
                "backend": runtime.backend,
                "device": runtime.device,
            }
        )
        logger.info(
            "ready in %.1fs: %s (identity %s), backend %s on %s in %s, %d encoder threads, %d tokenizer threads, "
            "group window %d",
            runtime.ready_s,
            manifest.model_name,
            manifest.identity,
            runtime.backend,
            runtime.device,
            runtime.precision,
            runtime.encoder_threads,
            runtime.tokenizer_threads,
            runtime.group_window,
        )
        logger.info("precision %s: %s", runtime.precision, describe(runtime.choice, runtime.int8))


def create_app(settings: EmbeddingSettings) -> FastAPI:
    slot = ModelSlot(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            loading = asyncio.create_task(slot.load(stack))
            draining = asyncio.create_task(slot.drain_when(stopping_event(app)))
            yield
            await cancel(loading)
            await cancel(draining)

    admission = Middleware(AdmissionMiddleware, has_room=slot.has_room, closing=slot.closing)
    app = service_app(
        "Embedding service",
        settings,
        lifespan,
        slot.not_ready_reason,
        router,
        admission=admission,
        expose_headers=(IDENTITY_HEADER, PRECISION_HEADER),
    )
    app.state.model = slot
    return app
