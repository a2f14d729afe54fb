"""A real Prometheus, configured as the compose `monitoring` profile configures it (deploy/monitoring/), scraping
the session's running services: every dashboard panel's query, every alert's and every autoscaling query's
series exist, and the autoscaler's queue signal rises under a burst and falls back to 0 after it (TEI's
queue metric did not rise under load, so nobody could scale on it)."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.conftest import GatedServer, Pipeline
from tests.deploy import monitoring_checks
from tests.deploy.checks import Obj
from tests.deploy.monitoring_checks import PROMETHEUS_CONFIG, RULES, SCALED_OBJECT
from tests.deploy.prometheus import api, query, running_prometheus
from tests.deploy.promql import selectors

pytestmark = pytest.mark.slow

NAMESPACE = "split-embedding"
SCRAPE = "500ms"  # short, so that the burst's seconds hold several scrapes
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval stands for here
# Counters of events a healthy stack never meets (the head overloaded, a head refused for its encoder, a lane
# past its quota, a failed hop call): their selectors may have no series, their families must be exported.
EVENT_ONLY = frozenset(
    {
        ':tensorflow:serving:request_count{status=~"RESOURCE_EXHAUSTED|UNAVAILABLE"}',
        "orchestrator_encoder_refusals_total",
        'embedding_lane_refusals_total{reason="quota"}',
        "orchestrator_hop_errors_total",
    }
)
BOUND = 256  # the constrained server's max_queue_texts
BURST = 40  # requests of 8 texts: more than the bound


def address(url: str) -> str:
    return urlsplit(url).netloc


def prometheus_config(targets: dict[str, list[tuple[str, str]]]) -> Obj:
    """deploy/monitoring/prometheus.yml with each job's targets replaced by (address, Deployment) pairs, labelled
    as components/monitoring's PodMonitor labels pods (namespace, deployment), and scraping every SCRAPE."""
    config: Obj = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE, "evaluation_interval": SCRAPE}
    config["rule_files"] = [str(RULES)]
    for job in config["scrape_configs"]:
        job["static_configs"] = [
            {"targets": [target], "labels": {"namespace": NAMESPACE, "deployment": deployment}}
            for target, deployment in targets[job["job_name"]]
        ]
    return config


@dataclass(frozen=True)
class Burst:
    peak: float  # the highest the autoscaler's admitted-texts query read over the burst
    refused: int  # requests answered 429
    settled_s: float  # from the burst's end until the query read 0


def scaled_query(name: str) -> str:
    scaled = yaml.safe_load(SCALED_OBJECT.read_text())
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["name"] == name]
    query_text: str = trigger["metadata"]["query"]
    return query_text


def value(url: str, expr: str) -> float:
    (series,) = query(url, expr)
    return float(series["value"][1])


