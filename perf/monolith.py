"""Scheme 1, the baseline the split pipeline must beat: one web process holding tokenizer, encoder and head,
one unbatched model call per request, as in the common "Flask + model.predict" deployment.

`python -m perf.monolith --port P --encoder build/encoder --head build/heads/sentiment/1 [--xla]`; answers
POST /classify
as the orchestrator does, so the benchmark sends both the same requests."""

import argparse
import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import tensorflow as tf
import uvicorn
from fastapi import FastAPI, HTTPException, Response

from embedding_service.buckets import Buckets
from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
from embedding_service.tf_encoder import TFEncoder
from embedding_service.tokenizer import Tokenizer
from orchestrator.api import response_body
from orchestrator.pipeline import Classified
from orchestrator.schemas import ClassifyRequest
from stack.procs import LOOPBACK
from stack.services import DEFAULT_HEAD


class Monolith:
    """Tokenizer, encoder and head behind one `predict(texts)`, as `model.predict(texts)` would be."""

    def __init__(self, encoder_dir: Path, head_dir: Path, *, xla: bool) -> None:
        manifest = EncoderManifest.read(encoder_dir)
        buckets = Buckets.default(32, manifest.max_seq_length)
        self._tokenizer = Tokenizer(encoder_dir / TOKENIZER_DIR, manifest.max_seq_length)
        self._encoder = TFEncoder(encoder_dir, buckets, xla=xla)
        head: Any = tf.saved_model.load(str(head_dir))
        self._head = head  # keeps the variables the signature reads alive
        self._probabilities = head.signatures["serving_default"]
        names = head.signatures["labels"](embeddings=tf.zeros([1, manifest.embedding_dim]))["labels"]
        self._labels = [name.decode() for name in names.numpy()[0]]
        self._version = int(head_dir.name)  # TF Serving's layout: <base path>/<version>
        self._identity = manifest.identity
        # With XLA each sequence length compiles on first use; warm them all so no request waits for a compile.
        for length in buckets.seq_lengths if xla else buckets.seq_lengths[:1]:
            self._scores([np.ones(length, dtype=np.int32)])

    def predict(self, texts: list[str]) -> dict[str, Any]:
        tokenized = self._tokenizer(texts)
        probabilities = self._scores([t.ids for t in tokenized])
        truncated = [i for i, t in enumerate(tokenized) if t.truncated]
        return response_body(
            Classified(DEFAULT_HEAD, probabilities, self._labels, self._version, self._identity, truncated)
        )

    def _scores(self, ids: list[npt.NDArray[np.int32]]) -> npt.NDArray[np.float32]:
        embeddings = np.stack([e.sentence for e in self._encoder(ids)])
        outputs = self._probabilities(embeddings=tf.constant(embeddings))
        return np.asarray(outputs["probabilities"].numpy(), dtype=np.float32)


def create_app(encoder_dir: Path, head_dir: Path, *, xla: bool) -> FastAPI:
    # One thread: the encoder is not thread-safe, and this keeps the event loop free while it runs.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        load = partial(Monolith, encoder_dir, head_dir, xla=xla)
        app.state.model = await asyncio.get_running_loop().run_in_executor(executor, load)
        yield
        executor.shutdown(wait=True)

    app = FastAPI(title="Monolith classifier", lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/classify")
    async def classify(body: ClassifyRequest) -> Response:
        if (body.text is None) == (body.texts is None):
            raise HTTPException(422, "send exactly one of `text` (a string) and `texts` (a list)")
        texts = [body.text] if body.text is not None else body.texts or []
        model: Monolith = app.state.model
        answer = await asyncio.get_running_loop().run_in_executor(executor, model.predict, texts)
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--encoder", type=Path, required=True, help="exported encoder directory")
    parser.add_argument("--head", type=Path, required=True, help="one head version, e.g. build/heads/sentiment/1")
    parser.add_argument("--xla", action="store_true", help="XLA-compile the encoder, as the embedding service does")
    args = parser.parse_args()
    app = create_app(args.encoder, args.head, xla=args.xla)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
