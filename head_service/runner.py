"""The core both front ends share: resolve a servable and signature, run it off the event loop, observe it."""

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

from google.protobuf.message import Message

from head_service.batching import BatchScheduler
from head_service.manager import ModelManager
from head_service.monitoring import Metrics
from head_service.servable import Arrays, Servable, Signature


class Runner:
    def __init__(self, manager: ModelManager, batching: Message | None, metrics: Metrics) -> None:
        self.manager = manager
        self.metrics = metrics
        cpus = os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(max_workers=cpus, thread_name_prefix="head")
        self._batcher = (
            None if batching is None else BatchScheduler(batching, self._executor, cpus, metrics.count_batch_run)
        )

    async def run(
        self, servable: Servable, signature: Signature, inputs: Arrays, output_filter: list[str], api: str
    ) -> Arrays:
        started = time.perf_counter()
        if self._batcher is not None:
            outputs = await self._batcher.run(signature, inputs, output_filter)
        else:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, signature.run, inputs, output_filter)
        self.metrics.observe_runtime(servable.name, api, time.perf_counter() - started)
        return outputs

    def close(self) -> None:
        self._executor.shutdown(wait=True)
