"""Connection retries through the real clients: a hop with nothing listening is tried exactly
1 + ORCHESTRATOR_CONNECT_RETRIES times per call, as orchestrator_hop_retries_total counts, and then the
request is a 503 naming the hop. Both retry counts differ from the default (2), so a setting that is
silently dropped fails one of them."""

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stack import services as stack_services
from stack.procs import LOOPBACK, free_port
from tests.conftest import HeadServer
from tests.servers import Server, running

pytestmark = pytest.mark.slow

RETRIES = [0, 3]
NOT_CHECKED_YET = "have not been checked yet"  # the readiness monitor's reason before its first check


def retries(url: str, hop: str) -> float:
    """orchestrator_hop_retries_total{hop=`hop`}; 0 before its first retry (no sample yet)."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == "orchestrator_hop_retries_total" and s.labels.get("hop") == hop
    )


@contextmanager
def orchestrator_over(
    log: Path, embedding_url: str, head_grpc_port: int, head_rest_port: int, **settings: str
) -> Iterator[Server]:
    """An orchestrator whose downstreams may be dead, so it never gets ready: waited on at /healthz, then
    until its readiness monitor has made its first check. That check calls the hops too (and counts its
    own retries); its interval is an hour, so no later check falls within a test's measurement."""
    service = stack_services.orchestrator(
        free_port(), embedding_url, head_grpc_port, head_rest_port, ready_interval_s="3600", **settings
    )
    with running(dataclasses.replace(service, ready_path="/healthz"), log, ready_timeout_s=60) as server:
        deadline = time.monotonic() + 30
        while NOT_CHECKED_YET in (reason := httpx.get(f"{server.url}/readyz").text):
            assert time.monotonic() < deadline, f"the readiness monitor never checked: {reason}"
            time.sleep(0.05)
        yield server


def port(url_or_target: str) -> int:
    return int(url_or_target.rsplit(":", 1)[1])


def assert_retried(server: Server, hop: str, connect_retries: int, code: str) -> None:
    """One /classify: a 503 with `code`, after exactly `connect_retries` retries of `hop` (none of the other)."""
    other = "head" if hop == "embedding" else "embedding"
    before, other_before = retries(server.url, hop), retries(server.url, other)
    response = httpx.post(f"{server.url}/classify", json={"text": "nobody will read this"}, timeout=60)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert retries(server.url, hop) - before == connect_retries
    assert retries(server.url, other) - other_before == 0


@pytest.mark.parametrize("connect_retries", RETRIES)
def test_an_unreachable_embedding_service_is_retried_as_configured(
    head_server: HeadServer, tmp_path: Path, connect_retries: int
) -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"
    with orchestrator_over(
        tmp_path / "orchestrator.log",
        dead,
        port(head_server.grpc_target),
        port(head_server.rest_url),
        connect_retries=str(connect_retries),
        retry_backoff_ms="1",  # pauses far inside the hop's budget: no retry is skipped for the deadline
    ) as server:
        assert "embedding service" in httpx.get(f"{server.url}/readyz").json()["error"]["message"]
        assert_retried(server, "embedding", connect_retries, "embedding_unavailable")


@pytest.mark.parametrize("connect_retries", RETRIES)
@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_an_unreachable_head_is_retried_as_configured(
    embedding_server: Server, tmp_path: Path, protocol: str, connect_retries: int
) -> None:
    dead = free_port()
    with orchestrator_over(
        tmp_path / "orchestrator.log",
        embedding_server.url,
        dead,
        dead,
        head_protocol=protocol,
        connect_retries=str(connect_retries),
        retry_backoff_ms="1",
    ) as server:
        assert "the head" in httpx.get(f"{server.url}/readyz").json()["error"]["message"]
        assert_retried(server, "head", connect_retries, "head_unavailable")
