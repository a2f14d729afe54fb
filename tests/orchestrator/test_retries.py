"""Connection retries through the real clients: a hop with nothing listening is tried 1 +
ORCHESTRATOR_CONNECT_RETRIES times (as orchestrator_hop_retries_total counts) by the readiness monitor's
first check; the hop then counts as down, and a /classify tries it once, without retries, and is a 503
naming the hop. The retry counts differ from the default (2), so a setting that is silently dropped fails
one of them. (That a head down costs no embedding: tests/orchestrator/test_routing.py.)"""

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


def assert_retried(server: Server, log: Path, hop: str, connect_retries: int, code: str) -> None:
    """The first check's calls to `hop` (one per shipped head, at once, for the head) retried
    `connect_retries` times each (none of the other hop's); then one /classify: a 503 with `code`, with
    no retry of a hop down."""
    other = "head" if hop == "embedding" else "embedding"
    checked = connect_retries * (len(stack_services.HEADS) if hop == "head" else 1)
    assert (retries(server.url, hop), retries(server.url, other)) == (checked, 0)
    assert f"the {hop} hop at " in log.read_text() and "is down: calls try once" in log.read_text()
    response = httpx.post(f"{server.url}/classify", json={"text": "nobody will read this"}, timeout=60)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert (retries(server.url, hop), retries(server.url, other)) == (checked, 0)


@pytest.mark.parametrize("connect_retries", RETRIES)
def test_an_unreachable_embedding_service_is_retried_as_configured(
    head_server: HeadServer, tmp_path: Path, connect_retries: int
) -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"
    log = tmp_path / "orchestrator.log"
    with orchestrator_over(
        log,
        dead,
        port(head_server.grpc_target),
        port(head_server.rest_url),
        connect_retries=str(connect_retries),
        retry_backoff_ms="1",  # pauses far inside the hop's budget: no retry is skipped for the deadline
    ) as server:
        assert "embedding service" in httpx.get(f"{server.url}/readyz").json()["error"]["message"]
        assert_retried(server, log, "embedding", connect_retries, "embedding_unavailable")


@pytest.mark.parametrize("connect_retries", RETRIES)
@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_an_unreachable_head_is_retried_as_configured(
    embedding_server: Server, tmp_path: Path, protocol: str, connect_retries: int
) -> None:
    dead = free_port()
    log = tmp_path / "orchestrator.log"
    with orchestrator_over(
        log,
        embedding_server.url,
        dead,
        dead,
        head_protocol=protocol,
        connect_retries=str(connect_retries),
        retry_backoff_ms="1",
    ) as server:
        assert "the head" in httpx.get(f"{server.url}/readyz").json()["error"]["message"]
        assert_retried(server, log, "head", connect_retries, "head_unavailable")
