"""The encoder's own thread: encoder calls run one at a time, in order, off the event loop; and the test
gate that can hold them."""

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Protocol

from embedding_service.encoder import Embedding
from embedding_service.tokenizer import Ids


class RunBatch(Protocol):
    """An encoder call (embedding_service.encoder.Encoder), or a stand-in for the batcher's own tests."""

    def __call__(self, batch: list[Ids], *, token_vectors: bool = False) -> list[Embedding]: ...


_Call = tuple[Future[list[Embedding]], list[Ids], bool]


def gated(run_batch: RunBatch, gate: Path) -> RunBatch:
    """For tests only: each batch waits while the file `gate` exists, so a test can hold the encoder
    (fill the queue, pass a deadline, hang a shutdown) deterministically, however fast the hardware."""

    def run(batch: list[Ids], *, token_vectors: bool = False) -> list[Embedding]:
        while gate.exists():
            time.sleep(0.002)
        return run_batch(batch, token_vectors=token_vectors)

    return run


class EncoderThread:
    """One daemon thread that runs the encoder calls, one at a time, in order: a call that never returns
    cannot keep the process from exiting."""

    def __init__(self, run_batch: RunBatch) -> None:
        self._run_batch = run_batch
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="encoder", daemon=True)
        self._thread.start()

    def submit(self, batch: list[Ids], *, token_vectors: bool) -> "asyncio.Future[list[Embedding]]":
        future: Future[list[Embedding]] = Future()
        self._calls.put((future, batch, token_vectors))
        return asyncio.wrap_future(future)

    def close(self) -> None:
        """Ends the thread after the call it is running, if any; does not wait for it."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, batch, token_vectors = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._run_batch(batch, token_vectors=token_vectors))
                except BaseException as exc:
                    future.set_exception(exc)