def wait_for(url: str, expr: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while not query(url, expr):
        assert time.monotonic() < deadline, f"{expr} has no series after {within_s}s"
        time.sleep(0.2)


def burst(url: str, server: GatedServer) -> Burst:
    """BURST requests of 8 distinct texts at once while the encoder is held: BOUND texts are admitted, the rest
    refused; held through two scrapes, then let go within the server's 2 s deadline."""
    admitted = scaled_query("admitted-texts")
    assert value(url, admitted) == 0, "the queue is empty before the burst"

    def post(i: int) -> int:
        texts = [f"burst {i} text {j}: the parcel came late." for j in range(8)]
        return httpx.post(f"{server.url}/v1/embeddings", json={"input": texts}, timeout=30).status_code

    with ThreadPoolExecutor(BURST) as pool:
        with server.hold():
            statuses = pool.map(post, range(BURST))
            server.wait_for_metric("embedding_admitted_texts", BOUND, within_s=5)
            time.sleep(1.0)
        codes = list(statuses)
    ended = time.monotonic()
    while value(url, admitted) != 0:
        assert time.monotonic() - ended < 15, f"{admitted} did not return to 0"
        time.sleep(0.2)
    settled_s = time.monotonic() - ended
    peak = value(url, f"max_over_time(({admitted})[1m:])")
    return Burst(peak, codes.count(429), settled_s)


@pytest.fixture(scope="module")
def prometheus(
    pipeline: Pipeline, constrained_server: GatedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    targets = {
        "embedding": [(address(pipeline.embedding.url), "embedding"), (address(constrained_server.url), "embedding")],
        "orchestrator": [(address(pipeline.orchestrator.url), "orchestrator")],
        "head": [(address(pipeline.head.rest_url), "head")],
    }
    with running_prometheus(prometheus_config(targets), tmp_path_factory.mktemp("prometheus")) as url:
        yield url


@pytest.fixture(scope="module")
def exercised(prometheus: str, pipeline: Pipeline, constrained_server: GatedServer) -> Burst:
    """Traffic through every path the panels show: /classify with one head and with both, embeddings (twice
    the same text: a cache hit), a vector the head refuses for its size; then the burst, once every target
    has been scraped."""
    with httpx.Client(timeout=60) as http:
        for body in ({"text": "The room was spotless."}, {"texts": ["Late again."], "heads": ["sentiment", "topic"]}):
            http.post(f"{pipeline.orchestrator.url}/classify", json=body).raise_for_status()
        for _ in range(2):
            http.post(f"{pipeline.embedding.url}/v1/embeddings", json={"input": "a repeated text"}).raise_for_status()
        refused = http.post(f"{pipeline.head.rest_url}/v1/models/sentiment:predict", json={"instances": [[0.0, 1.0]]})
        assert refused.status_code == 400, refused.text
    wait_for(prometheus, "count(up == 1) == 4")
    result = burst(prometheus, constrained_server)
    wait_for(prometheus, ':tensorflow:serving:request_count{status="INVALID_ARGUMENT"}')
    return result


@pytest.fixture(scope="module")
def exported(prometheus: str, exercised: Burst) -> set[str]:
    """The metric families the targets export, series or not (from their `# TYPE` lines)."""
    return set(api(prometheus, "metadata"))


def missing(url: str, expr: str, exported: set[str]) -> list[str]:
    """The selectors of `expr` with no series; one of EVENT_ONLY only if its family is not even exported."""
    return [
        selector
        for selector in selectors(expr)
        if not query(url, selector) and not (selector in EVENT_ONLY and selector.split("{")[0] in exported)
    ]


def test_the_queue_signal_rises_under_a_burst_and_falls_to_zero_after(exercised: Burst) -> None:
    assert exercised.peak >= BOUND, "the autoscaler saw the held texts"
    assert exercised.refused == BURST - BOUND // 8, "the burst past the bound was refused"
    assert exercised.settled_s < 10


def test_every_autoscaling_query_returns_series(prometheus: str, exported: set[str]) -> None:
    scaled = yaml.safe_load(SCALED_OBJECT.read_text())
    for expr in monitoring_checks.scaler_queries(scaled):
        assert query(prometheus, expr), expr
        assert missing(prometheus, expr, exported) == [], expr
    assert value(prometheus, scaled_query("refused-texts")) > 0, "the burst's refusals are counted"


def test_every_dashboard_panel_query_returns_series(prometheus: str, exported: set[str]) -> None:
    empty = []
    for title, expr in monitoring_checks.panel_queries():
        evaluated = expr.replace("$__rate_interval", RATE_INTERVAL)
        if not query(prometheus, evaluated) and not set(selectors(expr)) & EVENT_ONLY:
            empty.append((title, expr))
        assert missing(prometheus, expr, exported) == [], (title, expr)
    assert empty == []


def test_every_alert_refers_to_series_and_evaluates(prometheus: str, exported: set[str]) -> None:
    rules = {rule["name"]: rule for group in api(prometheus, "rules")["groups"] for rule in group["rules"]}
    for alert in monitoring_checks.alerts():
        assert rules[alert["alert"]]["health"] == "ok", rules[alert["alert"]].get("lastError")
        assert missing(prometheus, alert["expr"], exported) == [], alert["alert"]


def test_the_readiness_alerts_hold_still_on_the_ready_stack(prometheus: str, exercised: Burst) -> None:
    """Their conditions read real series: both embedding servers are up with their encoder loaded, the head up
    and the orchestrator feeding its heads, so neither alert is even pending."""
    raised = {a["labels"]["alertname"] for a in api(prometheus, "alerts")["alerts"]}
    assert raised.isdisjoint({"EmbeddingServiceNotReady", "HeadNotReady"})
    assert len(query(prometheus, 'up{job="embedding"} == 1 and on (instance) embedding_encoder_info')) == 2


def test_heads_and_their_versions_are_listed(prometheus: str, exercised: Burst, pipeline: Pipeline) -> None:
    (title, expr) = next((t, e) for t, e in monitoring_checks.panel_queries() if t == "Head versions loaded")
    listed = {(s["metric"]["head"], s["metric"]["version"]) for s in query(prometheus, expr)}
    served = {(path.name, "1") for path in Path(pipeline.head.heads_root).iterdir()}
    assert served <= listed, title
