"""The baseline the service must beat: one unbatched model call per request, as in a typical quick deployment.

`python -m perf.naive_server --port P --model-dir DIR`; same TFEncoder and XLA settings as the service."""

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict

from embedding_service.buckets import Buckets
from embedding_service.encoder import TFEncoder
from embedding_service.tokenizer import Tokenizer
from models.manifest import TOKENIZER_DIR, EncoderManifest
from stack.procs import LOOPBACK


class NaiveRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str]


class NaiveModel:
    """Tokenizer and encoder behind one call, as `model.predict(texts)` would be."""

    def __init__(self, model_dir: Path) -> None:
        self.manifest = EncoderManifest.read(model_dir)
        buckets = Buckets.default(32, self.manifest.max_seq_length)
        self._encoder = TFEncoder(model_dir, buckets, xla=True, mixed_precision=False)
        self._tokenizer = Tokenizer(model_dir / TOKENIZER_DIR, self.manifest.max_seq_length)
        for length in buckets.seq_lengths:
            self._encoder([np.ones(length, dtype=np.int32)])

    def predict(self, texts: list[str]) -> list[list[float]]:
        embeddings = self._encoder([t.ids for t in self._tokenizer(texts)])
        return [e.sentence.tolist() for e in embeddings]


def create_app(model_dir: Path) -> FastAPI:
    # One thread: the encoder is not thread-safe, and this keeps the event loop free while it runs.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.model = await asyncio.to_thread(NaiveModel, model_dir)
        yield
        executor.shutdown(wait=True)

    app = FastAPI(title="Naive embedding server", lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/embeddings")
    async def embeddings(body: NaiveRequest) -> Response:
        model: NaiveModel = app.state.model
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors = await asyncio.get_running_loop().run_in_executor(executor, model.predict, texts)
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ]
        payload = {"object": "list", "data": data, "model": model.manifest.model_name}
        return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    args = parser.parse_args()
    app = create_app(args.model_dir)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
