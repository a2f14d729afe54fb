"""The head client while a head stops gracefully (SIGTERM, as in every rolling update): gRPC cancels the
calls that arrive after the stop began, and the client must report those as the head being unavailable
(and retry them), never as a malformed answer (502)."""

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from orchestrator.clients.head_grpc import HeadGrpcClient
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import Deadline
from service_common.errors import ServiceError
from tests.conftest import running_head

pytestmark = pytest.mark.slow

CLIENTS = 16


async def test_calls_during_a_graceful_stop_are_answered_or_503_naming_the_head(
    default_head: Path, tmp_path: Path
) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "1").symlink_to(default_head / "1")
    outcomes: Counter[str] = Counter()
    with running_head(tmp_path / "base", tmp_path / "head.log") as head:
        settings = OrchestratorSettings(head_grpc_target=head.grpc_target, connect_retries=0)
        stop_at = time.monotonic() + 3.0
        async with HeadGrpcClient(settings) as client:

            async def loop() -> None:
                while time.monotonic() < stop_at:
                    try:
                        await client.predict(np.zeros((1, 384), np.float32), Deadline(5.0))
                        outcomes["200"] += 1
                    except ServiceError as error:
                        outcomes[f"{error.status_code} {error.code}"] += 1
                    await asyncio.sleep(0.002)

            async def terminate() -> None:
                await asyncio.sleep(1.0)
                head.process.send_signal(signal.SIGTERM)

            await asyncio.gather(terminate(), *(loop() for _ in range(CLIENTS)))
        assert head.process.wait(timeout=15) in (0, -signal.SIGTERM)
    assert outcomes["200"] > 0
    assert outcomes["503 head_unavailable"] > 0, outcomes
    assert set(outcomes) == {"200", "503 head_unavailable"}, outcomes
