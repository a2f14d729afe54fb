"""The head clients while a head stops gracefully (SIGTERM, as in every rolling update). Over gRPC the calls
that arrive after the stop began are CANCELLED; over REST they find the port closed (or an idle keep-alive
connection closed under them). Either way, whatever the protocol, the client must report them as the head
being unavailable (503, and retry them), never as a bad answer (502)."""

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import numpy as np
import pytest
import uvicorn

from orchestrator.clients.head_grpc import HeadGrpcClient
from orchestrator.clients.head_rest import HeadRestClient
from orchestrator.settings import OrchestratorSettings
from service_common.deadline import Deadline
from service_common.errors import ServiceError
from stack.procs import LOOPBACK, free_port
from tests.conftest import HeadServer, running_head

pytestmark = pytest.mark.slow

CLIENTS = 16
HEAD = "sentiment"  # the one model the test's head serves
SIGTERM_AFTER_S = 1.0
AFTER_EXIT_S = 0.3  # calls keep coming this long after the head has exited: those can only fail
LONGEST_S = 20.0  # a head that never exits fails the test rather than hanging it


def _settings(client_class: type[HeadGrpcClient | HeadRestClient], head: HeadServer) -> OrchestratorSettings:
    if client_class is HeadRestClient:
        return OrchestratorSettings(head_rest_url=head.rest_url, head_protocol="rest", connect_retries=0)
    return OrchestratorSettings(head_grpc_target=head.grpc_target, head_protocol="grpc", connect_retries=0)


@pytest.mark.parametrize("client_class", [HeadGrpcClient, HeadRestClient])
async def test_calls_during_a_graceful_stop_are_answered_or_503_naming_the_head(
    client_class: type[HeadGrpcClient | HeadRestClient], default_head: Path, tmp_path: Path
) -> None:
    (tmp_path / "heads" / HEAD).mkdir(parents=True)
    (tmp_path / "heads" / HEAD / "1").symlink_to(default_head / "1")
    outcomes: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    with running_head(tmp_path / "heads", tmp_path / "head.log", heads=[HEAD]) as head:
        started = time.monotonic()
        exited_at: list[float] = []

        def done() -> bool:
            if not exited_at and head.process.poll() is not None:
                exited_at.append(time.monotonic())
            now = time.monotonic()
            return now - started > LONGEST_S or bool(exited_at and now - exited_at[0] > AFTER_EXIT_S)

        async with client_class(_settings(client_class, head)) as client:

            async def loop() -> None:
                while not done():
                    try:
                        await client.predict(HEAD, 1, np.zeros((1, 384), np.float32), Deadline(5.0))
                        outcomes["200"] += 1
                    except ServiceError as error:
                        outcomes[f"{error.status_code} {error.code}"] += 1
                        messages[f"{error.status_code} {error.code}: {error}"] += 1
                    await asyncio.sleep(0.002)

            async def terminate() -> None:
                await asyncio.sleep(SIGTERM_AFTER_S)
                head.process.send_signal(signal.SIGTERM)

            await asyncio.gather(terminate(), *(loop() for _ in range(CLIENTS)))
        assert exited_at, f"the head did not exit within {LONGEST_S}s of SIGTERM"
        assert head.process.wait(timeout=15) in (0, -signal.SIGTERM)
    print(f"\n{client_class.__name__}: {dict(outcomes)}; {dict(messages.most_common(5))}")
    # Answers before the SIGTERM; after the head has exited every call fails, so a 503 is certain too.
    assert outcomes["200"] > 0, outcomes
    assert outcomes["503 head_unavailable"] > 0, outcomes
    assert set(outcomes) == {"200", "503 head_unavailable"}, messages


class _NeverFinishes:
    """The stand-in's Runner with a model that runs longer than any grace: only its `run` is reached."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        from head_service.json_decode import InputSpec

        inputs = {"embeddings": InputSpec(np.dtype(np.float32), (None, 1))}
        signature = SimpleNamespace(inputs=inputs, proto=SimpleNamespace(method_name=""))
        self.manager = SimpleNamespace(resolve=lambda *_: SimpleNamespace(signature=lambda _: signature))
        self.metrics = SimpleNamespace(count_request=lambda *_: None, observe_request=lambda *_: None)

    async def run(self, *_: object) -> Any:
        self.running.set()
        await asyncio.Event().wait()


async def test_a_rest_call_outliving_the_grace_is_503_unavailable_as_over_grpc() -> None:
    """uvicorn cancels what still runs when its graceful stop times out, and would answer a bare text 500
    (which the orchestrator must, and does, report as a 502 model error). The stand-in answers what its gRPC
    port answers for such a call: UNAVAILABLE, as 503 with TF Serving's body, which is a retried 503."""
    from head_service.rest import STOPPED_MESSAGE, create_rest_app
    from head_service.runner import Runner
    from head_service.server import _RestServer

    runner = _NeverFinishes()
    port = free_port()
    app = create_rest_app(cast(Runner, runner), None, 30.0)
    config = uvicorn.Config(app, host=LOOPBACK, port=port, log_config=None, timeout_graceful_shutdown=1)
    server = _RestServer(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(1000):  # up to 10 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}") as client:
        body = {"inputs": {"embeddings": [[0.0]]}}
        call = asyncio.create_task(client.post("/v1/models/head:predict", json=body, timeout=10))
        await asyncio.wait_for(runner.running.wait(), 5)
        server.should_exit = True
        response = await asyncio.wait_for(call, 10)
    await asyncio.wait_for(serving, 10)
    assert response.status_code == 503, response.text
    assert json.loads(response.text) == {"error": STOPPED_MESSAGE}
    assert response.headers["content-type"] == "application/json"
