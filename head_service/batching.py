"""Server-side batching as TF Serving's `--enable_batching` does it: concurrent Predict calls on the same
signature are joined along dim 0, padded to an allowed batch size, run once and split again.

A batch closes when it is full or its oldest call has waited `batch_timeout_micros`, and runs when
one of `num_batch_threads` is free; calls that arrive meanwhile queue, so even a timeout of 0 (the
default) batches under load. Past `max_enqueued_batches` waiting batches, calls fail at once (503)."""

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf.message import Message

from head_service.errors import HeadError, invalid_argument
from head_service.servable import Arrays, Signature

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass
class _Task:
    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class _Queue:
    signature: Signature
    output_filter: list[str]
    tasks: deque[_Task] = field(default_factory=deque)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


def _value(params: Message, name: str, default: int) -> int:
    return int(getattr(params, name).value) if params.HasField(name) else default


class BatchScheduler:
    """Defaults are TF Serving's: max_batch_size 1000, batch_timeout 0, 10 enqueued batches, a thread per CPU."""

    def __init__(self, params: Message, executor: Executor, cpus: int, on_run: Callable[[], None]) -> None:
        self.max_batch_size = _value(params, "max_batch_size", 1000)
        self.timeout_s = _value(params, "batch_timeout_micros", 0) / 1e6
        self.max_enqueued_batches = _value(params, "max_enqueued_batches", 10)
        self.allowed = sorted(getattr(params, "allowed_batch_sizes"))  # noqa: B009 - dynamic message class
        self._threads = _value(params, "num_batch_threads", cpus)
        self._busy = 0
        self._executor = executor
        self._on_run = on_run
        self._queues: dict[tuple[object, ...], _Queue] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, signature: Signature, inputs: Arrays, output_filter: list[str]) -> Arrays:
        rows = {value.shape[0] if value.ndim else -1 for value in inputs.values()}
        if len(rows) != 1 or -1 in rows:  # nothing to batch along
            return await self._call(signature, inputs, output_filter)
        (size,) = rows
        if size > self.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {self.max_batch_size}")
        key = (
            id(signature),
            tuple(output_filter),
            tuple((name, value.dtype.str, value.shape[1:]) for name, value in sorted(inputs.items())),
        )
        queue = self._queues.setdefault(key, _Queue(signature, output_filter))
        if math.ceil((queue.rows + size) / self.max_batch_size) > self.max_enqueued_batches:
            raise HeadError(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL)
        task = _Task(inputs, size, asyncio.get_running_loop().create_future())
        queue.tasks.append(task)
        queue.rows += size
        self._dispatch()
        return await task.future

    def _ready(self, queue: _Queue) -> bool:
        return queue.rows >= self.max_batch_size or time.monotonic() - queue.tasks[0].enqueued >= self.timeout_s

    def _dispatch(self) -> None:
        """Starts batches on free threads; a queue not yet ready gets a timer that calls back here."""
        loop = asyncio.get_running_loop()
        for key, queue in list(self._queues.items()):
            while queue.tasks and self._busy < self._threads and self._ready(queue):
                self._start(queue)
            if not queue.tasks:
                del self._queues[key]
            elif queue.timer is None and not self._ready(queue):
                wait = queue.tasks[0].enqueued + self.timeout_s - time.monotonic()
                queue.timer = loop.call_later(max(wait, 0), self._on_timer, queue)

    def _on_timer(self, queue: _Queue) -> None:
        queue.timer = None
        self._dispatch()

    def _start(self, queue: _Queue) -> None:
        batch, rows = [], 0
        while queue.tasks and rows + queue.tasks[0].rows <= self.max_batch_size:
            task = queue.tasks.popleft()
            rows += task.rows
            if not task.future.done():  # its caller has gone: nothing to compute
                batch.append(task)
        queue.rows -= rows
        if not batch:
            return
        self._busy += 1
        running = asyncio.create_task(self._run_batch(queue.signature, batch, queue.output_filter))
        self._running.add(running)
        running.add_done_callback(self._finished)

    def _finished(self, running: asyncio.Task[None]) -> None:
        self._running.discard(running)
        self._busy -= 1
        self._dispatch()

    async def _run_batch(self, signature: Signature, batch: list[_Task], output_filter: list[str]) -> None:
        rows = sum(task.rows for task in batch)
        padded = next((size for size in self.allowed if size >= rows), rows)
        joined = {
            name: np.concatenate([t.inputs[name] for t in batch] + [batch[-1].inputs[name][-1:]] * (padded - rows))
            for name in batch[0].inputs
        }
        self._on_run()
        try:
            outputs = await self._call(signature, joined, output_filter)
            misaligned = [name for name, value in outputs.items() if value.ndim == 0 or value.shape[0] != padded]
            if misaligned:
                raise invalid_argument(
                    f"Batched output tensor's 0th dimension does not equal the number of rows in the batch: "
                    f"{', '.join(misaligned)}"
                )
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

    async def _call(self, signature: Signature, inputs: Arrays, output_filter: list[str]) -> Arrays:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, signature.run, inputs, output_filter)
