"""Server-side batching as TF Serving's `--enable_batching` does it: concurrent Predict calls on the same
signature are joined along dim 0, padded to an allowed batch size, run once and split again."""

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf.message import Message

from head_service.errors import HeadError, invalid_argument
from head_service.servable import Signature

Arrays = dict[str, np.ndarray]
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass
class _Task:
    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays]


@dataclass
class _Queue:
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0
    flusher: asyncio.TimerHandle | None = None


def _value(params: Message, name: str, default: int) -> int:
    return int(getattr(params, name).value) if params.HasField(name) else default


class BatchScheduler:
    """Defaults are TF Serving's: max_batch_size 1000, batch_timeout 0, 10 enqueued batches, a thread per CPU."""

    def __init__(self, params: Message, executor: Executor, cpus: int, on_run: Callable[[], None]) -> None:
        self.max_batch_size = _value(params, "max_batch_size", 1000)
        self.timeout_s = _value(params, "batch_timeout_micros", 0) / 1e6
        self.max_enqueued_batches = _value(params, "max_enqueued_batches", 10)
        self.allowed = sorted(getattr(params, "allowed_batch_sizes"))  # noqa: B009 - dynamic message class
        self._threads = asyncio.Semaphore(_value(params, "num_batch_threads", cpus))
        self._executor = executor
        self._on_run = on_run
        self._queues: dict[tuple[object, ...], _Queue] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, signature: Signature, inputs: Arrays, output_filter: list[str]) -> Arrays:
        rows = {value.shape[0] if value.ndim else -1 for value in inputs.values()}
        if len(rows) != 1 or -1 in rows:  # nothing to batch along
            return await self._call(signature.run, inputs, output_filter)
        (size,) = rows
        if size > self.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {self.max_batch_size}")
        key = (
            signature.key,
            id(signature),
            tuple(output_filter),
            tuple((name, value.dtype.str, value.shape[1:]) for name, value in sorted(inputs.items())),
        )
        queue = self._queues.setdefault(key, _Queue())
        if math.ceil((queue.rows + size) / self.max_batch_size) > self.max_enqueued_batches:
            raise HeadError(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL)
        task = _Task(inputs, size, asyncio.get_running_loop().create_future())
        queue.tasks.append(task)
        queue.rows += size
        if queue.rows >= self.max_batch_size or self.timeout_s == 0:
            self._flush(key, signature, output_filter)
        elif queue.flusher is None:
            queue.flusher = asyncio.get_running_loop().call_later(
                self.timeout_s, self._flush, key, signature, output_filter
            )
        return await task.future

    def _flush(self, key: tuple[object, ...], signature: Signature, output_filter: list[str]) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.flusher is not None:
            queue.flusher.cancel()
        while queue.tasks:
            batch, rows = [], 0
            while queue.tasks and rows + queue.tasks[0].rows <= self.max_batch_size:
                rows += queue.tasks[0].rows
                batch.append(queue.tasks.pop(0))
            running = asyncio.create_task(self._run_batch(signature, batch, rows, output_filter))
            self._running.add(running)
            running.add_done_callback(self._running.discard)

    async def _run_batch(self, signature: Signature, batch: list[_Task], rows: int, output_filter: list[str]) -> None:
        padded = next((size for size in self.allowed if size >= rows), rows)
        joined = {
            name: np.concatenate([t.inputs[name] for t in batch] + [batch[-1].inputs[name][-1:]] * (padded - rows))
            for name in batch[0].inputs
        }
        self._on_run()
        try:
            outputs = await self._call(signature.run, joined, output_filter)
        except Exception as exc:
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(exc)
            return
        start = 0
        for task in batch:
            if not task.future.done():
                task.future.set_result({k: v[start : start + task.rows] for k, v in outputs.items()})
            start += task.rows

    async def _call(
        self, run: Callable[[Arrays, list[str]], Arrays], inputs: Arrays, output_filter: list[str]
    ) -> Arrays:
        async with self._threads:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run, inputs, output_filter)
